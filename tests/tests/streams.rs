//! Provenance streams on both backends: JSON pages by default, scoped to an
//! execution, a source or a project; with `Accept: text/event-stream` the
//! stored history then live events in log order, `id:` = seq, resumption
//! with `Last-Event-ID` with nothing missed or repeated, keep-alive comments
//! on idle streams, a slow subscriber cut with a reason while the others
//! keep up, and streams closed with a reason when the server stops.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(20);

async fn post_events(server: &TestServer, events: Value) -> Vec<i64> {
    let (status, body) = status_json(server.post_json("/api/v2/events", &events).await).await;
    assert_eq!(status, 200, "{body:#}");
    body["seqs"]
        .as_array()
        .expect("present")
        .iter()
        .map(|s| s.as_i64().expect("stored"))
        .collect()
}

fn seqs_of(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {page}"))
        .iter()
        .map(|e| e["seq"].as_i64().expect("present"))
        .collect()
}

async fn page(server: &TestServer, path: &str) -> Value {
    let (status, body) = status_json(server.get(path).await).await;
    assert_eq!(status, 200, "{path}: {body:#}");
    body
}

async fn stream_pages_are_json_by_default_and_scoped(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let (status, _) = status_json(
        server
            .post_json(
                "/api/v2/executions",
                &json!({"id": "x1", "backend": "dim", "source_id": "src-a", "project_module": "proj.a"}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201);
    let seqs = post_events(
        &server,
        json!([
            {"event_type": "myapp.SourceQueued", "source_id": "src-a", "project_module": "proj.a"},
            {"event_type": "myapp.RunMilestone", "execution_id": "x1", "source_id": "src-a", "step": 1},
            {"event_type": "TaskStarted", "task_id": "t1", "execution_id": "x2"},
            {"event_type": "myapp.SourceQueued", "source_id": "src-b", "project_module": "proj.a"},
            {"event_type": "myapp.Other", "execution_id": 7},
        ]),
    )
    .await;
    let x1 = seqs_of(&page(&server, "/api/v2/executions/x1/events").await);
    assert_eq!(x1.len(), 2, "its creation and the milestone");
    assert_eq!(x1[1], seqs[1]);
    let src = page(&server, "/api/v2/sources/src-a/events").await;
    assert_eq!(seqs_of(&src).len(), 3);
    assert_eq!(
        src["events"][0]["event"]["event_type"],
        "vigil.ExecutionStateChanged"
    );
    assert_eq!(
        seqs_of(&page(&server, "/api/v2/projects/proj.a/events").await).len(),
        3
    );
    // Filters of GET /api/v2/events apply too; numbers never match an id.
    assert_eq!(
        seqs_of(
            &page(
                &server,
                "/api/v2/projects/proj.a/events?event_type=myapp.SourceQueued&limit=1"
            )
            .await
        ),
        vec![seqs[0]]
    );
    assert_eq!(
        seqs_of(&page(&server, "/api/v2/executions/7/events").await),
        Vec::<i64>::new()
    );
    assert_eq!(
        seqs_of(&page(&server, "/api/v2/executions/x2/events?task_id=t1").await),
        vec![seqs[2]]
    );
    // The unscoped stream's page is GET /api/v2/events.
    assert_eq!(
        page(&server, "/api/v2/events/stream?limit=3").await,
        page(&server, "/api/v2/events?limit=3").await
    );
    let next = page(&server, "/api/v2/sources/src-a/events?limit=2").await["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    assert_eq!(
        seqs_of(
            &page(
                &server,
                &format!("/api/v2/sources/src-a/events?limit=2&cursor={next}")
            )
            .await
        ),
        vec![seqs[1]]
    );
    for bad in [
        "/api/v2/events/stream?event_type=Nope",
        "/api/v2/events/stream?cursor=-4",
        "/api/v2/sources/src-a/events?colour=red",
    ] {
        expect_error(server.get(bad).await, 400, "invalid_query").await;
    }
    let resp = server
        .client()
        .get(server.url("/api/v2/events/stream"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "soon")
        .send()
        .await
        .expect("present");
    expect_error(resp, 400, "invalid_request").await;
}

async fn sse_sends_history_then_follows_live_in_order(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let history = post_events(
        &server,
        json!((0..5)
            .map(|i| json!({"event_type": "TaskCreated", "task_id": format!("h{i}")}))
            .collect::<Vec<_>>()),
    )
    .await;
    let mut all = SseStream::open(&server, "/api/v2/events/stream", None).await;
    assert_eq!(
        all.headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-cache")
    );
    let mut scoped = SseStream::open(&server, "/api/v2/executions/live-1/events", None).await;
    let got = all.events(5, WAIT).await;
    assert_eq!(got.iter().map(SseMessage::seq).collect::<Vec<_>>(), history);
    assert_eq!(got[0].json()["event"]["task_id"], "h0");
    // Live: concurrent posts from several clients, and an execution's life.
    let mut posted: Vec<i64> = futures::future::join_all((0..8).map(|c| {
        let server = &server;
        async move {
            post_events(
                server,
                json!((0..5)
                    .map(|i| json!({"event_type": "TaskStarted", "task_id": format!("c{c}-{i}")}))
                    .collect::<Vec<_>>()),
            )
            .await
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    let (status, _) = status_json(
        server
            .post_json(
                "/api/v2/executions",
                &json!({"id": "live-1", "backend": "slurm"}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201);
    for to in ["running", "failed"] {
        let resp = server
            .client()
            .patch(server.url("/api/v2/executions/live-1"))
            .json(&json!({"state": to}))
            .send()
            .await
            .expect("present");
        assert_eq!(resp.status(), 200);
    }
    let life = scoped.events(3, WAIT).await;
    let moves: Vec<String> = life
        .iter()
        .map(|m| {
            m.json()["event"]["to_state"]
                .as_str()
                .expect("present")
                .to_string()
        })
        .collect();
    assert_eq!(moves, vec!["pending", "running", "failed"]);
    let life_seqs: Vec<i64> = life.iter().map(SseMessage::seq).collect();
    posted.extend(&life_seqs);
    posted.sort_unstable();
    let live = all.events(posted.len(), WAIT).await;
    let live_seqs: Vec<i64> = live.iter().map(SseMessage::seq).collect();
    assert_eq!(live_seqs, posted, "every event once, in log order");
    // Each message's data is the event as GET /api/v2/events renders it.
    let listed = page(
        &server,
        &format!("/api/v2/events?cursor={}&limit=1", live_seqs[0] - 1),
    )
    .await;
    assert_eq!(live[0].json(), listed["events"][0]);
    // `cursor=latest` follows only what comes next.
    let mut fresh = SseStream::open(
        &server,
        "/api/v2/events/stream?cursor=latest&event_type=TaskFailed",
        None,
    )
    .await;
    let next = post_events(
        &server,
        json!([{"event_type": "TaskCompleted"}, {"event_type": "TaskFailed"}]),
    )
    .await;
    assert_eq!(fresh.events(1, WAIT).await[0].seq(), next[1]);
}

async fn a_reconnect_with_last_event_id_resumes_with_no_gap_and_no_repeat(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let batch = |tag: &str| {
        json!((0..10)
            .map(|i| json!({"event_type": "TaskQueued", "task_id": format!("{tag}{i}")}))
            .collect::<Vec<_>>())
    };
    let mut expected = post_events(&server, batch("a")).await;
    let mut stream = SseStream::open(&server, "/api/v2/events/stream", None).await;
    let mut received: Vec<i64> = stream
        .events(7, WAIT)
        .await
        .iter()
        .map(SseMessage::seq)
        .collect();
    drop(stream);
    // While disconnected: more events.
    expected.extend(post_events(&server, batch("b")).await);
    let last = *received.last().expect("present");
    let mut resumed = SseStream::open(&server, "/api/v2/events/stream", Some(last)).await;
    expected.extend(post_events(&server, batch("c")).await);
    let rest = resumed.events(expected.len() - received.len(), WAIT).await;
    received.extend(rest.iter().map(SseMessage::seq));
    assert_eq!(received, expected, "nothing missed, nothing repeated");
    // The id wins over a cursor in the query, and resuming at the end waits.
    let mut at_end = SseStream::open(
        &server,
        "/api/v2/events/stream?cursor=0",
        Some(*expected.last().expect("present")),
    )
    .await;
    let more = post_events(&server, json!({"event_type": "TaskCompleted"})).await;
    assert_eq!(at_end.events(1, WAIT).await[0].seq(), more[0]);
}

async fn idle_streams_get_keep_alive_comments(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .args(["--stream-keep-alive", "200ms"])
        .start()
        .await;
    let mut stream = SseStream::open(&server, "/api/v2/sources/quiet/events", None).await;
    for _ in 0..3 {
        let msg = stream
            .next_within(Duration::from_secs(5))
            .await
            .expect("open");
        assert_eq!(msg.comment.as_deref(), Some("keep-alive"), "{msg:?}");
    }
}

/// Opens an SSE request on a raw socket with a tiny receive buffer and does
/// not read: the server's writes back up.
async fn stalled_subscriber(server: &TestServer, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut conn = socket.connect(server.addr()).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        server.addr()
    );
    conn.write_all(request.as_bytes())
        .await
        .expect("send request");
    conn
}

async fn a_slow_subscriber_is_cut_with_a_reason_and_others_keep_up(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .args(["--stream-buffer", "64", "--stream-slow-after", "3s"])
        .start()
        .await;
    let mut slow = stalled_subscriber(&server, "/api/v2/events/stream?cursor=latest").await;
    let mut fast = SseStream::open(&server, "/api/v2/events/stream?cursor=latest", None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ~16 MB of events: far more than the socket buffers between the
    // server and the stalled reader hold (4 MiB each way at most here).
    let padding = "p".repeat(8 * 1024);
    let mut posted = Vec::new();
    let mut fast_seen = Vec::new();
    let started = std::time::Instant::now();
    for round in 0..20 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"event_type": "myapp.Bulk", "task_id": format!("{round}-{i}"), "padding": padding}))
            .collect();
        posted.extend(post_events(&server, json!(events)).await);
        // The reading subscriber keeps up all along.
        fast_seen.extend(fast.events(100, WAIT).await.iter().map(SseMessage::seq));
    }
    assert_eq!(
        fast_seen, posted,
        "the reading subscriber got everything, in order"
    );
    // Bursts of 100 events overflow the 64-event ring: the reading subscriber
    // caught up from the stored log each time instead of being cut. Make sure
    // the stalled one has been behind for longer than --stream-slow-after.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(started.elapsed())).await;
    posted.extend(
        post_events(
            &server,
            json!({"event_type": "myapp.Bulk", "padding": padding}),
        )
        .await,
    );
    // The stalled one now reads: what fit in the buffers, then the reason, then the end.
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, slow.read_to_end(&mut raw))
        .await
        .expect("the server closes the slow stream")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let final_data = text
        .split("\n\n")
        .filter(|m| m.contains("event: error"))
        .last()
        .unwrap_or_else(|| {
            panic!(
                "no final error message; got {} bytes ending {:?}",
                raw.len(),
                &text[text.len().saturating_sub(300)..]
            )
        });
    assert!(
        final_data.contains("\"code\":\"slow_subscriber\""),
        "{final_data}"
    );
    assert!(final_data.contains("Last-Event-ID"), "{final_data}");
    assert!(final_data.contains("3000 ms"), "{final_data}");
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|i| i.trim().parse().expect("present"))
        .collect();
    assert!(
        ids.len() < posted.len(),
        "it was cut before the end ({} of {})",
        ids.len(),
        posted.len()
    );
    assert_eq!(
        &posted[..ids.len()],
        &ids[..],
        "what it got was in order, without holes"
    );
    // It resumes from its last id and gets the rest.
    let mut resumed = SseStream::open(&server, "/api/v2/events/stream", ids.last().copied()).await;
    let rest: Vec<i64> = resumed
        .events(posted.len() - ids.len(), WAIT)
        .await
        .iter()
        .map(SseMessage::seq)
        .collect();
    assert_eq!(&posted[ids.len()..], &rest[..]);
}

async fn streams_end_with_a_reason_when_the_server_stops(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let mut server = TestServer::start(&db).await;
    let mut stream = SseStream::open(&server, "/api/v2/events/stream", None).await;
    let seq = post_events(&server, json!({"event_type": "TaskCreated"})).await[0];
    assert_eq!(stream.events(1, WAIT).await[0].seq(), seq);
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let last = stream.next_message(WAIT).await.expect("a closing message");
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["code"], "shutting_down");
    assert_eq!(last.json()["error"]["last_event_id"], seq);
    assert!(
        last.id.is_none(),
        "the closing message keeps Last-Event-ID where it was"
    );
    assert!(
        stream.next_within(WAIT).await.is_none(),
        "then the stream ends"
    );
}

vigil_tests::backend_tests!(
    stream_pages_are_json_by_default_and_scoped,
    sse_sends_history_then_follows_live_in_order,
    a_reconnect_with_last_event_id_resumes_with_no_gap_and_no_repeat,
    idle_streams_get_keep_alive_comments,
    a_slow_subscriber_is_cut_with_a_reason_and_others_keep_up,
    streams_end_with_a_reason_when_the_server_stops,
);
