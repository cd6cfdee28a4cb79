//! Several replicas on one PostgreSQL database: both ingest, exactly one
//! delivers each publisher (the holder of its lease), the other stands by,
//! and when the holder dies the other takes over from the stored cursor.

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(30);

fn manifest(receiver: &WebhookReceiver) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n[config]\nurl = \"{}\"\n",
        receiver.origin(),
        receiver.url("/ingest")
    )
}

async fn state(server: &TestServer, name: &str) -> String {
    server
        .publisher(name)
        .await
        .and_then(|p| p["state"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Reports samples and events to `server`; returns nothing (the seqs are
/// read back from the store at the end).
async fn feed(server: &TestServer, component: &str, round: usize) {
    server
        .report_ok(&report(
            component,
            (0..20).map(|i| gauge("replica_value", (round * 100 + i) as f64)),
        ))
        .await;
    let (status, body) = status_json(
        server
            .post_json(
                "/api/v2/events",
                &json!([
                    {"event_type": "TaskStarted", "task_id": format!("{component}-{round}")},
                    {"event_type": "TaskCompleted", "task_id": format!("{component}-{round}")},
                ]),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
}

/// Every sample and event seq stored, ascending.
async fn stored(server: &TestServer) -> Vec<i64> {
    let mut seqs: Vec<i64> = server
        .query_all(&[("limit", "10000")])
        .await
        .iter()
        .map(|s| s["seq"].as_i64().expect("seq"))
        .collect();
    let (status, page) = status_json(server.get("/api/v2/events?limit=10000").await).await;
    assert_eq!(status, 200, "{page:#}");
    seqs.extend(
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_i64().expect("seq")),
    );
    seqs.sort_unstable();
    seqs
}

fn counts(receiver: &WebhookReceiver) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for s in receiver.requests().iter().flat_map(|r| r.all_seqs()) {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_delivers_a_publisher_and_the_other_takes_over_when_it_dies() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&backend).await;
    let (dir_a, dir_b) = (PluginDir::new(), PluginDir::new());
    for dir in [&dir_a, &dir_b] {
        dir.install_with_manifest("hook", "webhook-publisher", &manifest(&receiver));
    }
    let mut a = TestServer::builder(&db)
        .plugin_dir(dir_a.path())
        .start()
        .await;
    a.wait_publisher("hook", WAIT, "delivering on the first replica", |p| {
        p["state"] == "idle"
    })
    .await;
    let b = TestServer::builder(&db)
        .plugin_dir(dir_b.path())
        .start()
        .await;
    b.wait_plugin("hook", WAIT, "loaded", |p| p["state"] == "loaded")
        .await;
    b.wait_publisher("hook", WAIT, "standing by", |p| p["state"] == "standby")
        .await;

    // Both replicas ingest at the same time; one delivers everything once.
    let (ca, cb) = (unique("ra"), unique("rb"));
    for round in 0..10 {
        tokio::join!(feed(&a, &ca, round), feed(&b, &cb, round));
    }
    let all = stored(&a).await;
    assert_eq!(all.len(), 2 * 10 * 22);
    let head = *all.last().expect("stored");
    a.wait_publisher("hook", WAIT, "caught up", |p| p["cursor_seq"] == head)
        .await;
    assert_eq!(state(&b, "hook").await, "standby");
    let got = counts(&receiver);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        all,
        "the receiver got exactly the stored items"
    );
    assert!(
        got.values().all(|n| *n == 1),
        "items delivered twice while one replica held the lease: {:?}",
        got.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let seen_by_b = b.publisher("hook").await.expect("b sees the cursor");
    assert_eq!(seen_by_b["cursor_seq"], head, "{seen_by_b:#}");

    // The holder dies without a word; the survivor takes the lease, resumes
    // from the stored cursor and delivers what arrives after.
    a.kill();
    b.wait_publisher("hook", WAIT, "took over", |p| {
        p["state"] == "idle" || p["state"] == "delivering"
    })
    .await;
    for round in 10..15 {
        feed(&b, &cb, round).await;
    }
    let all = stored(&b).await;
    let head = *all.last().expect("stored");
    b.wait_publisher("hook", WAIT, "caught up after take-over", |p| {
        p["cursor_seq"] == head
    })
    .await;
    let got = counts(&receiver);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        all,
        "nothing lost across the take-over"
    );
    assert!(
        got.values().all(|n| *n == 1),
        "the holder was idle when it died, so nothing needed re-sending"
    );
}
