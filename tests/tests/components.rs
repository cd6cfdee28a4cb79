//! The runtime component registry: register, heartbeat, list, alive/stale,
//! over SQLite and PostgreSQL.

use std::time::Duration;

use vigil_tests::*;

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["components"]
        .as_array()
        .expect("components array")
        .iter()
        .find(|c| c["name"] == name)
}

async fn list(server: &TestServer) -> Value {
    let (status, body) = status_json(server.get("/api/v2/components").await).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn components_register_heartbeat_and_list_as_alive(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let body =
        json!({"name": "w1", "type": "worker_pool", "capabilities": ["cpu", "gpu"], "capacity": 4});
    let (status, registered) =
        status_json(server.post_json("/api/v2/components", &body).await).await;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(registered["name"], "w1");
    assert_eq!(registered["type"], "worker_pool");
    assert_eq!(registered["capabilities"], json!(["cpu", "gpu"]));
    assert_eq!(registered["capacity"], 4);
    let registered_at = parse_ts(&registered["registered_at"]);

    let (status, beat) = status_json(
        server
            .post_json("/api/v2/components/w1/heartbeat", &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["name"], "w1");
    let last = parse_ts(&beat["last_heartbeat"]);
    assert!(
        last >= registered_at,
        "last_heartbeat {last} before registered_at {registered_at}"
    );
    assert_eq!(beat["status"], "alive", "{beat}");

    let unknown = server
        .post_json("/api/v2/components/nobody/heartbeat", &json!({}))
        .await;
    expect_error(unknown, 404, "not_found").await;

    let all = list(&server).await;
    let w1 = find(&all, "w1").unwrap_or_else(|| panic!("w1 not listed: {all}"));
    assert_eq!(w1["status"], "alive", "{w1}");
    assert_eq!(w1["type"], "worker_pool");
    assert_eq!(w1["capabilities"], json!(["cpu", "gpu"]));
    assert_eq!(w1["capacity"], 4);
    assert_eq!(parse_ts(&w1["registered_at"]), registered_at);
    assert_eq!(parse_ts(&w1["last_heartbeat"]), last);
    assert!(find(&all, "nobody").is_none(), "{all}");

    // Registrations are durable.
    let mut server = server;
    server.restart().await;
    let all = list(&server).await;
    assert!(find(&all, "w1").is_some(), "w1 lost on restart: {all}");

    // A bad registration is a 400 and registers nothing.
    let (status, err) = status_json(
        server
            .post_json("/api/v2/components", &json!({"type": "x"}))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        list(&server).await["components"]
            .as_array()
            .expect("components")
            .len(),
        1
    );
}

async fn a_component_without_heartbeats_turns_stale_and_a_heartbeat_revives_it(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .args(["--component-stale-after", "1s"])
        .start()
        .await;
    let (status, body) = status_json(
        server
            .post_json(
                "/api/v2/components",
                &json!({"name": "sleepy", "type": "worker_pool", "capabilities": [], "capacity": 1}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let srv = &server;
    poll_until(
        Duration::from_secs(10),
        "sleepy to turn stale",
        || async move {
            let all = list(srv).await;
            (find(&all, "sleepy")?["status"] == "stale").then_some(())
        },
    )
    .await;
    let (status, beat) = status_json(
        server
            .post_json("/api/v2/components/sleepy/heartbeat", &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    let all = list(&server).await;
    let sleepy = find(&all, "sleepy").expect("sleepy listed");
    // Right after a heartbeat it is alive (unless this machine stalled for a second).
    let age = chrono::Utc::now() - parse_ts(&sleepy["last_heartbeat"]);
    if age < chrono::Duration::milliseconds(900) {
        assert_eq!(sleepy["status"], "alive", "{sleepy}");
    }
}

async fn the_alive_gauge_counts_what_the_registry_lists_as_alive_self_report_included(
    backend: Backend,
) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .self_report_interval("1s")
        .start()
        .await;
    server
        .report_ok(&report(&unique("worker"), [gauge("g", 1.0)]))
        .await;
    let alive_listed = poll_until(
        Duration::from_secs(20),
        "the self-report registers `vigil`",
        || async {
            let all = list(&server).await;
            find(&all, "vigil").is_some().then(|| {
                all["components"]
                    .as_array()
                    .map(|c| c.iter().filter(|c| c["status"] == "alive").count())
                    .unwrap_or(0)
            })
        },
    )
    .await;
    assert_eq!(alive_listed, 2);
    for path in ["/api/v2/metrics", "/api/metrics/prometheus"] {
        let text = server.get(path).await.text().await.expect("metrics");
        assert_eq!(
            expo_value(&text, "vigil_components_alive", &[]),
            alive_listed as f64,
            "{path}: the gauge disagrees with /api/v2/components"
        );
    }
}

backend_tests!(
    components_register_heartbeat_and_list_as_alive,
    a_component_without_heartbeats_turns_stale_and_a_heartbeat_revives_it,
    the_alive_gauge_counts_what_the_registry_lists_as_alive_self_report_included,
);
