//! NoETL dashboards scraping Vigil: every series carries `component_type`
//! beside `component`; `?component_name=` and `?runtime_id=` select one
//! component; text 0.0.4 and OpenMetrics give the same series names in both
//! counter-name modes; `promtool check metrics` has nothing to say. Over
//! SQLite and PostgreSQL.

use std::io::Write;
use std::process::{Command, Stdio};

use vigil_tests::noetl::*;
use vigil_tests::*;

/// `promtool check metrics` output (stdout and stderr) and whether it passed;
/// `None` when promtool is not installed (skipped loudly, or a failure
/// under VIGIL_TEST_REQUIRE_SERVICES=1).
fn promtool_lint(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) => {
            skip_or_fail(
                "promtool lint checks",
                "promtool is required but not installed",
            );
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

async fn scrape(server: &TestServer, query: &str, openmetrics: bool) -> (u16, String) {
    let mut req = server
        .client()
        .get(server.url(&format!("/api/metrics/prometheus{query}")));
    if openmetrics {
        req = req.header("accept", "application/openmetrics-text; version=1.0.0");
    }
    let resp = req.send().await.expect("scrape");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// The reported samples (not the host's own `vigil_*`), as `name{labels}`.
fn series_names(text: &str) -> Vec<String> {
    let mut v: Vec<String> = parse_exposition(text)
        .into_iter()
        .filter(|s| !s.name.starts_with("vigil_") && !s.name.ends_with("_created"))
        .map(|s| format!("{} {:?}", s.name, s.labels))
        .collect();
    v.sort();
    v
}

async fn report_noetl(server: &TestServer, pool: &str, srv: &str) -> i64 {
    let reg = worker_pool_registration(NoetlRelease::V0_2_0, pool, "cpu", None, None, "node-1");
    let (status, answer) =
        status_json(server.post_json("/api/worker/pool/register", &reg).await).await;
    assert_eq!(status, 200, "{answer}");
    server
        .report_ok(&worker_pool_report(
            NoetlRelease::V0_2_0,
            pool,
            "wid",
            "node-1",
        ))
        .await;
    server.report_ok(&server_report_v1(srv, "node-0")).await;
    // The seed's own example counter, a gauge without help text, and a
    // reported `component_type` label.
    server
        .report_ok(&report(
            srv,
            [
                counter("custom_work_items_processed", 150.0)
                    .label("worker_type", "batch_processor")
                    .help("Number of work items processed")
                    .unit("items"),
                gauge("custom_backlog", 4.0).label("component_type", "batch"),
            ],
        ))
        .await;
    answer["runtime_id"].as_i64().expect("runtime_id")
}

async fn noetl_series_carry_component_type_and_one_name_in_both_formats(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let (pool, srv) = (unique("worker-cpu"), unique("noetl-server"));
    let pool_id = report_noetl(&server, &pool, &srv).await;

    let (status, text) = scrape(&server, "", false).await;
    assert_eq!(status, 200);
    let (status, om) = scrape(&server, "", true).await;
    assert_eq!(status, 200);
    assert_eq!(
        series_names(&text),
        series_names(&om),
        "text and OpenMetrics export different series names"
    );
    let samples = parse_exposition(&text);
    let cpu = find_samples(
        &samples,
        "noetl_system_cpu_usage_percent",
        &[("component", &pool), ("component_type", "worker_pool")],
    );
    assert_eq!(cpu.len(), 1, "{text}");
    assert_eq!(cpu[0].label("worker_id"), Some("wid"));
    assert_eq!(
        find_samples(
            &samples,
            "noetl_server_active_workers",
            &[("component", &srv), ("component_type", "server_api")]
        )
        .len(),
        1,
        "{text}"
    );
    // The counter is `_total` in both formats (the Prometheus clients' choice).
    for body in [&text, &om] {
        let parsed = parse_exposition(body);
        assert_eq!(
            find_samples(
                &parsed,
                "custom_work_items_processed_total",
                &[("component", &srv)]
            )
            .len(),
            1,
            "{body}"
        );
        assert!(
            find_samples(&parsed, "custom_work_items_processed", &[]).is_empty(),
            "{body}"
        );
    }
    // A reported component_type label does not hide the registry's.
    let backlog = find_samples(&samples, "custom_backlog", &[("component", &srv)]);
    assert_eq!(backlog.len(), 1, "{text}");
    assert_eq!(backlog[0].label("component_type"), Some("server_api"));
    assert_eq!(backlog[0].label("exported_component_type"), Some("batch"));
    // A family without help text gets NoETL's HELP line.
    assert!(
        text.contains("# HELP custom_backlog NoETL metric: custom_backlog\n"),
        "{text}"
    );
    if let Some((passed, said)) = promtool_lint(&text) {
        assert!(passed && said.trim().is_empty(), "promtool: {said}\n{text}");
    }
    openmetrics_check(&om).unwrap_or_else(|e| panic!("{e}\n{om}"));

    // One component's series: by name or by numeric id, none of the host's own.
    let (status, only_pool) = scrape(&server, &format!("?component_name={pool}"), false).await;
    assert_eq!(status, 200);
    let (status, by_id) = scrape(&server, &format!("?runtime_id={pool_id}"), false).await;
    assert_eq!(status, 200);
    assert_eq!(only_pool, by_id);
    let picked = parse_exposition(&only_pool);
    assert_eq!(picked.len(), 8, "{only_pool}");
    assert!(
        picked
            .iter()
            .all(|s| s.label("component") == Some(pool.as_str())),
        "{only_pool}"
    );
    if let Some((passed, said)) = promtool_lint(&only_pool) {
        assert!(
            passed && said.trim().is_empty(),
            "promtool: {said}\n{only_pool}"
        );
    }
    let (status, om_pool) = scrape(&server, &format!("?component_name={pool}"), true).await;
    assert_eq!(status, 200);
    assert!(om_pool.ends_with("# EOF\n"), "{om_pool}");
    openmetrics_check(&om_pool).unwrap_or_else(|e| panic!("{e}\n{om_pool}"));
    let (status, nobody) = scrape(&server, "?runtime_id=999999", false).await;
    assert_eq!((status, nobody.as_str()), (200, ""));
    for bad in ["?runtime_id=x", "?component=w1"] {
        let (status, body) = scrape(&server, bad, false).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("invalid_query"), "{bad}: {body}");
    }
}

async fn noetls_reported_counter_names_are_one_name_in_both_formats_too(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .args(["--counter-names", "reported"])
        .start()
        .await;
    let (pool, srv) = (unique("worker-cpu"), unique("noetl-server"));
    report_noetl(&server, &pool, &srv).await;
    let (_, text) = scrape(&server, "", false).await;
    let (_, om) = scrape(&server, "", true).await;
    assert_eq!(series_names(&text), series_names(&om));
    for body in [&text, &om] {
        let parsed = parse_exposition(body);
        assert_eq!(
            find_samples(
                &parsed,
                "custom_work_items_processed",
                &[("component", &srv)]
            )
            .len(),
            1,
            "{body}"
        );
    }
    openmetrics_check(&om).unwrap_or_else(|e| panic!("{e}\n{om}"));
    if let Some((passed, said)) = promtool_lint(&text) {
        // promtool's lint asks counters to end in `_total`: this is the
        // documented cost of keeping NoETL's names.
        assert!(
            passed || said.contains("_total"),
            "promtool: {said}\n{text}"
        );
    }
}

backend_tests!(
    noetl_series_carry_component_type_and_one_name_in_both_formats,
    noetls_reported_counter_names_are_one_name_in_both_formats_too,
);
