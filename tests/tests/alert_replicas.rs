//! Alerting with two replicas on one PostgreSQL database: one evaluator and
//! one sender run at a time (leases), so a rule's notifications go out once
//! however the reports are spread over the replicas; when the replica
//! holding the leases dies, the other takes over from the stored state and
//! neither resends what was sent nor misses what comes next.

use std::time::Duration;

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(60);

async fn replica(db: &TestDatabase, dir: &PluginDir, receiver: &WebhookReceiver) -> TestServer {
    dir.install_with_manifest(
        "webhook",
        "webhook-notifier",
        &format!(
            "[capabilities]\nallowed_hosts = [\"{}\"]\ncall_timeout_ms = 3000\n",
            receiver.origin()
        ),
    );
    let server = TestServer::builder(db).plugin_dir(dir.path()).start().await;
    server
        .wait_plugin("webhook", WAIT, "loaded", |p| p["state"] == "loaded")
        .await;
    server
}

fn statuses(receiver: &WebhookReceiver) -> Vec<(String, String)> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            let n = r.json();
            (
                n["status"].as_str().unwrap_or("").to_string(),
                n["alerts"][0]["labels"]["component"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_notify_once_and_the_survivor_takes_over() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&backend).await;
    let (dir_a, dir_b) = (PluginDir::new(), PluginDir::new());
    let mut a = replica(&db, &dir_a, &receiver).await;
    let b = replica(&db, &dir_b, &receiver).await;
    let (status, body) = status_json(
        a.post_json(
            "/api/v2/notification-channels",
            &json!({"name": "ops", "plugin": "webhook", "config": {"url": receiver.url("/hook")}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body:#}");
    let (status, body) = status_json(
        b.post_json(
            "/api/v2/alert-rules",
            &json!({"name": "QueueHigh", "expr": "queue_depth > 100", "interval": "1s",
                    "group_by": ["component"], "group_wait": "0s", "group_interval": "1s",
                    "channels": ["ops"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body:#}");

    // Reports to both replicas; one firing and one resolved notification.
    a.report_ok(&report("w1", [gauge("queue_depth", 150.0)]))
        .await;
    poll_until(WAIT, "the firing notification", || async {
        (receiver.count() >= 1).then_some(())
    })
    .await;
    b.report_ok(&report("w1", [gauge("queue_depth", 5.0)]))
        .await;
    poll_until(WAIT, "the resolved notification", || async {
        (receiver.count() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        statuses(&receiver),
        vec![
            ("firing".into(), "w1".into()),
            ("resolved".into(), "w1".into())
        ],
        "two evaluators or senders ran at once"
    );
    // Both replicas answer the same alerts and deliveries from the store.
    for s in [&a, &b] {
        let (_, page) = status_json(s.get("/api/v2/alert-deliveries").await).await;
        assert_eq!(page["deliveries"].as_array().map(|d| d.len()), Some(2));
    }

    // The holder dies; whichever replica is left evaluates and sends.
    a.kill();
    b.report_ok(&report("w2", [gauge("queue_depth", 300.0)]))
        .await;
    poll_until(WAIT, "the survivor's notification", || async {
        (receiver.count() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        statuses(&receiver)[2..],
        [("firing".to_string(), "w2".to_string())],
        "after the takeover something was sent again or twice"
    );
}
