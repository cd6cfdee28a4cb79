//! The operational gauges on `/metrics` and readiness' dependencies, on both
//! backends: execution counts follow state changes, a publisher that falls
//! behind shows its queue depth and the age of its oldest undelivered item
//! and turns its dependency gauge to 0 (readiness says why), a plugin that
//! failed to load is a 0 with its reason, and open event streams are counted.
//! The exposition stays valid for promtool and the strict OpenMetrics parser.

use std::time::Duration;

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(30);

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_exposition(text)
        .into_iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
}

async fn scrape(server: &TestServer) -> String {
    let resp = server
        .client()
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .expect("present");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("present")
}

async fn wait_value(
    server: &TestServer,
    name: &str,
    labels: &[(&str, &str)],
    want: impl Fn(f64) -> bool,
    what: &str,
) -> f64 {
    let mut last = None;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = scrape(server).await;
        last = value(&text, name, labels).or(last);
        if let Some(v) = last.filter(|v| want(*v)) {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("{what}: {name}{labels:?} is {last:?}\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn transition(server: &TestServer, id: &str, to: &str) {
    let resp = server
        .client()
        .patch(server.url(&format!("/api/v2/executions/{id}")))
        .json(&json!({"state": to}))
        .send()
        .await
        .expect("present");
    assert_eq!(resp.status(), 200, "{id} -> {to}");
}

async fn gauges_move_as_executions_change_state_and_publishers_fall_behind(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    dir.install_with_manifest(
        "hook",
        "webhook-publisher",
        &format!(
            "[capabilities]\nallowed_hosts = [\"{}\"]\n[config]\nurl = \"{}\"\n",
            receiver.origin(),
            receiver.url("/ingest")
        ),
    );
    dir.write_wasm("broken", b"\0asm but not really a component");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    server
        .wait_publisher("hook", WAIT, "cursor opened", |p| p["cursor_seq"] == 0)
        .await;

    // Executions by backend and state, zeros included.
    for (id, backend) in [("d1", "dim"), ("d2", "dim"), ("s1", "slurm")] {
        let (status, _) = status_json(
            server
                .post_json("/api/v2/executions", &json!({"id": id, "backend": backend}))
                .await,
        )
        .await;
        assert_eq!(status, 201);
    }
    let text = scrape(&server).await;
    let count = |text: &str, b: &str, s: &str| {
        value(text, "vigil_executions", &[("backend", b), ("state", s)])
    };
    assert_eq!(count(&text, "dim", "pending"), Some(2.0));
    assert_eq!(count(&text, "dim", "running"), Some(0.0));
    assert_eq!(count(&text, "slurm", "pending"), Some(1.0));
    transition(&server, "d1", "running").await;
    transition(&server, "d2", "submitted").await;
    transition(&server, "d2", "failed").await;
    let text = scrape(&server).await;
    assert_eq!(count(&text, "dim", "pending"), Some(0.0));
    assert_eq!(count(&text, "dim", "running"), Some(1.0));
    assert_eq!(count(&text, "dim", "failed"), Some(1.0));
    assert_eq!(count(&text, "dim", "submitted"), Some(0.0));

    // Dependencies: the database and the publisher up, the broken plugin down.
    assert_eq!(
        value(
            &text,
            "vigil_dependency_up",
            &[("kind", "database"), ("name", backend.name())]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "vigil_dependency_up",
            &[("kind", "plugin"), ("name", "broken")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "vigil_dependency_up",
            &[("kind", "plugin"), ("name", "hook")]
        ),
        Some(1.0)
    );
    wait_value(
        &server,
        "vigil_publisher_queue_depth",
        &[("publisher", "hook")],
        |v| v == 0.0,
        "delivered",
    )
    .await;

    // The receiver fails: the publisher falls behind.
    receiver.set_handler(|_, _| Reply::status(503));
    let (status, _) = status_json(
        server
            .post_json(
                "/api/v2/events",
                &json!((0..5)
                    .map(|i| json!({"event_type": "TaskCreated", "task_id": format!("t{i}")}))
                    .collect::<Vec<_>>()),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200);
    server
        .report_ok(&report(
            "gauge-test",
            (0..10).map(|i| gauge("g", i as f64).help("a test gauge")),
        ))
        .await;
    // 5 events + 10 samples, plus the 5 state-change events not yet delivered
    // (the receiver accepted what came before; at most the state changes remain).
    let depth = wait_value(
        &server,
        "vigil_publisher_queue_depth",
        &[("publisher", "hook")],
        |v| v >= 15.0,
        "falls behind",
    )
    .await;
    assert!(depth <= 20.0, "{depth}");
    wait_value(
        &server,
        "vigil_publisher_oldest_undelivered_age_seconds",
        &[("publisher", "hook")],
        |v| v >= 1.0,
        "ages",
    )
    .await;
    wait_value(
        &server,
        "vigil_dependency_up",
        &[("kind", "publisher"), ("name", "hook")],
        |v| v == 0.0,
        "backing off",
    )
    .await;
    let (status, ready) = status_json(server.get("/api/v2/ready").await).await;
    assert_eq!(
        status, 200,
        "a failing publisher does not take the replica out: {ready:#}"
    );
    let dep = |kind: &str, name: &str| -> Value {
        ready["dependencies"]
            .as_array()
            .expect("present")
            .iter()
            .find(|d| d["kind"] == kind && d["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {name}: {ready:#}"))
    };
    assert_eq!(dep("database", backend.name())["ok"], true);
    assert_eq!(dep("publisher", "hook")["ok"], false);
    assert!(
        dep("publisher", "hook")["reason"]
            .as_str()
            .expect("present")
            .contains("503"),
        "{ready:#}"
    );
    assert_eq!(dep("plugin", "broken")["ok"], false);
    assert!(
        dep("plugin", "broken")["reason"]
            .as_str()
            .expect("present")
            .starts_with("failed to load"),
        "{ready:#}"
    );
    assert_eq!(dep("plugin", "hook")["ok"], true);

    // The receiver recovers: the queue drains.
    receiver.set_handler(|_, _| Reply::ok());
    wait_value(
        &server,
        "vigil_publisher_queue_depth",
        &[("publisher", "hook")],
        |v| v == 0.0,
        "drains",
    )
    .await;
    wait_value(
        &server,
        "vigil_publisher_oldest_undelivered_age_seconds",
        &[("publisher", "hook")],
        |v| v == 0.0,
        "nothing old",
    )
    .await;
    wait_value(
        &server,
        "vigil_dependency_up",
        &[("kind", "publisher"), ("name", "hook")],
        |v| v == 1.0,
        "healthy again",
    )
    .await;

    // Live stream subscribers.
    assert_eq!(
        value(&scrape(&server).await, "vigil_stream_subscribers", &[]),
        Some(0.0)
    );
    let one = SseStream::open(&server, "/api/v2/events/stream?cursor=latest", None).await;
    let two = SseStream::open(&server, "/api/v2/sources/x/events", None).await;
    wait_value(
        &server,
        "vigil_stream_subscribers",
        &[],
        |v| v == 2.0,
        "two open",
    )
    .await;
    drop(one);
    // The server notices a closed stream when it next writes to it.
    let (status, _) = status_json(
        server
            .post_json("/api/v2/events", &json!({"event_type": "TaskCreated"}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    wait_value(
        &server,
        "vigil_stream_subscribers",
        &[],
        |v| v == 1.0,
        "one left",
    )
    .await;
    drop(two);

    // Both exposition formats stay valid with the new families.
    promtool_check(&scrape(&server).await).expect("present");
    let om = server
        .client()
        .get(server.metrics_url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .expect("present")
        .text()
        .await
        .expect("present");
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    assert!(om.contains("vigil_executions{"), "{om}");
    openmetrics_check(&om).expect("present");
}

vigil_tests::backend_tests!(gauges_move_as_executions_change_state_and_publishers_fall_behind);
