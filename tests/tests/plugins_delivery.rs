//! Durable delivery to publisher plugins: the cursor survives a crash, retryable
//! errors are retried honouring `Retry-After`, per-item rejections become dead
//! letters, a permanent error holds data back without dropping it, and
//! publishers progress independently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(30);

fn webhook_manifest(receiver: &WebhookReceiver, path: &str) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n[config]\nurl = \"{}\"\n",
        receiver.origin(),
        receiver.url(path)
    )
}

/// A server on a fresh plugin dir holding the given webhook publishers
/// (`(name, receiver)`), each posting to `/ingest`; waits until every cursor
/// is open so that everything reported afterwards is theirs.
async fn start(
    db: &TestDatabase,
    dir: &PluginDir,
    publishers: &[(&str, &WebhookReceiver)],
) -> TestServer {
    for (name, receiver) in publishers {
        dir.install_with_manifest(
            name,
            "webhook-publisher",
            &webhook_manifest(receiver, "/ingest"),
        );
    }
    let server = TestServer::builder(db).plugin_dir(dir.path()).start().await;
    for (name, _) in publishers {
        server
            .wait_publisher(name, WAIT, "cursor opened", |p| p["cursor_seq"] == 0)
            .await;
    }
    server
}

/// Reports `n` gauge samples (in reports of at most 10 000, the per-request
/// limit) of `metric`.
async fn report_n(server: &TestServer, component: &str, metric: &str, n: usize) {
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(10_000);
        server
            .report_ok(&report(
                component,
                (sent..sent + k).map(|i| gauge(metric, i as f64)),
            ))
            .await;
        sent += k;
    }
}

fn seq_counts(requests: &[ReceivedRequest]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for s in requests.iter().flat_map(|r| r.seqs()) {
        *counts.entry(s).or_insert(0usize) += 1;
    }
    counts
}

async fn wait_lag_zero(server: &TestServer, name: &str, timeout: Duration) -> Value {
    server
        .wait_publisher(name, timeout, "lag 0", |p| p["lag"] == 0)
        .await
}

// ---------------------------------------------------------------------------
// (1) restart
// ---------------------------------------------------------------------------

async fn a_crash_resumes_delivery_from_the_stored_cursor(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let mut server = start(&db, &dir, &[("hook", &receiver)]).await;
    let component = unique("crash");

    report_n(&server, &component, "crash_value", 200).await;
    let p = wait_lag_zero(&server, "hook", WAIT).await;
    assert_eq!(p["delivered"], 200, "{p:#}");

    // More samples arrive; the receiver takes its time, so that a batch is in
    // flight and a backlog waits when the server dies.
    receiver.set_handler(|_, _| Reply::ok().delay(Duration::from_millis(400)));
    let (_stop, acked, reporter) = start_reporter(
        &server,
        &component,
        "crash_value",
        10,
        Duration::from_millis(20),
    );
    let posted = receiver.count();
    poll_until(WAIT, "deliveries of the new samples and a backlog", || {
        let (n, a) = (receiver.count(), acked.load(Ordering::SeqCst));
        let server = &server;
        async move {
            if n < posted + 3 || a < 500 {
                return None;
            }
            let lag = server.publisher("hook").await?["lag"].as_i64()?;
            (lag > 0).then_some(())
        }
    })
    .await;
    server.kill();
    let killed_at = Instant::now();
    reporter.await.expect("reporter");
    let acked = acked.load(Ordering::SeqCst) + 200;

    server.restart().await;
    let p = wait_lag_zero(&server, "hook", Duration::from_secs(60)).await;
    assert_eq!(p["dead_lettered"], 0, "{p:#}");

    let stored = server.stored_seqs(&component).await;
    assert!(
        stored.len() >= acked,
        "{} stored < {acked} acknowledged",
        stored.len()
    );
    let requests = receiver.requests();
    let (before, after): (Vec<_>, Vec<_>) = requests
        .iter()
        .cloned()
        .partition(|r| r.accepted_at < killed_at);
    assert!(!after.is_empty(), "nothing was delivered after the restart");
    let counts = seq_counts(&requests);
    let missing: Vec<i64> = stored
        .iter()
        .copied()
        .filter(|s| !counts.contains_key(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} stored samples never reached the receiver: {:?}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(20)]
    );
    let stored_set: BTreeSet<i64> = stored.iter().copied().collect();
    let unknown: Vec<i64> = counts
        .keys()
        .copied()
        .filter(|s| !stored_set.contains(s))
        .collect();
    assert!(
        unknown.is_empty(),
        "delivered seqs that are not stored: {unknown:?}"
    );

    // At-least-once: only the batch whose cursor update the crash lost may
    // come twice.
    let dups: Vec<i64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let last_before: BTreeSet<i64> = before
        .last()
        .map(|r| r.seqs())
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(
        dups.iter().all(|s| last_before.contains(s)),
        "duplicates beyond the last batch before the crash ({} seqs from {:?}): {dups:?}",
        last_before.len(),
        last_before.first()
    );
    assert!(counts.values().all(|n| *n <= 2), "a seq arrived 3 times");
    eprintln!(
        "crash ({}): {} stored, {acked} acknowledged, {} requests before the kill, {} after, {} seqs delivered twice",
        backend.name(),
        stored.len(),
        before.len(),
        after.len(),
        dups.len()
    );
}

/// Posts events; returns their seqs (asserting each was stored).
async fn post_events(server: &TestServer, events: &Value) -> Vec<i64> {
    let (status, body) = status_json(server.post_json("/api/v2/events", events).await).await;
    assert_eq!(status, 200, "{body:#}");
    body["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(|s| s.as_i64().expect("stored, not a duplicate"))
        .collect()
}

async fn events_reach_publishers_with_samples_in_log_order(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    // Refuses every event marked poison; accepts everything else.
    receiver.set_handler(|req, _| {
        let rejected: Vec<Value> = req
            .events()
            .iter()
            .filter(|e| e["attributes"]["poison"] == true)
            .map(|e| json!({"seq": e["seq"], "reason": "document parsing exception"}))
            .collect();
        if rejected.is_empty() {
            Reply::ok()
        } else {
            Reply::status(400).json(&json!({ "rejected": rejected }))
        }
    });
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let server = start(&db, &dir, &[("hook", &receiver)]).await;
    let component = unique("mixed");
    let session = unique("session");

    report_n(&server, &component, "mixed_value", 5).await;
    let mut event_seqs = post_events(
        &server,
        &json!([
            {"event_type": "TaskCreated", "event_id": format!("{session}-1"), "session_id": session,
             "task_id": "task.0001", "event_time": 1_700_000_000.5},
            {"event_type": "asyncflow.TaskResolved", "session_id": session, "task_id": "task.0001",
             "asyncflow.workflow_id": "etl-run-42"},
            {"event_type": "TaskCompleted", "session_id": session, "task_id": "task.0001",
             "duration_seconds": 1.25},
        ]),
    )
    .await;
    report_n(&server, &component, "mixed_value", 5).await;
    event_seqs.extend(
        post_events(
            &server,
            &json!({"events": [
                {"event_type": "myframework.DataQualityChecked", "session_id": session,
                 "dataset": "train_2024", "score": 0.97},
                {"event_type": "myframework.DataQualityChecked", "session_id": session,
                 "dataset": "broken", "poison": true},
            ]}),
        )
        .await,
    );
    let poison_seq = *event_seqs.last().expect("poison");

    let p = wait_lag_zero(&server, "hook", WAIT).await;
    assert_eq!(p["delivered"], 14, "{p:#}");
    assert_eq!(p["dead_lettered"], 1, "{p:#}");

    // Every stored item reached the receiver exactly once (the refused
    // request included), each request a contiguous stretch of the log.
    let mut expected: Vec<i64> = server.stored_seqs(&component).await;
    expected.extend(&event_seqs);
    expected.sort_unstable();
    let requests = receiver.requests();
    let mut got: Vec<i64> = requests.iter().flat_map(|r| r.all_seqs()).collect();
    got.sort_unstable();
    assert_eq!(got, expected, "every item once");
    for r in &requests {
        let mut seqs = r.all_seqs();
        seqs.sort_unstable();
        let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
        let inside = expected
            .iter()
            .filter(|s| (first..=last).contains(*s))
            .count();
        assert_eq!(
            inside,
            seqs.len(),
            "a request skipped part of the log: {seqs:?}"
        );
    }

    // Events arrive with their type, time, source and fields.
    let events: Vec<Value> = requests.iter().flat_map(|r| r.events()).collect();
    assert_eq!(events.len(), 5);
    let first = &events[0];
    assert_eq!(first["seq"], event_seqs[0]);
    assert_eq!(first["event_type"], "TaskCreated");
    assert_eq!(first["timestamp_ms"], 1_700_000_000_500i64);
    assert_eq!(first["source"], "task.0001");
    assert_eq!(first["attributes"]["event_id"], format!("{session}-1"));
    assert_eq!(first["attributes"]["session_id"], session.as_str());
    // The body exactly as sent: the workflow id where AsyncFlow put it.
    assert_eq!(
        events[1]["attributes"]["asyncflow.workflow_id"],
        "etl-run-42"
    );
    assert!(events[1]["attributes"].get("workflow_id").is_none());
    assert_eq!(events[2]["attributes"]["duration_seconds"], 1.25);
    assert_eq!(events[3]["source"], session.as_str());
    assert_eq!(events[3]["attributes"]["score"], 0.97);

    // The refused event is a dead letter, as the event it was.
    let (status, page) =
        status_json(server.get("/api/v2/publishers/hook/dead-letters").await).await;
    assert_eq!(status, 200, "{page:#}");
    let letters = page["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(letters.len(), 1, "{page:#}");
    assert_eq!(letters[0]["seq"], poison_seq);
    assert_eq!(letters[0]["reason"], "document parsing exception");
    // In the listing form of GET /api/v2/events: the envelope, the body as sent.
    let item = &letters[0]["item"];
    assert_eq!(item["seq"], poison_seq);
    assert_eq!(
        item["event"]["event_type"],
        "myframework.DataQualityChecked"
    );
    assert_eq!(item["event"]["dataset"], "broken");
    assert_eq!(item["event"]["poison"], true);
}

/// Seqs of every sample the receiver got on `path`.
fn received_seqs(receiver: &WebhookReceiver, path: &str) -> BTreeSet<i64> {
    receiver
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .flat_map(|r| r.seqs())
        .collect()
}

async fn a_new_publisher_gets_everything_reported_right_after_it_shows_loaded(backend: Backend) {
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    let component = unique("late");
    report_n(&server, &component, "before", 5).await;
    for round in 0..3 {
        let name = format!("late{round}");
        let path = format!("/{name}");
        dir.install_with_manifest(
            &name,
            "webhook-publisher",
            &webhook_manifest(&receiver, &path),
        );
        // As a user would: the moment it shows `loaded`, report, one sample
        // per request, without waiting for anything else.
        server
            .wait_plugin(&name, WAIT, "loaded", |p| p["state"] == "loaded")
            .await;
        let metric = format!("after_{round}");
        for i in 0..10 {
            server
                .report_ok(&report(&component, [gauge(&metric, i as f64)]))
                .await;
        }
        let wanted: BTreeSet<i64> = server
            .query_all(&[("component_name", &component), ("metric_name", &metric)])
            .await
            .iter()
            .map(|s| s["seq"].as_i64().expect("seq"))
            .collect();
        assert_eq!(wanted.len(), 10);
        let got = poll_until(
            WAIT,
            "every sample reported after `loaded` delivered",
            || async {
                let got = received_seqs(&receiver, &path);
                wanted.is_subset(&got).then_some(got)
            },
        )
        .await;
        let before: BTreeSet<i64> = server
            .stored_seqs(&component)
            .await
            .into_iter()
            .filter(|s| !got.contains(s))
            .collect();
        assert!(
            !before.is_empty(),
            "the samples from before it loaded are not its"
        );
    }
}

backend_tests!(
    a_crash_resumes_delivery_from_the_stored_cursor,
    events_reach_publishers_with_samples_in_log_order,
    a_new_publisher_gets_everything_reported_right_after_it_shows_loaded
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_publisher_replaced_by_a_fixed_one_delivers_without_the_old_backoff() {
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install("hook", "panic-publisher");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    server
        .wait_publisher("hook", WAIT, "cursor opened", |_| true)
        .await;
    let component = unique("fixed");
    report_n(&server, &component, "fixed_value", 50).await;
    server
        .wait_plugin("hook", Duration::from_secs(60), "quarantined", |p| {
            p["state"] == "quarantined"
        })
        .await;
    // Delivery keeps failing against the quarantined plugin and backs off.
    let backing_off = server
        // Long enough that a loaded machine's reload (seconds) cannot hide
        // the difference between "retried now" and "waited out the backoff".
        .wait_publisher("hook", Duration::from_secs(90), "a long backoff", |p| {
            p["next_attempt_in_ms"].as_u64().unwrap_or(0) >= 12_000
        })
        .await;
    let replaced_at = Instant::now();
    let waiting_ms = backing_off["next_attempt_in_ms"].as_u64().unwrap_or(0);
    dir.install_with_manifest(
        "hook",
        "webhook-publisher",
        &webhook_manifest(&receiver, "/ingest"),
    );
    let wanted: BTreeSet<i64> = server.stored_seqs(&component).await.into_iter().collect();
    poll_until(WAIT, "the fixed publisher delivers the backlog", || async {
        wanted
            .is_subset(&received_seqs(&receiver, "/ingest"))
            .then_some(())
    })
    .await;
    let took = replaced_at.elapsed();
    assert!(
        took.as_millis() as u64 + 1_000 < waiting_ms,
        "the fixed publisher waited out the old backoff: delivered after {took:?}, the backoff had {waiting_ms} ms left"
    );
}

// ---------------------------------------------------------------------------
// (2) retryable errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_retried_honouring_retry_after() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_handler(|_, i| {
        if i < 3 {
            Reply::status(503).header("Retry-After", "1")
        } else {
            Reply::ok()
        }
    });
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = start(&db, &dir, &[("hook", &receiver)]).await;
    let component = unique("retry");
    report_n(&server, &component, "retry_value", 50).await;

    let failing = server
        .wait_publisher("hook", WAIT, "a retryable error", |p| {
            p["last_error"].is_string()
        })
        .await;
    let error = failing["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("retryable:") && error.contains("503"),
        "{failing:#}"
    );
    assert!(failing["lag"].as_i64().unwrap_or(0) > 0, "{failing:#}");
    assert!(failing["last_error_at"].is_string(), "{failing:#}");

    let done = wait_lag_zero(&server, "hook", WAIT).await;
    assert_eq!(done["delivered"], 50, "{done:#}");
    assert_eq!(
        done["last_error"],
        Value::Null,
        "a success clears the error: {done:#}"
    );

    let requests = receiver.requests();
    assert_eq!(requests.len(), 4, "3 refused attempts and 1 success");
    for w in requests.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "a retry came {gap:?} after the previous attempt despite Retry-After: 1"
        );
    }
    let key = requests[0]
        .header("idempotency-key")
        .expect("Idempotency-Key");
    for r in &requests {
        assert_eq!(
            r.header("idempotency-key"),
            Some(key),
            "the retried batch changed"
        );
    }
    let stored = server.stored_seqs(&component).await;
    assert_eq!(requests[3].seqs(), stored, "the accepted batch");
}

/// A failed batch is sent again as it was, never followed by the batch after
/// it: the loop reads the next batch while one is published, and must drop
/// that read when the publish fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_retried_before_the_batches_after_it() {
    let receiver = WebhookReceiver::start().await;
    // Every second request is refused.
    receiver.set_handler(|_, i| {
        if i % 2 == 1 {
            Reply::status(503).header("Retry-After", "0")
        } else {
            Reply::ok()
        }
    });
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = start(&db, &dir, &[("hook", &receiver)]).await;
    let component = unique("retry-ahead");
    // One report, committed at once: three full batches of 1,000 (a partial
    // batch would wait and be read again, hiding a wrong read-ahead).
    report_n(&server, &component, "retry_ahead_value", 3_000).await;

    let done = wait_lag_zero(&server, "hook", WAIT).await;
    assert_eq!(done["delivered"], 3_000, "{done:#}");
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        5,
        "3 accepted batches, 2 refused between them"
    );
    // Requests 1 and 3 were refused; 2 and 4 are their retries.
    for refused in [1, 3] {
        assert_eq!(
            requests[refused].seqs(),
            requests[refused + 1].seqs(),
            "the retry sent another batch"
        );
    }
    let accepted: Vec<i64> = requests.iter().step_by(2).flat_map(|r| r.seqs()).collect();
    assert_eq!(
        accepted,
        server.stored_seqs(&component).await,
        "accepted batches, in order, are the log"
    );
}

// ---------------------------------------------------------------------------
// (3) dead letters
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_rejections_go_to_dead_letters() {
    let receiver = WebhookReceiver::start().await;
    // Refuses every sample labelled bad=yes; accepts the rest.
    receiver.set_handler(|req, _| {
        let rejected: Vec<Value> = req
            .samples()
            .iter()
            .filter(|s| s["labels"]["bad"] == "yes")
            .map(|s| json!({"seq": s["seq"], "reason": "mapping conflict"}))
            .collect();
        if rejected.is_empty() {
            Reply::ok()
        } else {
            Reply::status(400).json(&json!({ "rejected": rejected }))
        }
    });
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = start(&db, &dir, &[("hook", &receiver)]).await;
    let component = unique("dead");
    server
        .report_ok(&report(
            &component,
            (0..30).map(|i| {
                gauge("dead_value", i as f64).label("bad", if i % 6 == 0 { "yes" } else { "no" })
            }),
        ))
        .await;

    let p = wait_lag_zero(&server, "hook", WAIT).await;
    assert_eq!(p["dead_lettered"], 5, "{p:#}");
    assert_eq!(p["delivered"], 25, "{p:#}");
    assert_eq!(p["last_error"], Value::Null, "{p:#}");

    let bad: Vec<Value> = server
        .query_all(&[("component_name", component.as_str()), ("label", "bad=yes")])
        .await;
    let bad_seqs: Vec<i64> = bad
        .iter()
        .map(|s| s["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(bad_seqs.len(), 5);
    let stored = server.stored_seqs(&component).await;
    assert_eq!(
        p["cursor_seq"],
        *stored.last().expect("stored"),
        "the cursor moved past the rejected items: {p:#}"
    );

    let (status, page) =
        status_json(server.get("/api/v2/publishers/hook/dead-letters").await).await;
    assert_eq!(status, 200, "{page:#}");
    let letters = page["dead_letters"].as_array().expect("dead_letters");
    let seqs: Vec<i64> = letters
        .iter()
        .map(|d| d["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, bad_seqs, "{page:#}");
    assert_eq!(page["next_after"], Value::Null, "{page:#}");
    for (d, sample) in letters.iter().zip(&bad) {
        assert_eq!(d["reason"], "mapping conflict", "{d:#}");
        assert!(d["id"].is_i64(), "{d:#}");
        assert!(d["created_at"].is_string(), "{d:#}");
        let item = &d["item"];
        assert_eq!(item["seq"], d["seq"], "{d:#}");
        assert_eq!(item["component"], component.as_str(), "{d:#}");
        assert_eq!(item["name"], "dead_value", "{d:#}");
        assert_eq!(item["kind"], "gauge", "{d:#}");
        assert_eq!(item["value"], sample["metric_value"], "{d:#}");
        assert_eq!(item["labels"]["bad"], "yes", "{d:#}");
    }

    // Paging.
    let (_, first) = status_json(
        server
            .get("/api/v2/publishers/hook/dead-letters?limit=2")
            .await,
    )
    .await;
    assert_eq!(
        first["dead_letters"].as_array().map(Vec::len),
        Some(2),
        "{first:#}"
    );
    let after = first["next_after"].as_i64().expect("next_after");
    let (_, rest) = status_json(
        server
            .get(&format!(
                "/api/v2/publishers/hook/dead-letters?after={after}&limit=10"
            ))
            .await,
    )
    .await;
    let rest_seqs: Vec<i64> = rest["dead_letters"]
        .as_array()
        .expect("dead_letters")
        .iter()
        .map(|d| d["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(rest_seqs, bad_seqs[2..], "{rest:#}");

    // The receiver got every good sample.
    let accepted: BTreeSet<i64> = receiver
        .requests()
        .iter()
        .flat_map(|r| r.seqs())
        .filter(|s| !bad_seqs.contains(s))
        .collect();
    let good: BTreeSet<i64> = stored
        .iter()
        .copied()
        .filter(|s| !bad_seqs.contains(s))
        .collect();
    assert_eq!(accepted, good);
    let (status, _) = status_json(server.get("/api/v2/publishers/Bad!/dead-letters").await).await;
    assert_eq!(status, 400);
}

// ---------------------------------------------------------------------------
// (4) permanent errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_holds_data_back_without_dropping_it() {
    let receiver = WebhookReceiver::start().await;
    let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let r = refusing.clone();
    receiver.set_handler(move |_, _| {
        if r.load(Ordering::SeqCst) {
            Reply::status(401).json(&json!({"error": "bad credentials"}))
        } else {
            Reply::ok()
        }
    });
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = start(&db, &dir, &[("hook", &receiver)]).await;
    let component = unique("perm");
    report_n(&server, &component, "perm_value", 20).await;

    let failing = server
        .wait_publisher("hook", WAIT, "a permanent error", |p| {
            p["last_error"].is_string()
        })
        .await;
    let error = failing["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("permanent:") && error.contains("401"),
        "{failing:#}"
    );
    assert_eq!(failing["lag"], 20, "{failing:#}");
    assert_eq!(failing["delivered"], 0, "{failing:#}");
    assert_eq!(failing["dead_lettered"], 0, "{failing:#}");
    let (status, page) =
        status_json(server.get("/api/v2/publishers/hook/dead-letters").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["dead_letters"],
        json!([]),
        "nothing is dead-lettered: {page:#}"
    );

    // The permanent backoff is long (30 s ± 20 %); the receiver recovers and
    // the held-back samples arrive at the next attempt.
    let waiting = server
        .wait_publisher("hook", WAIT, "backing off", |p| p["state"] == "backing_off")
        .await;
    let next_ms = waiting["next_attempt_in_ms"]
        .as_u64()
        .expect("next_attempt_in_ms");
    assert!(next_ms <= 36_000, "{waiting:#}");
    // Readiness reports the failing queue without taking the replica out.
    let (status, ready) = status_json(server.get("/api/v2/ready").await).await;
    assert_eq!(status, 200, "{ready:#}");
    let queues = &ready["checks"]["delivery_queues"];
    assert_eq!(queues["ok"], false, "{ready:#}");
    assert_eq!(queues["critical"], false, "{ready:#}");
    assert!(
        queues["error"].as_str().is_some_and(|e| e.contains("hook")),
        "{ready:#}"
    );
    assert_eq!(queues["detail"]["hook"]["lag"], 20, "{ready:#}");
    refusing.store(false, Ordering::SeqCst);
    let done = wait_lag_zero(&server, "hook", Duration::from_millis(next_ms + 15_000)).await;
    assert_eq!(done["delivered"], 20, "{done:#}");
    assert_eq!(done["last_error"], Value::Null, "{done:#}");
    let (_, ready) = status_json(server.get("/api/v2/ready").await).await;
    let queues = &ready["checks"]["delivery_queues"];
    assert_eq!(queues["ok"], true, "{ready:#}");
    assert_eq!(queues["detail"]["hook"]["lag"], 0, "{ready:#}");
    let last = receiver.requests().last().cloned().expect("requests");
    assert_eq!(last.status, 200);
    assert_eq!(last.seqs(), server.stored_seqs(&component).await);
}

// ---------------------------------------------------------------------------
// (5) publishers side by side
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_deliver_side_by_side_each_at_its_own_pace() {
    let fast = WebhookReceiver::start().await;
    let slow = WebhookReceiver::start().await;
    slow.set_handler(|_, _| Reply::ok().delay(Duration::from_millis(200)));
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = start(&db, &dir, &[("fast", &fast), ("slow", &slow)]).await;
    let component = unique("pace");
    report_n(&server, &component, "pace_value", 10_000).await;

    // One report: a backlog of ten full batches for both at once. The fast
    // publisher drains while the slow one still has a backlog.
    let fast_done = wait_lag_zero(&server, "fast", Duration::from_secs(60)).await;
    let slow_then = server.publisher("slow").await.expect("slow");
    assert!(
        slow_then["lag"].as_i64().unwrap_or(0) > 0,
        "the slow publisher was as quick as the fast one: fast {fast_done:#} slow {slow_then:#}"
    );
    let slow_done = wait_lag_zero(&server, "slow", Duration::from_secs(60)).await;
    assert_eq!(fast_done["delivered"], 10_000);
    assert_eq!(slow_done["delivered"], 10_000);

    let stored: Vec<i64> = server.stored_seqs(&component).await;
    assert_eq!(stored.len(), 10_000);
    for (name, receiver) in [("fast", &fast), ("slow", &slow)] {
        let requests = receiver.requests();
        let counts = seq_counts(&requests);
        assert!(counts.values().all(|n| *n == 1), "{name}: duplicates");
        assert_eq!(
            counts.keys().copied().collect::<Vec<_>>(),
            stored,
            "{name}: not every sample arrived"
        );
        assert!(
            requests.iter().all(|r| r.seqs().len() <= 1000),
            "{name}: a batch above 1000 items"
        );
    }
}
