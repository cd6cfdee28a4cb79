//! Debug fields from provider plugins on `GET /api/v2/executions/{id}`: the
//! first-party `dim` and `slurm` components give exactly the fields their
//! case tables (`plugins/{dim,slurm}/tests/cases.json`) specify, through the
//! host, and the same tables pass natively through the SDK; providers that
//! trap, hang or return garbage leave `debug_errors` entries and the answer
//! still comes within the budget, never as a `500`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn table(plugin: &str) -> Vec<Value> {
    let path = plugins::plugins_dir().join(plugin).join("tests/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<Value>(&text)
        .expect("cases.json")
        .as_array()
        .expect("an array of cases")
        .clone()
}

async fn serving(server: &TestServer, names: &[&str]) {
    for name in names {
        server
            .wait_plugin(name, WAIT, "loaded", |p| p["state"] == "loaded")
            .await;
    }
}

async fn create(server: &TestServer, body: Value) -> String {
    let (status, json) = status_json(server.post_json("/api/v2/executions", &body).await).await;
    assert_eq!(status, 201, "{json:#}");
    json["id"].as_str().expect("id").to_string()
}

async fn read(server: &TestServer, id: &str) -> Value {
    let (status, json) = status_json(server.get(&format!("/api/v2/executions/{id}")).await).await;
    assert_eq!(status, 200, "{json:#}");
    json
}

async fn dim_and_slurm_fields_are_exactly_as_specified_through_the_host(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    dir.install("dim", "dim");
    dir.install("slurm", "slurm");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    serving(&server, &["dim", "slurm"]).await;
    for plugin in ["dim", "slurm"] {
        let cases = table(plugin);
        for case in &cases {
            let id = create(
                &server,
                json!({"backend": plugin, "scheduler_ids": case["scheduler_ids"], "profile": case["profile"]}),
            )
            .await;
            let got = read(&server, &id).await;
            assert_eq!(
                got["debug_fields"], case["expect"],
                "{plugin}: {}",
                case["name"]
            );
            assert_eq!(got["debug_errors"], json!([]), "{plugin}: {}", case["name"]);
        }
    }
    // A provider only serves its own backend; others get nothing.
    let other = create(
        &server,
        json!({"backend": "k8s", "scheduler_ids": {"session_id": "s", "job_id": "a:b|/c"}, "profile": {"host": "h"}}),
    )
    .await;
    assert_eq!(read(&server, &other).await["debug_fields"], json!({}));
    // Fields follow updates of the profile and scheduler ids.
    let id = create(
        &server,
        json!({"backend": "dim", "profile": {"host": "h1"}}),
    )
    .await;
    assert_eq!(read(&server, &id).await["debug_fields"], json!({}));
    let (status, _) = status_json(
        server
            .client()
            .patch(server.url(&format!("/api/v2/executions/{id}")))
            .json(&json!({"scheduler_ids": {"session_id": "late"}, "profile": {"port": 443, "https": true}}))
            .send()
            .await
            .expect("PATCH"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        read(&server, &id).await["debug_fields"]["dim_session_status_url"],
        "https://h1/api/sessions/late/status"
    );
    // Lists ask the providers only when told to.
    let (_, page) = status_json(server.get("/api/v2/executions?backend=dim&limit=1").await).await;
    assert!(page["executions"][0].get("debug_fields").is_none());
    let (_, page) = status_json(
        server
            .get("/api/v2/executions?backend=dim&limit=1&debug_fields=true")
            .await,
    )
    .await;
    assert_eq!(
        page["executions"][0]["debug_fields"],
        table("dim")[0]["expect"]
    );
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple")
}

#[test]
fn the_dim_and_slurm_tables_pass_natively_through_the_sdk() {
    // The plugin crates' own tests: the same case tables, against the SDK's
    // `DebugFields` trait, compiled for this machine instead of wasm.
    let root = plugins::plugins_dir();
    let target_dir = Path::new(&root)
        .parent()
        .expect("repo")
        .join("target")
        .join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--locked", "-p", "dim", "-p", "slurm", "--target"])
        .arg(host_triple())
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root)
        .output()
        .expect("run cargo test in plugins/");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "native plugin tests failed:\n{text}");
    for test in [
        "every_case_of_the_table_gives_exactly_its_fields",
        "a_port_that_is_not_a_port_leaves_the_fields_out",
        "only_the_documented_job_id_form_yields_a_session_dir",
    ] {
        assert!(
            text.contains(&format!("{test} ... ok")),
            "{test} did not run:\n{text}"
        );
    }
}

async fn hostile_providers_leave_errors_and_the_answer_comes_within_the_budget(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    dir.install("dim", "dim");
    dir.install("trap", "trap-debug-fields");
    dir.install_with_manifest(
        "hang",
        "hang-debug-fields",
        "[capabilities]\ncall_timeout_ms = 3000\n",
    );
    dir.install("garbage", "garbage-debug-fields");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .args(["--debug-fields-budget", "300ms"])
        .start()
        .await;
    serving(&server, &["dim", "trap", "hang", "garbage"]).await;
    let id = create(
        &server,
        json!({"backend": "dim", "scheduler_ids": {"session_id": "s1"}, "profile": {"manager_url": "http://dim:8001"}}),
    )
    .await;
    for round in 0..6 {
        let started = Instant::now();
        let got = read(&server, &id).await;
        let took = started.elapsed();
        // The hanging provider runs for 3 s; the answer waits 300 ms at most
        // (the margin is for a loaded test machine, not the budget).
        assert!(
            took < Duration::from_millis(2000),
            "round {round}: {took:?}"
        );
        assert_eq!(
            got["debug_fields"],
            json!({"dim_graph_status_url": "http://dim:8001/api/sessions/s1/graph/status",
                   "dim_session_status_url": "http://dim:8001/api/sessions/s1/status"}),
            "round {round}: the healthy provider still answers"
        );
        let errors = got["debug_errors"].as_array().expect("debug_errors");
        let reason = |plugin: &str| -> String {
            errors
                .iter()
                .find(|e| e["plugin"] == plugin)
                .and_then(|e| e["reason"].as_str())
                .unwrap_or_else(|| {
                    panic!("round {round}: no debug_errors entry for {plugin}: {got:#}")
                })
                .to_string()
        };
        let hang = reason("hang");
        assert!(
            hang.contains("budget")
                || hang.contains("busy")
                || hang.contains("time limit")
                || hang.contains("restarting"),
            "round {round}: {hang}"
        );
        let trap = reason("trap");
        assert!(
            trap.contains("panic")
                || trap.contains("trap")
                || trap.contains("restarting")
                || trap.contains("quarantined")
                || trap.contains("unreachable"),
            "round {round}: {trap}"
        );
        assert!(
            reason("garbage").contains("invalid fields")
                || reason("garbage").contains("fields; at most"),
            "round {round}"
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        for e in errors {
            let r = e["reason"].as_str().expect("present");
            assert!(r.len() <= 1100 && !r.chars().any(char::is_control), "{r:?}");
        }
    }
    // Every kind of garbage is named; the reason from the plugin's own error is clipped.
    for (kind, needle) in [
        ("too_many", "10000 fields; at most 64"),
        ("huge", "1048576 bytes; at most 4096"),
        ("bad_name", "invalid field name `Not A Name`"),
        ("control", "holds control characters"),
        ("duplicate", "given twice"),
        ("error", "fields() returned an error: garbage"),
    ] {
        let id = create(
            &server,
            json!({"backend": "hostile", "attributes": {"garbage": kind}}),
        )
        .await;
        let got = read(&server, &id).await;
        assert_eq!(got["debug_fields"], json!({}), "{kind}");
        let reason = got["debug_errors"]
            .as_array()
            .expect("present")
            .iter()
            .find(|e| e["plugin"] == "garbage")
            .and_then(|e| e["reason"].as_str())
            .unwrap_or_else(|| panic!("{kind}: {got:#}"))
            .to_string();
        assert!(reason.contains(needle), "{kind}: {reason}");
    }
    // Concurrent reads while the hanging provider is stuck: all answered, none 500.
    let statuses = futures::future::join_all((0..20).map(|_| {
        let server = &server;
        let id = &id;
        async move {
            server
                .get(&format!("/api/v2/executions/{id}"))
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(server.get("/api/v2/health").await.status().is_success());
}

vigil_tests::backend_tests!(
    dim_and_slurm_fields_are_exactly_as_specified_through_the_host,
    hostile_providers_leave_errors_and_the_answer_comes_within_the_budget,
);
