//! Provenance streams across replicas sharing one PostgreSQL database: a
//! subscriber connected to either replica sees the events ingested by both
//! (and execution state changes made on either), each once and in log
//! order; every commit is announced with `NOTIFY vigil_log, '<seq>'`, which
//! is how the other replica wakes its subscribers.

use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(20);

async fn post(server: &TestServer, body: Value) -> Vec<i64> {
    let (status, json) = status_json(server.post_json("/api/v2/events", &body).await).await;
    assert_eq!(status, 200, "{json:#}");
    json["seqs"]
        .as_array()
        .expect("present")
        .iter()
        .map(|s| s.as_i64().expect("present"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stream_each_others_events_in_log_order() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = TestDatabase::new(&backend).await;
    let a = TestServer::start(&db).await;
    let b = TestServer::start(&db).await;
    let mut on_a = SseStream::open(&a, "/api/v2/events/stream?cursor=latest", None).await;
    let mut on_b = SseStream::open(&b, "/api/v2/events/stream?cursor=latest", None).await;
    let mut execution_on_a =
        SseStream::open(&a, "/api/v2/executions/shared-run/events", None).await;

    // An event ingested on B reaches A's subscriber promptly.
    let started = Instant::now();
    let first = post(
        &b,
        json!({"event_type": "TaskCreated", "task_id": "from-b"}),
    )
    .await;
    let got = on_a.events(1, WAIT).await;
    assert_eq!(got[0].seq(), first[0]);
    assert_eq!(got[0].json()["event"]["task_id"], "from-b");
    eprintln!("B -> A subscriber: {:?}", started.elapsed());

    // Both replicas ingest at once; an execution is created on B and moved on A.
    let rounds = futures::future::join_all((0..6).map(|round| {
        let server = if round % 2 == 0 { &a } else { &b };
        async move {
            post(
                server,
                json!((0..10)
                    .map(
                        |i| json!({"event_type": "TaskStarted", "task_id": format!("r{round}-{i}")})
                    )
                    .collect::<Vec<_>>()),
            )
            .await
        }
    }));
    let (seqs, created) = tokio::join!(rounds, async {
        let (status, _) = status_json(
            b.post_json(
                "/api/v2/executions",
                &json!({"id": "shared-run", "backend": "dim"}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 201);
        let resp = a
            .client()
            .patch(a.url("/api/v2/executions/shared-run"))
            .json(&json!({"state": "running"}))
            .send()
            .await
            .expect("present");
        assert_eq!(resp.status(), 200);
    });
    let () = created;
    let mut expected: Vec<i64> = seqs.into_iter().flatten().collect();
    let life = execution_on_a.events(2, WAIT).await;
    assert_eq!(
        life.iter()
            .map(|m| m.json()["event"]["to_state"].clone())
            .collect::<Vec<_>>(),
        vec![json!("pending"), json!("running")]
    );
    expected.extend(life.iter().map(SseMessage::seq));
    expected.sort_unstable();
    // The log as the truth: both streams equal the stored list, in order.
    let (_, page) = status_json(
        a.get(&format!("/api/v2/events?cursor={}&limit=1000", first[0]))
            .await,
    )
    .await;
    let stored: Vec<i64> = page["events"]
        .as_array()
        .expect("present")
        .iter()
        .map(|e| e["seq"].as_i64().expect("present"))
        .collect();
    assert_eq!(stored, expected);
    for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        let skip = if name == "B" { 1 } else { 0 };
        let got: Vec<i64> = stream
            .events(expected.len() + skip, WAIT)
            .await
            .iter()
            .map(SseMessage::seq)
            .skip(skip)
            .collect();
        assert_eq!(got, expected, "subscriber on {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_to_the_log_is_announced_with_notify() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let url = db.database_url().expect("a PostgreSQL URL").to_string();
    let mut listener = PgListener::connect(&url).await.expect("listen connection");
    listener.listen("vigil_log").await.expect("LISTEN");
    // Events, samples and execution state changes each announce their seq.
    let seq = post(&server, json!({"event_type": "TaskCreated"})).await[0];
    assert_eq!(next_seq(&mut listener).await, seq);
    server
        .report_ok(&report("notify-test", [gauge("g", 1.0)]))
        .await;
    let sample_seq = next_seq(&mut listener).await;
    assert!(sample_seq > seq, "{sample_seq} after {seq}");
    let (status, _) = status_json(
        server
            .post_json(
                "/api/v2/executions",
                &json!({"id": "n1", "backend": "slurm"}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201);
    let (_, page) = status_json(server.get("/api/v2/executions/n1/events").await).await;
    assert_eq!(
        next_seq(&mut listener).await,
        page["events"][0]["seq"].as_i64().expect("present")
    );
}

async fn next_seq(listener: &mut PgListener) -> i64 {
    tokio::time::timeout(WAIT, listener.recv())
        .await
        .expect("a notification")
        .expect("recv")
        .payload()
        .parse::<i64>()
        .expect("a seq")
}
