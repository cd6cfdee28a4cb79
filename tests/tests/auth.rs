//! Bearer tokens and scopes, request ids, and start-up refusals for unsafe or
//! broken configuration. Token tests run over SQLite and PostgreSQL; the
//! command-line/config tests fail before any database is touched and run once.

use std::time::Duration;

use vigil_tests::*;

const READ: &str = "r0-secret";
const WRITE: &str = "w0-secret";
const ADMIN: &str = "adm-secret";

async fn server_with_tokens(db: &TestDatabase) -> TestServer {
    TestServer::builder(db)
        .token(format!("read:{READ}"))
        .token(format!("write:{WRITE}"))
        .token(format!("admin:{ADMIN}"))
        .start()
        .await
}

/// (method, url, body) of every protected operation, grouped by required scope.
fn operations(
    server: &TestServer,
    comp: &str,
) -> Vec<(&'static str, &'static str, String, Option<Value>)> {
    let rep = report(comp, [gauge("auth_gauge", 1.0).help("h")]);
    vec![
        (
            "write",
            "POST",
            server.url("/api/v2/metrics/report"),
            Some(rep.clone()),
        ),
        (
            "write",
            "POST",
            server.url("/api/metrics/report"),
            Some(rep),
        ),
        (
            "write",
            "POST",
            server.url(&format!("/api/metrics/self-report?component_name={comp}")),
            None,
        ),
        (
            "write",
            "POST",
            server.url("/api/v2/components"),
            Some(json!({"name": comp, "type": "t", "capabilities": [], "capacity": 1})),
        ),
        (
            "write",
            "POST",
            server.url(&format!("/api/v2/components/{comp}/heartbeat")),
            None,
        ),
        ("read", "GET", server.url("/api/v2/metrics/query"), None),
        ("read", "GET", server.url("/api/metrics/query"), None),
        ("read", "GET", server.url("/api/metrics/prometheus"), None),
        ("read", "GET", server.metrics_url("/metrics"), None),
        ("read", "GET", server.url("/api/v2/metrics"), None),
        ("read", "GET", server.url("/api/v2/components"), None),
        (
            "admin",
            "DELETE",
            server.url(&format!("/api/v2/metrics/series?component={comp}")),
            None,
        ),
    ]
}

async fn requests_without_a_valid_token_get_401(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = server_with_tokens(&db).await;
    let comp = unique("anon");
    for (_, method, url, body) in operations(&server, &comp) {
        for token in [None, Some("wrong-secret"), Some("")] {
            let (status, json) = server.call(method, &url, token, body.as_ref()).await;
            assert_eq!(status, 401, "{method} {url} with {token:?}: {json}");
            assert_eq!(json["error"]["code"], "unauthorized", "{json}");
        }
    }
    // A malformed Authorization header is a 401 as well.
    let resp = server
        .client()
        .get(server.url("/api/v2/metrics/query"))
        .header("authorization", format!("Basic {READ}"))
        .send()
        .await
        .expect("request");
    expect_error(resp, 401, "unauthorized").await;
    // Nothing was stored by the refused reports.
    let (status, json) = server
        .call(
            "GET",
            &server.url("/api/v2/metrics/query"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["samples"], json!([]), "{json}");
}

async fn each_token_can_do_what_its_scopes_allow_and_gets_403_otherwise(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = server_with_tokens(&db).await;
    let comp = unique("scoped");
    // The admin token first, so that the component exists for the heartbeat.
    for (token, scopes) in [
        (ADMIN, &["read", "write", "admin"][..]),
        (READ, &["read"][..]),
        (WRITE, &["write"][..]),
    ] {
        for (needs, method, url, body) in operations(&server, &comp) {
            let (status, json) = server.call(method, &url, Some(token), body.as_ref()).await;
            if scopes.contains(&needs) {
                assert_eq!(status, 200, "{token} ({scopes:?}) {method} {url}: {json}");
            } else {
                assert_eq!(status, 403, "{token} ({scopes:?}) {method} {url}: {json}");
                assert_eq!(json["error"]["code"], "forbidden", "{json}");
            }
        }
    }
    // A combined token has the union of its scopes.
    drop(server);
    let server = TestServer::builder(&db)
        .token("read,write:rw-secret")
        .start()
        .await;
    let (status, _) = server
        .call(
            "GET",
            &server.url("/api/v2/metrics/query"),
            Some("rw-secret"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let rep = report(&comp, [gauge("auth_gauge", 2.0)]);
    let (status, _) = server
        .call(
            "POST",
            &server.url("/api/v2/metrics/report"),
            Some("rw-secret"),
            Some(&rep),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .call(
            "DELETE",
            &server.url(&format!("/api/v2/metrics/series?component={comp}")),
            Some("rw-secret"),
            None,
        )
        .await;
    assert_eq!(status, 403);
}

async fn tokens_can_come_from_the_environment(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .env("VIGIL_TOKENS", format!("read:{READ} admin:{ADMIN}"))
        .start()
        .await;
    let q = server.url("/api/v2/metrics/query");
    assert_eq!(server.call("GET", &q, None, None).await.0, 401);
    assert_eq!(server.call("GET", &q, Some(READ), None).await.0, 200);
    let rep = report("envtok", [gauge("g", 1.0)]);
    assert_eq!(
        server
            .call(
                "POST",
                &server.url("/api/v2/metrics/report"),
                Some(READ),
                Some(&rep)
            )
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .call(
                "POST",
                &server.url("/api/v2/metrics/report"),
                Some(ADMIN),
                Some(&rep)
            )
            .await
            .0,
        200
    );
}

async fn health_ready_and_openapi_stay_public(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = server_with_tokens(&db).await;
    for path in ["/api/v2/health", "/api/v2/ready", "/api/v2/openapi.json"] {
        let (status, json) = server.call("GET", &server.url(path), None, None).await;
        assert_eq!(status, 200, "{path}: {json}");
        // A wrong token does not make a public route fail.
        let (status, json) = server
            .call("GET", &server.url(path), Some("nonsense"), None)
            .await;
        assert_eq!(status, 200, "{path} with a bad token: {json}");
    }
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = server_with_tokens(&db).await;
    for (path, token) in [
        ("/api/v2/health", None),
        ("/api/v2/metrics/query", None),
        ("/api/v2/metrics/query", Some(READ)),
    ] {
        let mut req = server
            .client()
            .get(server.url(path))
            .header("x-request-id", "test-request-42");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let id = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ascii").to_string());
        assert_eq!(
            id.as_deref(),
            Some("test-request-42"),
            "{path} ({})",
            resp.status()
        );

        let mut req = server.client().get(server.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let id = resp
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{path} ({}): no X-Request-Id generated", resp.status()))
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "generated request id is not a UUID: {id:?}"
        );
    }
    // Two requests get two different ids.
    let a = server
        .get("/api/v2/health")
        .await
        .headers()
        .get("x-request-id")
        .cloned();
    let b = server
        .get("/api/v2/health")
        .await
        .headers()
        .get("x-request-id")
        .cloned();
    assert_ne!(a, b);
    // 404s carry one too and use the error shape.
    let resp = server
        .client()
        .get(server.url("/api/v2/no-such-route"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert!(resp.headers().contains_key("x-request-id"));
    expect_error(resp, 404, "not_found").await;
}

backend_tests!(
    requests_without_a_valid_token_get_401,
    each_token_can_do_what_its_scopes_allow_and_gets_403_otherwise,
    tokens_can_come_from_the_environment,
    health_ready_and_openapi_stay_public,
    request_ids_are_echoed_or_generated,
);

// --- start-up refusals (no database involved) -------------------------------

fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vigil-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Runs `vigil serve ARGS` and expects exit code 2 with `needle` (lower-cased)
/// somewhere in its output.
async fn expect_config_error(args: &[&str], envs: &[(&str, &str)], needles: &[&str]) {
    let dir = temp_dir();
    let dir_s = dir.display().to_string();
    let mut all = vec![
        "serve",
        "--data-dir",
        &dir_s,
        "--metrics-listen",
        "off",
        "--log-format",
        "json",
    ];
    if !args.contains(&"--listen") && !envs.iter().any(|(k, _)| *k == "VIGIL_LISTEN") {
        // Should it wrongly start, keep it off the default port.
        all.extend(["--listen", "127.0.0.1:0"]);
    }
    all.extend_from_slice(args);
    let (status, output) = run_vigil(&all, envs, Duration::from_secs(30)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| {
        panic!("vigil {all:?} kept running instead of refusing to start:\n{output}")
    });
    assert_eq!(status.code(), Some(2), "vigil {all:?}: {status}\n{output}");
    let lower = output.to_lowercase();
    assert!(
        needles.iter().any(|n| lower.contains(&n.to_lowercase())),
        "vigil {all:?}: the message should mention one of {needles:?}:\n{output}"
    );
}

#[tokio::test]
async fn a_non_loopback_listen_without_tokens_refuses_to_start() {
    expect_config_error(
        &["--listen", "0.0.0.0:0"],
        &[],
        &["allow-unauthenticated", "token"],
    )
    .await;
    expect_config_error(
        &[],
        &[("VIGIL_LISTEN", "0.0.0.0:0")],
        &["allow-unauthenticated", "token"],
    )
    .await;
}

#[tokio::test]
async fn allow_unauthenticated_permits_a_non_loopback_listen() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::builder(&db)
        .listen("0.0.0.0:0")
        .arg("--allow-unauthenticated")
        .start()
        .await;
    let (status, json) = status_json(server.get("/api/v2/health").await).await;
    assert_eq!(status, 200, "{json}");
    // With a token instead, it starts as well and checks it.
    drop(server);
    let server = TestServer::builder(&db)
        .listen("0.0.0.0:0")
        .token("read:only")
        .start()
        .await;
    assert_eq!(
        server
            .client()
            .get(server.url("/api/v2/metrics/query"))
            .send()
            .await
            .expect("q")
            .status(),
        401
    );
}

#[tokio::test]
async fn a_config_file_with_an_unknown_key_fails_naming_the_key() {
    let dir = temp_dir();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "series_ttl = \"5m\"\nbogus_setting_xyz = 1\n").expect("write");
    expect_config_error(
        &["--config", &bad.display().to_string()],
        &[],
        &["bogus_setting_xyz"],
    )
    .await;
    // The same file without the unknown key is fine.
    let good = dir.join("good.toml");
    std::fs::write(&good, "series_ttl = \"5m\"\nstrict_components = true\n").expect("write");
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::builder(&db)
        .args(["--config", &good.display().to_string()])
        .start()
        .await;
    // strict_components from the file is in force.
    let resp = server
        .report(&report("from-config", [gauge("g", 1.0)]))
        .await;
    expect_error(resp, 422, "unknown_component").await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_duration_fails_clearly() {
    expect_config_error(
        &["--series-ttl", "banana"],
        &[],
        &["banana", "series-ttl", "series_ttl"],
    )
    .await;
    expect_config_error(
        &["--component-stale-after", "10 parsecs"],
        &[],
        &["parsecs", "component-stale-after", "component_stale_after"],
    )
    .await;
    expect_config_error(
        &[],
        &[("VIGIL_RETENTION", "forever")],
        &["forever", "retention"],
    )
    .await;
    let dir = temp_dir();
    let file = dir.join("bad-duration.toml");
    std::fs::write(&file, "series_ttl = \"soon\"\n").expect("write");
    expect_config_error(
        &["--config", &file.display().to_string()],
        &[],
        &["soon", "series_ttl"],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
