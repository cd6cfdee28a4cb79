//! Lifecycle and custom events (`POST` / `GET /api/v2/events`) over SQLite and
//! PostgreSQL: a RHAPSODY/AsyncFlow run posted in every body shape and read
//! back through every filter and page size; idempotent retries (also
//! concurrent ones); bad bodies and over-limit bodies that store nothing;
//! query errors; the ingest counter; token scopes.

use std::collections::BTreeSet;

use vigil_tests::*;

const EVENTS: &str = "/api/v2/events";
/// Start of the recorded run, in unix seconds: two hours ago on a whole
/// minute, so that every event time is inside the server's default 24 h
/// retention (older events are deleted within a minute) and exact in `f64`.
fn t0() -> f64 {
    static T0: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let now = chrono::Utc::now().timestamp();
        (now - now % 60 - 2 * 3600) as f64
    })
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_else(|| panic!("time {ms} out of range"))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds of an `event_time` the test sent (unix seconds or RFC 3339).
fn time_ms(v: &Value) -> i64 {
    match v {
        Value::Number(n) => (n.as_f64().expect("finite") * 1000.0).round() as i64,
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("test sent a bad time {s:?}: {e}"))
            .timestamp_millis(),
        other => panic!("test sent event_time {other}"),
    }
}

/// `secs` as RFC 3339 with a `+02:00` offset (a worker not on UTC).
fn rfc3339_plus2(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).expect("time");
    let offset = chrono::FixedOffset::east_opt(2 * 3600).expect("offset");
    t.with_timezone(&offset)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// What the listing must show for `sent` stored as `seq`: its log envelope
/// (`seq`, `event_id`; `received_at` is checked apart) around the event
/// exactly as it was sent.
fn stored_form(sent: &Value, seq: i64) -> Value {
    json!({"seq": seq, "event_id": sent["event_id"], "event": sent})
}

async fn post_events(server: &TestServer, body: &Value) -> (u16, Value) {
    status_json(server.post_json(EVENTS, body).await).await
}

/// POSTs `body` and asserts `200` with `n` new events and no duplicates;
/// returns their seqs (increasing in body order).
async fn post_new(server: &TestServer, body: &Value, n: usize) -> Vec<i64> {
    let (status, json) = post_events(server, body).await;
    assert_eq!(status, 200, "POST {body}: {json}");
    assert_eq!(json["accepted"], json!(n), "accepted: {json}");
    assert_eq!(json["duplicates"], json!(0), "duplicates: {json}");
    let seqs: Vec<i64> = json["seqs"]
        .as_array()
        .unwrap_or_else(|| panic!("no seqs array: {json}"))
        .iter()
        .map(|s| {
            s.as_i64()
                .unwrap_or_else(|| panic!("seq {s} of a new event: {json}"))
        })
        .collect();
    assert_eq!(seqs.len(), n, "one seq per event: {json}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs not increasing in body order: {json}"
    );
    seqs
}

/// POSTs `body` and asserts `200` with the given `seqs` pattern: `true` for
/// an event that must be new, `false` for one that must be a duplicate.
/// Returns the seqs of the new ones.
async fn post_mixed(server: &TestServer, body: &Value, new: &[bool]) -> Vec<i64> {
    let (status, json) = post_events(server, body).await;
    assert_eq!(status, 200, "POST {body}: {json}");
    let want_new = new.iter().filter(|n| **n).count();
    assert_eq!(json["accepted"], json!(want_new), "accepted: {json}");
    assert_eq!(
        json["duplicates"],
        json!(new.len() - want_new),
        "duplicates: {json}"
    );
    let seqs = json["seqs"]
        .as_array()
        .unwrap_or_else(|| panic!("no seqs array: {json}"));
    assert_eq!(seqs.len(), new.len(), "one seq per event: {json}");
    let mut out = Vec::new();
    for (i, (s, n)) in seqs.iter().zip(new).enumerate() {
        if *n {
            out.push(
                s.as_i64()
                    .unwrap_or_else(|| panic!("event {i} is new but has seq {s}: {json}")),
            );
        } else {
            assert!(
                s.is_null(),
                "event {i} is a duplicate but has seq {s}: {json}"
            );
        }
    }
    out
}

async fn get_events(server: &TestServer, params: &[(&str, &str)]) -> reqwest::Response {
    server
        .client()
        .get(server.url(EVENTS))
        .query(params)
        .send()
        .await
        .expect("GET /api/v2/events")
}

/// One page; asserts 200 and the page shape.
async fn page(server: &TestServer, params: &[(&str, &str)]) -> Value {
    let (status, json) = status_json(get_events(server, params).await).await;
    assert_eq!(status, 200, "GET {EVENTS} {params:?}: {json}");
    assert!(json["events"].is_array(), "events array: {json}");
    assert!(
        json["next_cursor"].is_null() || json["next_cursor"].is_string(),
        "next_cursor: {json}"
    );
    json
}

/// Every event matching `params`, in pages of `limit`, following
/// `next_cursor` to the end; checks each page's size and that seqs only grow.
async fn list_all(server: &TestServer, params: &[(&str, &str)], limit: usize) -> Vec<Value> {
    let limit_s = limit.to_string();
    let mut out: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let next = {
            let mut p = params.to_vec();
            p.push(("limit", limit_s.as_str()));
            if let Some(c) = &cursor {
                p.push(("cursor", c.as_str()));
            }
            let pg = page(server, &p).await;
            let events = pg["events"].as_array().expect("events").clone();
            assert!(
                events.len() <= limit,
                "{} events in a page of limit {limit}: {pg}",
                events.len()
            );
            let next = pg["next_cursor"].as_str().map(String::from);
            if next.is_some() {
                assert!(!events.is_empty(), "a cursor after an empty page: {p:?}");
            }
            out.extend(events);
            next
        };
        match next {
            Some(c) => cursor = Some(c),
            None => {
                let seqs: Vec<i64> = out
                    .iter()
                    .map(|e| e["seq"].as_i64().unwrap_or_else(|| panic!("seq of {e}")))
                    .collect();
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "listing {params:?} (limit {limit}) not in strictly increasing seq order: {seqs:?}"
                );
                return out;
            }
        }
    }
    panic!("listing {params:?} did not end after 1000 pages");
}

/// Every stored event in one request.
async fn everything(server: &TestServer) -> Vec<Value> {
    list_all(server, &[], 10_000).await
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

/// Asserts `got` is exactly `want`, in order, naming the first difference
/// (`received_at` must be an RFC 3339 time and is not compared).
fn assert_events(what: &str, got: &[Value], want: &[Value]) {
    assert_eq!(ids(got), ids(want), "{what}: event ids (in order) differ");
    let without_received = |v: &Value| {
        let mut v = v.clone();
        if let Some(received) = v.as_object_mut().and_then(|o| o.remove("received_at")) {
            parse_ts(&received);
        }
        v
    };
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            without_received(g),
            without_received(w),
            "{what}: event {} differs",
            w["event_id"]
        );
    }
}

/// `(index, field)` of every entry of an error's `details`, checking each has
/// a non-empty reason.
fn details(err: &Value) -> BTreeSet<(Option<u64>, String)> {
    err["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details array: {err}"))
        .iter()
        .map(|d| {
            assert!(
                d["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "detail without a reason: {d}"
            );
            (
                d["index"].as_u64(),
                d["field"]
                    .as_str()
                    .unwrap_or_else(|| panic!("detail without a field: {d}"))
                    .to_string(),
            )
        })
        .collect()
}

/// The reason of the detail with `index` and `field`.
fn reason<'a>(err: &'a Value, index: u64, field: &str) -> &'a str {
    err["details"]
        .as_array()
        .and_then(|ds| {
            ds.iter()
                .find(|d| d["index"] == json!(index) && d["field"] == field)
        })
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_else(|| panic!("no detail ({index}, {field}): {err}"))
}

// ---------------------------------------------------------------------------
// An AsyncFlow run
// ---------------------------------------------------------------------------

/// The five events of one AsyncFlow task inside a workflow scope.
fn task_events(
    session: &str,
    workflow: &str,
    task: &str,
    n: u64,
    base: f64,
    deps: &[&str],
) -> Vec<Value> {
    let id = |what: &str| format!("{session}/{task}/{what}");
    let scoped = |mut v: Value| {
        v["session_id"] = json!(session);
        v["asyncflow.workflow_id"] = json!(workflow);
        v["task_id"] = json!(task);
        v
    };
    vec![
        scoped(json!({
            "event_type": "TaskCreated", "event_id": id("created"), "event_time": base,
            "function": "etl.load_shard", "args": [n, format!("s3://bucket/shard-{n}")],
        })),
        scoped(json!({
            "event_type": "asyncflow.TaskResolved", "event_id": id("resolved"),
            "event_time": base + 0.25, "dependencies": deps, "resolved_in_ms": 3,
        })),
        scoped(json!({
            "event_type": "TaskSubmitted", "event_id": id("submitted"),
            "event_time": rfc3339_plus2(base + 0.5), "backend": "concurrent",
        })),
        scoped(json!({
            "event_type": "TaskStarted", "event_id": id("started"), "event_time": base + 1.0,
            "backend": "concurrent", "worker": format!("worker-{n}"),
        })),
        scoped(json!({
            "event_type": "TaskCompleted", "event_id": id("completed"),
            "event_time": base + 4.75, "backend": "concurrent", "duration_seconds": 3.75,
            "return_value": {"rows": 1000 * n, "path": format!("s3://bucket/out-{n}")},
            "exit_code": 0,
        })),
    ]
}

struct Run {
    session: String,
    session2: String,
    workflow: String,
    workflow2: String,
    events: Vec<Value>,
}

/// A session running three dependent tasks in a workflow, a data-quality
/// check of that workflow, and a second session whose task (same task id)
/// fails. Not every event time follows post order.
fn asyncflow_run() -> Run {
    let session = unique("session");
    let session2 = unique("session");
    let workflow = unique("etl_run");
    let workflow2 = unique("etl_run");
    let mut events = vec![json!({
        "event_type": "SessionStarted", "event_id": format!("{session}/started"),
        "event_time": t0(), "session_id": session, "backend": "concurrent",
        "hostname": "node-1", "pid": 4242, "rhapsody_version": "0.3.1",
    })];
    let tasks = ["task.000001", "task.000002", "task.000003"];
    for (i, task) in tasks.iter().enumerate() {
        events.extend(task_events(
            &session,
            &workflow,
            task,
            i as u64 + 1,
            t0() + 10.0 * (i as f64 + 1.0),
            &tasks[..i],
        ));
    }
    // Checked between task 1 and 2, reported after task 3.
    events.push(json!({
        "event_type": "myframework.DataQualityChecked",
        "event_id": format!("{session}/dq/1"),
        "event_time": fmt_ms(time_ms(&json!(t0() + 15.125))),
        "session_id": session, "workflow_id": workflow,
        "passed": true, "score": 0.97, "rows_checked": 120_000,
        "bytes_scanned": 9_007_199_254_740_993_u64, "drift": -0.015625,
        "checks": ["nulls", "ranges", {"name": "unique", "column": "id"}],
        "thresholds": {"null_fraction": 0.01, "strict": false},
        "note": null, "owner.team": "data-eng", "comment": "ünïcødé \"quoted\"\nline",
    }));
    events.push(json!({
        "event_type": "SessionStarted", "event_id": format!("{session2}/started"),
        "event_time": t0() + 80.0, "session_id": session2, "backend": "dask",
    }));
    events.push(json!({
        "event_type": "TaskCreated", "event_id": format!("{session2}/task.000001/created"),
        "event_time": t0() + 81.0, "session_id": session2,
        "asyncflow.workflow_id": workflow2, "task_id": "task.000001",
    }));
    events.push(json!({
        "event_type": "TaskFailed", "event_id": format!("{session2}/task.000001/failed"),
        "event_time": t0() + 82.5, "session_id": session2,
        "asyncflow.workflow_id": workflow2, "task_id": "task.000001", "backend": "dask",
        "error_type": "OOM", "error_message": "worker killed", "retryable": false,
    }));
    events.push(json!({
        "event_type": "SessionEnded", "event_id": format!("{session}/ended"),
        "event_time": rfc3339_plus2(t0() + 90.0), "session_id": session,
        "tasks_completed": 3,
    }));
    Run {
        session,
        session2,
        workflow,
        workflow2,
        events,
    }
}

type Pred = Box<dyn Fn(&Value, i64) -> bool>;

/// The workflow of a listed event as Vigil reads it: AsyncFlow's
/// `attributes["asyncflow.workflow_id"]`, else a top-level `workflow_id` or
/// `asyncflow.workflow_id`.
fn workflow_of(listed: &Value) -> Option<&str> {
    let e = &listed["event"];
    e["attributes"]["asyncflow.workflow_id"]
        .as_str()
        .or(e["workflow_id"].as_str())
        .or(e["asyncflow.workflow_id"].as_str())
}
/// A filter case: what it checks, its query parameters, which events it selects.
type FilterCase = (&'static str, Vec<(&'static str, String)>, Pred);

async fn an_asyncflow_run_round_trips_through_every_shape_filter_and_page(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let run = asyncflow_run();
    let sent = &run.events;
    assert_eq!(sent.len(), 21);

    // The three body shapes: one object, an array, {"events": [...]}.
    let mut seqs = post_new(&server, &sent[0], 1).await;
    seqs.extend(post_new(&server, &Value::Array(sent[1..11].to_vec()), 10).await);
    seqs.extend(post_new(&server, &json!({ "events": sent[11..] }), 10).await);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs across requests not increasing: {seqs:?}"
    );

    // (event time in ms, listing form) of each event, in post order.
    let expected: Vec<(i64, Value)> = sent
        .iter()
        .zip(&seqs)
        .map(|(e, s)| (time_ms(&e["event_time"]), stored_form(e, *s)))
        .collect();
    let all_want: Vec<Value> = expected.iter().map(|(_, v)| v.clone()).collect();

    // Everything, with the default page size: one page, no cursor.
    let first = page(&server, &[]).await;
    assert!(
        first["next_cursor"].is_null(),
        "21 events fit the default page: {first}"
    );
    assert_events(
        "default listing",
        first["events"].as_array().expect("events"),
        &all_want,
    );

    // Filters, each checked against the same filter applied to what was sent.
    let (s1, s2, w1, w2) = (
        run.session.clone(),
        run.session2.clone(),
        run.workflow.clone(),
        run.workflow2.clone(),
    );
    let start_ms = time_ms(&json!(t0() + 14.75));
    let end_ms = time_ms(&json!(t0() + 24.75));
    let start_rfc = fmt_ms(start_ms);
    let end_unix = format!("{}", t0() + 24.75);
    let after_unix = format!("{}", t0() + 30.0);
    let before_rfc = rfc3339_plus2(t0() + 10.25);
    let cases: Vec<FilterCase> = vec![
        (
            "several types",
            vec![(
                "event_type",
                "TaskCompleted,asyncflow.TaskResolved,myframework.DataQualityChecked".into(),
            )],
            Box::new(|e, _| {
                [
                    "TaskCompleted",
                    "asyncflow.TaskResolved",
                    "myframework.DataQualityChecked",
                ]
                .iter()
                .any(|t| e["event"]["event_type"] == *t)
            }),
        ),
        (
            "one core type",
            vec![("event_type", "TaskFailed".into())],
            Box::new(|e, _| e["event"]["event_type"] == "TaskFailed"),
        ),
        (
            "one custom type",
            vec![("event_type", "myframework.DataQualityChecked".into())],
            Box::new(|e, _| e["event"]["event_type"] == "myframework.DataQualityChecked"),
        ),
        ("session 1", vec![("session_id", s1.clone())], {
            let s = s1.clone();
            Box::new(move |e, _| e["event"]["session_id"] == s.as_str())
        }),
        ("session 2", vec![("session_id", s2.clone())], {
            let s = s2.clone();
            Box::new(move |e, _| e["event"]["session_id"] == s.as_str())
        }),
        (
            "workflow 1 (scoped and plain)",
            vec![("workflow_id", w1.clone())],
            {
                let w = w1.clone();
                Box::new(move |e, _| workflow_of(e) == Some(w.as_str()))
            },
        ),
        ("workflow 2", vec![("workflow_id", w2.clone())], {
            let w = w2.clone();
            Box::new(move |e, _| workflow_of(e) == Some(w.as_str()))
        }),
        (
            "one task id, both sessions",
            vec![("task_id", "task.000001".into())],
            Box::new(|e, _| e["event"]["task_id"] == "task.000001"),
        ),
        (
            "one task of one session",
            vec![
                ("task_id", "task.000001".into()),
                ("session_id", s1.clone()),
            ],
            {
                let s = s1.clone();
                Box::new(move |e, _| {
                    e["event"]["task_id"] == "task.000001" && e["event"]["session_id"] == s.as_str()
                })
            },
        ),
        (
            "type within a workflow",
            vec![
                ("workflow_id", w1.clone()),
                ("event_type", "TaskStarted,TaskCompleted".into()),
            ],
            {
                let w = w1.clone();
                Box::new(move |e, _| {
                    workflow_of(e) == Some(w.as_str())
                        && (e["event"]["event_type"] == "TaskStarted"
                            || e["event"]["event_type"] == "TaskCompleted")
                })
            },
        ),
        (
            "time range [start, end) in RFC 3339 and unix seconds",
            vec![("start", start_rfc.clone()), ("end", end_unix.clone())],
            Box::new(move |_, t| start_ms <= t && t < end_ms),
        ),
        (
            "start only",
            vec![("start", after_unix.clone())],
            Box::new(|_, t| t >= time_ms(&json!(t0() + 30.0))),
        ),
        (
            "end only, with an offset",
            vec![("end", before_rfc.clone())],
            Box::new(|_, t| t < time_ms(&json!(t0() + 10.25))),
        ),
        (
            "time range and session",
            vec![
                ("start", fmt_ms(time_ms(&json!(t0() + 30.0)))),
                ("end", fmt_ms(time_ms(&json!(t0() + 85.0)))),
                ("session_id", s2.clone()),
            ],
            {
                let s = s2.clone();
                Box::new(move |e, t| {
                    e["event"]["session_id"] == s.as_str()
                        && t >= time_ms(&json!(t0() + 30.0))
                        && t < time_ms(&json!(t0() + 85.0))
                })
            },
        ),
    ];
    for (what, params, pred) in &cases {
        let want: Vec<Value> = expected
            .iter()
            .filter(|(t, e)| pred(e, *t))
            .map(|(_, e)| e.clone())
            .collect();
        assert!(
            !want.is_empty() && want.len() < all_want.len(),
            "test data: filter {what} should select some but not all events ({})",
            want.len()
        );
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = page(&server, &p).await;
        assert!(got["next_cursor"].is_null(), "{what}: {got}");
        assert_events(what, got["events"].as_array().expect("events"), &want);
        // The same filter in pages of 2.
        let paged = list_all(&server, &p, 2).await;
        assert_events(&format!("{what}, pages of 2"), &paged, &want);
    }

    // Filters that match nothing.
    for p in [
        vec![("workflow_id", "no-such-workflow")],
        vec![("session_id", s2.as_str()), ("workflow_id", w1.as_str())],
        vec![("event_type", "TaskQueued")],
        vec![("start", "2150-01-01T00:00:00Z")],
    ] {
        let got = page(&server, &p).await;
        assert_eq!(got["events"], json!([]), "{p:?}: {got}");
        assert!(got["next_cursor"].is_null(), "{p:?}: {got}");
    }

    // Paging over everything visits every event exactly once, in order.
    for limit in [1, 2, 5, 20, 21, 22] {
        let got = list_all(&server, &[], limit).await;
        assert_events(&format!("pages of {limit}"), &got, &all_want);
    }
    // A page in the middle: limit 5 after the cursor of the first page.
    let p1 = page(&server, &[("limit", "5")]).await;
    let cursor = p1["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a full first page has a cursor: {p1}"))
        .to_string();
    let p2 = page(&server, &[("limit", "5"), ("cursor", cursor.as_str())]).await;
    assert_events(
        "second page of 5",
        p2["events"].as_array().expect("events"),
        &all_want[5..10],
    );
}

async fn missing_ids_and_times_are_filled_in(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let before = chrono::Utc::now().timestamp_millis();
    let seqs = post_new(
        &server,
        &json!([
            {"event_type": "TaskQueued", "task_id": "task.000007", "queue": "gpu"},
            {"event_type": "TaskQueued", "task_id": "task.000007", "queue": "gpu"},
            {"event_type": "ResourceUpdate", "task_id": 42, "event_id": 9001, "cpus": 4},
        ]),
        3,
    )
    .await;
    let after = chrono::Utc::now().timestamp_millis();
    let all = everything(&server).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let got_seqs: Vec<i64> = all
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(got_seqs, seqs);
    let generated: Vec<&str> = all[..2]
        .iter()
        .map(|e| e["event_id"].as_str().expect("a generated event_id"))
        .collect();
    assert!(
        generated.iter().all(|id| !id.is_empty()) && generated[0] != generated[1],
        "two events without ids get two distinct ids: {generated:?}"
    );
    for e in &all[..2] {
        assert!(
            e["event"].get("event_time").is_none() && e["event"].get("event_id").is_none(),
            "the event is kept as sent, without the fields the server filled in: {e}"
        );
        assert_eq!(e["event"]["queue"], "gpu", "{e}");
        assert_eq!(e["event"]["task_id"], "task.000007", "{e}");
    }
    // An event without event_time is filed under its receive time.
    let around = page(
        &server,
        &[
            ("start", &format!("{}", (before - 1000) as f64 / 1000.0)),
            ("end", &format!("{}", (after + 1000) as f64 / 1000.0)),
            ("event_type", "TaskQueued"),
        ],
    )
    .await;
    assert_eq!(
        around["events"].as_array().map(Vec::len),
        Some(2),
        "{around}"
    );
    // Numeric ids are kept as sent, and indexed by their decimal text.
    assert_eq!(all[2]["event"]["task_id"], 42, "{}", all[2]);
    assert_eq!(all[2]["event_id"], "9001", "{}", all[2]);
    assert_eq!(all[2]["event"]["event_id"], 9001, "{}", all[2]);
    assert_eq!(all[2]["event"]["cpus"], 4, "{}", all[2]);
    let by_task = page(&server, &[("task_id", "42")]).await;
    assert_events(
        "numeric task id",
        by_task["events"].as_array().expect("events"),
        &all[2..],
    );
}

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

async fn re_posted_events_are_duplicates_and_store_nothing_new(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let run = asyncflow_run();
    let batch: Vec<Value> = run.events[1..5].to_vec();
    let seqs = post_new(&server, &Value::Array(batch.clone()), 4).await;
    let stored = everything(&server).await;
    let want: Vec<Value> = batch
        .iter()
        .zip(&seqs)
        .map(|(e, s)| stored_form(e, *s))
        .collect();
    assert_events("first post", &stored, &want);

    // A client retry, in every body shape: all duplicates, nothing new.
    post_mixed(&server, &Value::Array(batch.clone()), &[false; 4]).await;
    post_mixed(&server, &json!({ "events": batch }), &[false; 4]).await;
    post_mixed(&server, &batch[2], &[false]).await;
    assert_events("after retries", &everything(&server).await, &want);

    // The same event_id with different content is a duplicate as well, and
    // the stored event stays as it was first sent.
    let mut changed = batch[1].clone();
    changed["event_type"] = json!("TaskFailed");
    changed["error_type"] = json!("changed");
    changed["event_time"] = json!(t0() + 500.0);
    post_mixed(&server, &changed, &[false]).await;
    assert_events("after a changed re-post", &everything(&server).await, &want);

    // Old and new mixed: only the new one is stored, after everything else.
    let fresh = json!({
        "event_type": "TaskCanceled", "event_id": "cancel-1", "event_time": t0() + 40.0,
        "task_id": "task.000009", "reason": "user",
    });
    let new_seqs = post_mixed(
        &server,
        &json!([batch[0], fresh, batch[3]]),
        &[false, true, false],
    )
    .await;
    assert!(
        new_seqs[0] > *seqs.last().expect("seqs"),
        "a new event comes after the stored ones: {new_seqs:?} vs {seqs:?}"
    );
    let mut want = want;
    want.push(stored_form(&fresh, new_seqs[0]));
    assert_events("after a mixed post", &everything(&server).await, &want);

    // Concurrent retries of one new body: stored once.
    let body = json!([
        {"event_type": "TaskCreated", "event_id": "race-1", "event_time": t0() + 50.0, "task_id": "r1"},
        {"event_type": "TaskCreated", "event_id": "race-2", "event_time": t0() + 50.0, "task_id": "r2"},
        {"event_type": "asyncflow.TaskResolved", "event_id": "race-3", "event_time": t0() + 50.5, "task_id": "r1"},
    ]);
    let results = futures::future::join_all((0..6).map(|_| post_events(&server, &body))).await;
    let mut accepted = 0;
    let mut duplicates = 0;
    let mut seqs_seen: Vec<i64> = Vec::new();
    for (status, json) in &results {
        assert_eq!(*status, 200, "concurrent retry: {json}");
        accepted += json["accepted"].as_u64().expect("accepted");
        duplicates += json["duplicates"].as_u64().expect("duplicates");
        seqs_seen.extend(
            json["seqs"]
                .as_array()
                .expect("seqs")
                .iter()
                .filter_map(Value::as_i64),
        );
    }
    assert_eq!((accepted, duplicates), (3, 15), "{results:?}");
    seqs_seen.sort_unstable();
    let all = everything(&server).await;
    assert_eq!(all.len(), want.len() + 3, "{all:?}");
    let raced: Vec<i64> = all[want.len()..]
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        raced, seqs_seen,
        "the seqs the winners got are the stored ones"
    );
    assert_eq!(
        ids(&all[want.len()..]),
        vec!["race-1", "race-2", "race-3"],
        "stored once, in body order"
    );
    assert_events("before the race", &all[..want.len()], &want);
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

struct Fixture {
    _db: TestDatabase,
    server: TestServer,
    baseline: Vec<Value>,
}

impl Fixture {
    /// A server with `args` holding two good events.
    async fn new(backend: &Backend, args: &[&str]) -> Fixture {
        let db = TestDatabase::new(backend).await;
        let server = TestServer::builder(&db)
            .args(args.iter().copied())
            .start()
            .await;
        post_new(
            &server,
            &json!([
                {"event_type": "SessionStarted", "event_id": "base-1", "event_time": t0(), "session_id": "s"},
                {"event_type": "TaskCreated", "event_id": "base-2", "event_time": t0() + 1.0,
                 "session_id": "s", "task_id": "t", "size": 3},
            ]),
            2,
        )
        .await;
        let baseline = everything(&server).await;
        assert_eq!(ids(&baseline), vec!["base-1", "base-2"]);
        Fixture {
            _db: db,
            server,
            baseline,
        }
    }

    async fn assert_unchanged(&self, what: &str) {
        assert_events(
            &format!("after {what}"),
            &everything(&self.server).await,
            &self.baseline,
        );
    }

    /// POSTs a raw body, expects `status` and `code`, checks nothing was
    /// stored; returns the error object.
    async fn rejects_raw(&self, what: &str, body: &str, status: u16, code: &str) -> Value {
        let resp = self.server.post_raw(EVENTS, body.to_string()).await;
        let (got, json) = status_json(resp).await;
        assert_eq!(got, status, "{what}: {json}\nbody: {body:.300}");
        assert_eq!(json["error"]["code"], code, "{what}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: error.message missing: {json}"
        );
        self.assert_unchanged(what).await;
        json["error"].clone()
    }

    async fn rejects(&self, what: &str, body: &Value, status: u16, code: &str) -> Value {
        self.rejects_raw(what, &body.to_string(), status, code)
            .await
    }
}

/// A body with valid and invalid events; (index, field) of each bad one.
fn mixed_body() -> (Vec<Value>, BTreeSet<(Option<u64>, String)>) {
    let events = vec![
        json!({"event_type": "TaskCreated", "event_id": "ok-0", "task_id": "t0", "event_time": t0()}),
        json!({"event_type": "Checkpoint", "event_id": "bad-1"}),
        json!({"event_id": "bad-2", "task_id": "t2"}),
        json!({"event_type": "TaskStarted", "event_id": "bad-3", "event_time": "yesterday"}),
        json!({"event_type": "TaskStarted", "event_id": "bad-4", "task_id": {"x": 1}}),
        json!({"event_type": "TaskCompleted", "event_id": "ok-5", "event_time": t0() + 1.0}),
        json!({"event_type": "TaskFailed", "event_id": "ok-5", "event_time": t0() + 2.0}),
        // A field named `seq` is the event's own: kept as sent.
        json!({"event_type": "TaskStarted", "event_id": "ok-7", "seq": 4}),
        json!({"event_type": "myframework.DataQualityChecked", "event_id": "ok-8", "passed": true}),
        json!("TaskCreated"),
        json!({"event_type": 7, "event_id": "bad-10"}),
        json!({"event_type": "NoNamespace", "event_id": "bad-11"}),
    ];
    let bad = [
        (1, "event_type"),
        (2, "event_type"),
        (3, "event_time"),
        (4, "task_id"),
        (6, "event_id"),
        (9, ""),
        (10, "event_type"),
        (11, "event_type"),
    ]
    .into_iter()
    .map(|(i, f)| (Some(i), f.to_string()))
    .collect();
    (events, bad)
}

async fn invalid_events_are_all_listed_and_nothing_is_stored(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let (events, bad) = mixed_body();
    for (shape, body) in [
        ("array", Value::Array(events.clone())),
        ("wrapped", json!({ "events": events })),
    ] {
        let err = f
            .rejects(
                &format!("a mixed {shape} body"),
                &body,
                400,
                "invalid_report",
            )
            .await;
        assert_eq!(details(&err), bad, "{shape}: {err}");
        assert!(
            reason(&err, 1, "event_type").contains("Checkpoint")
                && reason(&err, 1, "event_type").contains("namespace"),
            "a non-namespaced type is named and the fix suggested: {err}"
        );
        assert!(
            reason(&err, 6, "event_id").contains("ok-5"),
            "a repeated event_id is named: {err}"
        );
    }
    // One bad single event.
    let err = f
        .rejects(
            "a single event of an unnamespaced custom type",
            &json!({"event_type": "Checkpointed", "seq": 1}),
            400,
            "invalid_report",
        )
        .await;
    assert_eq!(
        details(&err),
        BTreeSet::from([(Some(0), "event_type".to_string())])
    );

    // Malformed JSON.
    let good = Value::Array(vec![events[0].clone(), events[5].clone()]).to_string();
    for body in [
        "{not json",
        "",
        "[{\"event_type\": \"TaskCreated\"},]",
        &good[..good.len() - 1],
    ] {
        f.rejects_raw(&format!("malformed {body:?}"), body, 400, "malformed_json")
            .await;
    }
    // No events, or not events at all.
    for body in [
        "[]",
        "{\"events\": []}",
        "42",
        "\"TaskCreated\"",
        "null",
        "true",
        "{\"events\": 1}",
        "{\"events\": {\"event_type\": \"TaskCreated\"}}",
    ] {
        let err = f
            .rejects_raw(&format!("body {body}"), body, 400, "invalid_report")
            .await;
        let d = details(&err);
        assert!(
            !d.is_empty() && d.iter().all(|(index, _)| index.is_none()),
            "{body}: a problem of the whole body has no index: {err}"
        );
    }
    // Items that are not objects are listed by index.
    let err = f
        .rejects_raw("non-object items", "[1, [], null]", 400, "invalid_report")
        .await;
    assert_eq!(
        details(&err),
        BTreeSet::from([
            (Some(0), String::new()),
            (Some(1), String::new()),
            (Some(2), String::new()),
        ]),
        "{err}"
    );

    // The valid events of the refused body were not stored: posted alone,
    // they are all new.
    let valid = json!([events[0], events[5], events[8]]);
    post_new(&f.server, &valid, 3).await;
    assert_eq!(
        ids(&everything(&f.server).await),
        vec!["base-1", "base-2", "ok-0", "ok-5", "ok-8"]
    );
}

/// `{"event_type":"TaskCreated","event_id":ID,"blob":"xx…"}` of exactly `len` bytes.
fn body_of_len(id: &str, len: usize) -> String {
    let head = format!(r#"{{"event_type":"TaskCreated","event_id":"{id}","blob":""#);
    let tail = r#""}"#;
    let body = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(body.len(), len);
    body
}

async fn bodies_over_the_limits_are_refused_whole(backend: Backend) {
    let f = Fixture::new(
        &backend,
        &["--max-items-per-request", "5", "--max-body-bytes", "4096"],
    )
    .await;
    let six: Vec<Value> = (0..6)
        .map(|i| {
            json!({"event_type": "TaskCreated", "event_id": format!("many-{i}"),
                   "event_time": t0() + f64::from(i), "task_id": format!("t{i}")})
        })
        .collect();
    f.rejects(
        "six events",
        &Value::Array(six.clone()),
        413,
        "payload_too_large",
    )
    .await;
    f.rejects(
        "six wrapped events",
        &json!({ "events": six }),
        413,
        "payload_too_large",
    )
    .await;
    f.rejects_raw(
        "a body one byte over --max-body-bytes",
        &body_of_len("big-1", 4097),
        413,
        "payload_too_large",
    )
    .await;
    f.rejects_raw(
        "a body far over --max-body-bytes",
        &body_of_len("big-2", 64 * 1024),
        413,
        "payload_too_large",
    )
    .await;
    // At the limits, everything is accepted (so none of the above was stored).
    post_new(&f.server, &Value::Array(six[..5].to_vec()), 5).await;
    let at_limit = body_of_len("big-1", 4096);
    let blob = serde_json::from_str::<Value>(&at_limit).expect("json")["blob"].clone();
    let (status, json) = status_json(f.server.post_raw(EVENTS, at_limit).await).await;
    assert_eq!(status, 200, "a body of exactly --max-body-bytes: {json}");
    assert_eq!(json["accepted"], 1, "{json}");
    let all = everything(&f.server).await;
    assert_eq!(
        ids(&all),
        vec!["base-1", "base-2", "many-0", "many-1", "many-2", "many-3", "many-4", "big-1"]
    );
    assert_eq!(all[7]["event"]["blob"], blob, "the blob is stored whole");
}

// ---------------------------------------------------------------------------
// Query errors
// ---------------------------------------------------------------------------

async fn bad_queries_are_refused_naming_the_parameter(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let run = asyncflow_run();
    post_new(&server, &Value::Array(run.events.clone()), run.events.len()).await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("event_type", "Checkpoint")], "event_type"),
        (&[("event_type", "TaskCompleted,nodot")], "event_type"),
        (&[("event_type", "taskcompleted")], "event_type"),
        (&[("limit", "0")], "limit"),
        (&[("limit", "10001")], "limit"),
        (&[("limit", "-5")], "limit"),
        (&[("limit", "ten")], "limit"),
        (&[("limit", "2.5")], "limit"),
        (&[("limit", "")], "limit"),
        (&[("cursor", "abc")], "cursor"),
        (&[("cursor", "-1")], "cursor"),
        (&[("start", "soon")], "start"),
        (&[("end", "yesterday")], "end"),
        (&[("since", "nope")], "since"),
        (&[("until", "2025-13-45T00:00:00Z")], "until"),
        (
            &[
                ("start", "2025-01-02T00:00:00Z"),
                ("end", "2025-01-01T00:00:00Z"),
            ],
            "start",
        ),
        (&[("start", "1760000000"), ("end", "1760000000")], "start"),
        (&[("colour", "red")], "colour"),
        (&[("sessionid", "x")], "sessionid"),
        (&[("session_id", "x"), ("offset", "10")], "offset"),
    ];
    for (params, name) in cases {
        let (status, body) = status_json(get_events(&server, params).await).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        let err = body["error"].clone();
        assert_eq!(err["code"], "invalid_query", "{params:?}: {body}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(name),
            "{params:?}: the message should name `{name}`: {message}"
        );
    }
    // The same parameters with good values are answered.
    let all = everything(&server).await;
    assert_eq!(all.len(), run.events.len());
    let last_seq = all.last().and_then(|e| e["seq"].as_i64()).expect("seq");
    let count = |pred: &dyn Fn(&Value) -> bool| run.events.iter().filter(|e| pred(e)).count();
    let completed_or_resolved = count(&|e| {
        e["event_type"] == "TaskCompleted" || e["event_type"] == "asyncflow.TaskResolved"
    });
    let in_first_second = count(&|e| {
        let t = time_ms(&e["event_time"]);
        time_ms(&json!(t0())) <= t && t < time_ms(&json!(t0() + 1.0))
    });
    assert!(completed_or_resolved > 1 && in_first_second >= 1);
    for (params, want) in [
        (vec![("limit", "1".to_string())], 1),
        (vec![("limit", "10000".to_string())], all.len()),
        (vec![("cursor", "0".to_string())], all.len()),
        (vec![("cursor", last_seq.to_string())], 0),
        (
            vec![(
                "event_type",
                " TaskCompleted , asyncflow.TaskResolved ".to_string(),
            )],
            completed_or_resolved,
        ),
        (
            vec![
                ("since", fmt_ms(time_ms(&json!(t0())))),
                ("until", format!("{}", t0() + 1.0)),
            ],
            in_first_second,
        ),
    ] {
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = page(&server, &p).await;
        assert_eq!(
            got["events"].as_array().map(Vec::len),
            Some(want),
            "{p:?}: {got}"
        );
    }
}

// ---------------------------------------------------------------------------
// Self metric
// ---------------------------------------------------------------------------

async fn events_ingested(server: &TestServer) -> f64 {
    let resp = server.get("/api/v2/metrics").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    expo_value(&text, "vigil_events_ingested_total", &[])
}

async fn the_ingest_counter_counts_accepted_events_not_duplicates(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    assert_eq!(events_ingested(&server).await, 0.0);
    let run = asyncflow_run();
    let first = Value::Array(run.events[..6].to_vec());
    post_new(&server, &first, 6).await;
    assert_eq!(events_ingested(&server).await, 6.0);
    post_mixed(&server, &first, &[false; 6]).await;
    assert_eq!(
        events_ingested(&server).await,
        6.0,
        "duplicates are not counted"
    );
    post_mixed(
        &server,
        &json!([run.events[0], run.events[6], run.events[1]]),
        &[false, true, false],
    )
    .await;
    assert_eq!(events_ingested(&server).await, 7.0);
    // Refused bodies count nothing.
    let (mixed, _) = mixed_body();
    let (status, _) = post_events(&server, &Value::Array(mixed)).await;
    assert_eq!(status, 400);
    let (status, _) = status_json(server.post_raw(EVENTS, "{not json").await).await;
    assert_eq!(status, 400);
    assert_eq!(events_ingested(&server).await, 7.0);
    assert_eq!(everything(&server).await.len(), 7);
}

// ---------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------

const READ: &str = "ev-read-secret";
const WRITE: &str = "ev-write-secret";
const ADMIN: &str = "ev-admin-secret";

async fn call(
    server: &TestServer,
    method: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    server.call(method, &server.url(EVENTS), token, body).await
}

async fn posting_needs_write_and_listing_needs_read(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .token(format!("read:{READ}"))
        .token(format!("write:{WRITE}"))
        .token(format!("admin:{ADMIN}"))
        .start()
        .await;
    let event = |who: &str| {
        json!({"event_type": "TaskCreated", "event_id": format!("by-{who}"),
               "event_time": t0(), "task_id": who})
    };
    for (who, token, status, code) in [
        ("nobody", None, 401, Some("unauthorized")),
        ("stranger", Some("wrong-secret"), 401, Some("unauthorized")),
        ("reader", Some(READ), 403, Some("forbidden")),
        ("writer", Some(WRITE), 200, None),
        ("admin", Some(ADMIN), 200, None),
    ] {
        let (got, json) = call(&server, "POST", token, Some(&event(who))).await;
        assert_eq!(got, status, "POST as {who}: {json}");
        match code {
            Some(c) => assert_eq!(json["error"]["code"], c, "POST as {who}: {json}"),
            None => assert_eq!(json["accepted"], 1, "POST as {who}: {json}"),
        }
    }
    for (who, token, status, code) in [
        ("nobody", None, 401, Some("unauthorized")),
        ("stranger", Some("wrong-secret"), 401, Some("unauthorized")),
        ("writer", Some(WRITE), 403, Some("forbidden")),
        ("reader", Some(READ), 200, None),
        ("admin", Some(ADMIN), 200, None),
    ] {
        let (got, json) = call(&server, "GET", token, None).await;
        assert_eq!(got, status, "GET as {who}: {json}");
        match code {
            Some(c) => {
                assert_eq!(json["error"]["code"], c, "GET as {who}: {json}");
                assert!(json.get("events").is_none(), "GET as {who}: {json}");
            }
            None => assert_eq!(
                ids(json["events"].as_array().expect("events")),
                vec!["by-writer", "by-admin"],
                "GET as {who}: only the permitted posts were stored"
            ),
        }
    }
}

backend_tests!(
    an_asyncflow_run_round_trips_through_every_shape_filter_and_page,
    missing_ids_and_times_are_filled_in,
    re_posted_events_are_duplicates_and_store_nothing_new,
    invalid_events_are_all_listed_and_nothing_is_stored,
    bodies_over_the_limits_are_refused_whole,
    bad_queries_are_refused_naming_the_parameter,
    the_ingest_counter_counts_accepted_events_not_duplicates,
    posting_needs_write_and_listing_needs_read,
);
