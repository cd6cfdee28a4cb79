//! Readiness follows the database connection (PostgreSQL only): the server talks
//! to PostgreSQL through a [`TcpProxy`] that the test cuts and restores.

use std::time::Duration;

use vigil_tests::*;

async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    // Short timeout: a readiness probe must not hang while the database is away.
    let resp = server
        .client()
        .get(server.url(path))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    status_json(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_when_the_database_goes_away_and_recovers_by_itself() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = TestDatabase::new(&backend).await;
    let url = db.database_url().expect("postgres url").to_string();
    let parsed = reqwest::Url::parse(&url).expect("url");
    let host = parsed.host_str().expect("database host").to_string();
    let port = parsed.port().unwrap_or(5432);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve database host")
        .find(|a| a.is_ipv4())
        .expect("an IPv4 address for the database host");
    let mut proxy = TcpProxy::start(target).await;
    let server = TestServer::builder(&db)
        .database_url(with_host_port(&url, proxy.addr()))
        .start()
        .await;

    let (status, body) = get_json(&server, "/api/v2/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");
    server
        .report_ok(&report("before", [gauge("up", 1.0)]))
        .await;

    proxy.stop().await;
    let srv = &server;
    let body = poll_until(
        Duration::from_secs(15),
        "/api/v2/ready to turn 503",
        || async move {
            let (status, body) = get_json(srv, "/api/v2/ready").await;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");
    assert!(
        body["checks"]["database"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the failing check should say why: {body}"
    );
    // Liveness does not depend on the database.
    let (status, body) = get_json(&server, "/api/v2/health").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // Ingest fails cleanly while the database is away (no 200: nothing could be committed).
    let resp = server
        .client()
        .post(server.url("/api/v2/metrics/report"))
        .timeout(Duration::from_secs(20))
        .json(&report("during", [gauge("up", 1.0)]))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_ne!(
            resp.status(),
            200,
            "a report was acknowledged while the database was unreachable"
        );
    }

    proxy.start_again().await;
    poll_until(
        Duration::from_secs(30),
        "/api/v2/ready to return to 200",
        || async move {
            let (status, body) = get_json(srv, "/api/v2/ready").await;
            (status == 200 && body["checks"]["database"]["ok"] == true).then_some(())
        },
    )
    .await;
    // The data path recovers too.
    server.report_ok(&report("after", [gauge("up", 2.0)])).await;
    let stored = server.query_all(&[("metric_name", "up")]).await;
    let comps: Vec<&str> = stored
        .iter()
        .filter_map(|s| s["component_name"].as_str())
        .collect();
    assert!(
        comps.contains(&"before") && comps.contains(&"after"),
        "{stored:?}"
    );
}
