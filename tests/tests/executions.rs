//! `/api/v2/executions` on both backends: create, read, list with filters and
//! cursor paging, updates (merge patches), every transition of the state
//! machine (allowed ones succeed, the others are `409` naming the current
//! state), the run record's bounds, bad input leaving stored data intact,
//! and every state change as a `vigil.ExecutionStateChanged` event in the log.

use std::time::Duration;

use vigil_tests::*;

const STATES: [&str; 6] = [
    "pending",
    "submitted",
    "running",
    "completed",
    "failed",
    "cancelled",
];

/// What the issue allows: forward through the life of a run, failure or
/// cancellation from any state that is not final, nothing out of a final one.
fn allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("pending", "submitted" | "running" | "failed" | "cancelled")
            | (
                "submitted",
                "running" | "completed" | "failed" | "cancelled"
            )
            | ("running", "completed" | "failed" | "cancelled")
    )
}

async fn create(server: &TestServer, body: Value) -> Value {
    let (status, json) = status_json(server.post_json("/api/v2/executions", &body).await).await;
    assert_eq!(status, 201, "{json:#}");
    json
}

async fn patch(server: &TestServer, id: &str, body: Value) -> reqwest::Response {
    server
        .client()
        .patch(server.url(&format!("/api/v2/executions/{id}")))
        .json(&body)
        .send()
        .await
        .expect("PATCH")
}

async fn get_execution(server: &TestServer, id: &str) -> Value {
    let (status, json) = status_json(server.get(&format!("/api/v2/executions/{id}")).await).await;
    assert_eq!(status, 200, "{json:#}");
    json
}

async fn state_events(server: &TestServer) -> Vec<Value> {
    let (status, page) = status_json(
        server
            .get("/api/v2/events?event_type=vigil.ExecutionStateChanged&limit=10000")
            .await,
    )
    .await;
    assert_eq!(status, 200, "{page:#}");
    // Each event as it is in the log, with its place in the log.
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|listed| {
            let mut e = listed["event"].clone();
            e["seq"] = listed["seq"].clone();
            e
        })
        .collect()
}

async fn executions_are_created_read_listed_and_updated(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let dim = create(
        &server,
        json!({
            "id": "run-1", "backend": "dim", "project_module": "survey.pipeline",
            "source_id": "src-7", "scheduler_ids": {"session_id": "sess-1"},
            "profile": {"host": "dim.example", "port": 8001, "https": false},
            "attributes": {"owner": "alice", "priority": 3}
        }),
    )
    .await;
    assert_eq!(dim["id"], "run-1");
    assert_eq!(dim["state"], "pending");
    assert_eq!(dim["scheduler_ids"]["session_id"], "sess-1");
    assert_eq!(dim["profile"]["port"], 8001);
    assert_eq!(dim["attributes"]["priority"], 3);
    assert!(dim["state_times"]["pending"].is_string(), "{dim:#}");
    assert_eq!(dim["run_record"]["entries"], json!([]));
    let slurm = create(
        &server,
        json!({"backend": "slurm", "source_id": "src-7", "profile": {"login_node": "ln1"}}),
    )
    .await;
    let slurm_id = slurm["id"].as_str().expect("generated id").to_string();
    assert_eq!(slurm_id.len(), 36, "a UUID: {slurm_id}");
    create(&server, json!({"backend": "k8s", "state": "running"})).await;

    // The same id again is a conflict and changes nothing.
    let err = expect_error(
        server
            .post_json(
                "/api/v2/executions",
                &json!({"id": "run-1", "backend": "slurm"}),
            )
            .await,
        409,
        "already_exists",
    )
    .await;
    assert!(
        err["message"].as_str().expect("present").contains("run-1"),
        "{err}"
    );
    assert_eq!(get_execution(&server, "run-1").await["backend"], "dim");

    // Read one: the record plus (no providers here) empty debug fields.
    let one = get_execution(&server, "run-1").await;
    assert_eq!(one["project_module"], "survey.pipeline");
    assert_eq!(one["debug_fields"], json!({}));
    assert_eq!(one["debug_errors"], json!([]));
    expect_error(
        server.get("/api/v2/executions/nope").await,
        404,
        "not_found",
    )
    .await;

    // Update: merge patches (null removes), a transition records its time.
    let (status, updated) = status_json(
        patch(
            &server,
            "run-1",
            json!({"state": "submitted", "attributes": {"owner": null, "queue": "gpu"},
                   "scheduler_ids": {"job_id": "99"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{updated:#}");
    assert_eq!(updated["state"], "submitted");
    assert_eq!(
        updated["attributes"],
        json!({"priority": 3, "queue": "gpu"})
    );
    assert_eq!(
        updated["scheduler_ids"],
        json!({"session_id": "sess-1", "job_id": "99"})
    );
    assert!(updated["state_times"]["submitted"].is_string());
    assert_eq!(
        get_execution(&server, "run-1").await["attributes"]["queue"],
        "gpu"
    );
    // The same state again is a no-op, not a conflict.
    let (status, same) =
        status_json(patch(&server, "run-1", json!({"state": "submitted"})).await).await;
    assert_eq!(
        (status, same["version"].clone()),
        (200, updated["version"].clone())
    );

    // Lists: filters and paging.
    let list = |q: &'static str| {
        let server = &server;
        async move {
            let (status, page) =
                status_json(server.get(&format!("/api/v2/executions?{q}")).await).await;
            assert_eq!(status, 200, "{q}: {page:#}");
            page
        }
    };
    let ids = |page: &Value| -> Vec<String> {
        page["executions"]
            .as_array()
            .expect("present")
            .iter()
            .map(|e| e["id"].as_str().expect("present").to_string())
            .collect()
    };
    assert_eq!(ids(&list("").await).len(), 3);
    assert_eq!(ids(&list("backend=dim").await), vec!["run-1"]);
    assert_eq!(
        ids(&list("source_id=src-7").await),
        vec!["run-1".to_string(), slurm_id.clone()]
    );
    assert_eq!(
        ids(&list("project_module=survey.pipeline").await),
        vec!["run-1"]
    );
    assert_eq!(ids(&list("state=running,submitted").await).len(), 2);
    assert_eq!(ids(&list("state=failed").await).len(), 0);
    assert!(list("").await["executions"][0]
        .get("debug_fields")
        .is_none());
    assert_eq!(
        list("debug_fields=true").await["executions"][0]["debug_fields"],
        json!({})
    );
    let first = list("limit=2").await;
    assert_eq!(ids(&first).len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = status_json(
        server
            .get(&format!("/api/v2/executions?limit=2&cursor={cursor}"))
            .await,
    )
    .await
    .1;
    assert_eq!(ids(&second).len(), 1);
    assert!(second["next_cursor"].is_null());
    let future = "start=2999-01-01T00:00:00Z";
    assert_eq!(ids(&list(future).await).len(), 0);
    for bad in [
        "state=done",
        "limit=0",
        "cursor=abc",
        "colour=red",
        "backend=DIM",
    ] {
        expect_error(
            server.get(&format!("/api/v2/executions?{bad}")).await,
            400,
            "invalid_query",
        )
        .await;
    }
}

async fn every_illegal_transition_is_a_conflict_naming_the_current_state(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    for from in STATES {
        for to in STATES {
            if from == to {
                continue;
            }
            let id = format!("{from}-to-{to}");
            create(&server, json!({"id": id, "backend": "dim", "state": from})).await;
            let resp = patch(
                &server,
                &id,
                json!({"state": to, "attributes": {"touched": true}}),
            )
            .await;
            if allowed(from, to) {
                let (status, body) = status_json(resp).await;
                assert_eq!(status, 200, "{from} -> {to}: {body:#}");
                assert_eq!(body["state"], to);
            } else {
                let err = expect_error(resp, 409, "invalid_transition").await;
                let message = err["message"].as_str().expect("present");
                assert!(
                    message.contains(&format!("is `{from}`"))
                        && message.contains(&format!("`{to}`")),
                    "{from} -> {to}: {message}"
                );
                // Nothing changed, not even the attributes of the same request.
                let stored = get_execution(&server, &id).await;
                assert_eq!(stored["state"], from);
                assert!(stored["attributes"].get("touched").is_none(), "{stored:#}");
            }
        }
    }
    // One event per creation and one per allowed transition.
    let transitions = STATES
        .iter()
        .flat_map(|f| STATES.iter().map(move |t| (*f, *t)))
        .filter(|(f, t)| f != t && allowed(f, t))
        .count();
    assert_eq!(state_events(&server).await.len(), 30 + transitions);
}

async fn every_state_change_is_an_event_in_the_log(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    create(
        &server,
        json!({"id": "e1", "backend": "slurm", "project_module": "proj", "source_id": "s1",
               "scheduler_ids": {"job_id": "s:1|/d"}}),
    )
    .await;
    for to in ["submitted", "running", "completed"] {
        let (status, body) = status_json(patch(&server, "e1", json!({"state": to})).await).await;
        assert_eq!(status, 200, "{body:#}");
    }
    // An update without a state change is not an event.
    assert_eq!(
        patch(&server, "e1", json!({"attributes": {"k": "v"}}))
            .await
            .status(),
        200
    );
    let events = state_events(&server).await;
    let moves: Vec<(Value, Value)> = events
        .iter()
        .map(|e| (e["from_state"].clone(), e["to_state"].clone()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (Value::Null, json!("pending")),
            (json!("pending"), json!("submitted")),
            (json!("submitted"), json!("running")),
            (json!("running"), json!("completed")),
        ]
    );
    for e in &events {
        assert_eq!(e["event_type"], "vigil.ExecutionStateChanged");
        assert_eq!(e["execution_id"], "e1");
        assert_eq!(e["source_id"], "s1");
        assert_eq!(e["project_module"], "proj");
        assert_eq!(e["backend"], "slurm");
        assert_eq!(e["scheduler_ids"]["job_id"], "s:1|/d");
    }
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["seq"].as_i64().expect("present"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // They share the log with reported events and survive a restart.
    let mut server = server;
    server.restart().await;
    assert_eq!(state_events(&server).await.len(), 4);
}

async fn the_run_record_keeps_submit_and_poll_details_within_its_bounds(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    create(&server, json!({"id": "r1", "backend": "dim"})).await;
    let path = "/api/v2/executions/r1/run-record";
    let (status, body) = status_json(
        server
            .post_json(
                path,
                &json!({"phase": "submit", "attempt": 1, "answer": {"session": "s-1", "http_status": 201},
                        "detail": {"graph": "g.json"}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    let entries = &body["run_record"]["entries"];
    assert_eq!(entries[0]["phase"], "submit");
    assert_eq!(entries[0]["answer"]["session"], "s-1");
    assert!(entries[0]["at"].is_string());
    // Many polls of 4 KiB answers: the record stays bounded, keeps its first
    // entry and the newest, and says how many it dropped.
    let answer = "p".repeat(4000);
    for round in 0..10 {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"phase": "poll", "attempt": round * 10 + i + 2, "status": "RUNNING", "answer": answer}))
            .collect();
        let (status, body) =
            status_json(server.post_json(path, &json!({"entries": batch})).await).await;
        assert_eq!(status, 200, "{body:#}");
    }
    let record = get_execution(&server, "r1").await["run_record"].clone();
    let entries = record["entries"].as_array().expect("present");
    let bytes: usize = entries.iter().map(|e| e.to_string().len() + 1).sum();
    assert!(bytes <= 256 * 1024, "{bytes} bytes kept");
    assert_eq!(record["bytes"].as_u64().expect("present") as usize, bytes);
    assert_eq!(entries[0]["phase"], "submit", "the first entry is kept");
    assert_eq!(
        entries.last().expect("present")["attempt"],
        101,
        "the newest is kept"
    );
    assert_eq!(
        record["dropped"].as_u64().expect("present") as usize + entries.len(),
        101
    );
    // An entry over 16 KiB and more than 100 entries at once are refused whole.
    let huge = json!([{"phase": "poll", "attempt": 500}, {"phase": "poll", "answer": "x".repeat(17 * 1024)}]);
    expect_error(
        server.post_json(path, &huge).await,
        413,
        "payload_too_large",
    )
    .await;
    let many: Vec<Value> = (0..101).map(|_| json!({"phase": "poll"})).collect();
    expect_error(
        server.post_json(path, &json!(many)).await,
        413,
        "payload_too_large",
    )
    .await;
    // Bad entries: every one named, nothing stored.
    let err = expect_error(
        server
            .post_json(path, &json!([{"phase": "poll", "attempt": -1}, {"answer": 1}, {"phase": "poll", "error": "nul\u{0}"}]))
            .await,
        400,
        "invalid_request",
    )
    .await;
    let fields: Vec<(Value, Value)> = err["details"]
        .as_array()
        .expect("present")
        .iter()
        .map(|d| (d["index"].clone(), d["field"].clone()))
        .collect();
    assert_eq!(
        fields,
        vec![
            (json!(0), json!("attempt")),
            (json!(1), json!("phase")),
            (json!(2), json!("error"))
        ]
    );
    assert_eq!(get_execution(&server, "r1").await["run_record"], record);
    expect_error(
        server
            .post_json(
                "/api/v2/executions/none/run-record",
                &json!({"phase": "poll"}),
            )
            .await,
        404,
        "not_found",
    )
    .await;
}

async fn bad_execution_bodies_are_refused_and_change_nothing(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    create(
        &server,
        json!({"id": "keep", "backend": "dim", "profile": {"manager_url": "http://m"}}),
    )
    .await;
    let before = get_execution(&server, "keep").await;
    for (body, field) in [
        (json!({"profile": {}}), "backend"),
        (
            json!({"backend": "dim", "profile": {"port": 70000}}),
            "profile.port",
        ),
        (
            json!({"backend": "dim", "profile": {"manager_url": "ftp://x"}}),
            "profile.manager_url",
        ),
        (
            json!({"backend": "dim", "profile": {"hots": "x"}}),
            "profile.hots",
        ),
        (
            json!({"backend": "slurm", "profile": {"login_node": "a/b"}}),
            "profile.login_node",
        ),
        (json!({"backend": "dim", "id": "a/b"}), "id"),
        (json!({"backend": "dim", "id": "x".repeat(300)}), "id"),
        (json!({"backend": "dim", "id": "nul\u{0}"}), "id"),
        (json!({"backend": "dim", "state": "exploded"}), "state"),
        (
            json!({"backend": "dim", "scheduler_ids": {"job_id": 5}}),
            "scheduler_ids.job_id",
        ),
        (
            json!({"backend": "dim", "attributes": {"k": "x".repeat(20_000)}}),
            "attributes",
        ),
        (json!({"backend": "dim", "colour": "red"}), "colour"),
    ] {
        let err = expect_error(
            server.post_json("/api/v2/executions", &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            err["details"]
                .as_array()
                .expect("present")
                .iter()
                .any(|d| d["field"] == field),
            "{field}: {err:#}"
        );
    }
    expect_error(
        server.post_raw("/api/v2/executions", "{not json").await,
        400,
        "malformed_json",
    )
    .await;
    expect_error(
        server.post_raw("/api/v2/executions", "[1]").await,
        400,
        "invalid_request",
    )
    .await;
    for (body, field) in [
        (json!({"backend": "slurm"}), "backend"),
        (json!({"profile": {"port": "8001"}}), "profile.port"),
        (json!({"profile": {"unknown": 1}}), "profile.unknown"),
        (json!({"state": 7}), "state"),
    ] {
        let err = expect_error(patch(&server, "keep", body).await, 400, "invalid_request").await;
        assert!(
            err["details"]
                .as_array()
                .expect("present")
                .iter()
                .any(|d| d["field"] == field),
            "{field}: {err:#}"
        );
    }
    assert_eq!(get_execution(&server, "keep").await, before);
    let (status, page) = status_json(server.get("/api/v2/executions").await).await;
    assert_eq!(
        (
            status,
            page["executions"].as_array().expect("present").len()
        ),
        (200, 1)
    );
    assert_eq!(state_events(&server).await.len(), 1);
}

async fn concurrent_transitions_of_one_execution_allow_exactly_one_winner(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    create(
        &server,
        json!({"id": "race", "backend": "dim", "state": "running"}),
    )
    .await;
    let outcomes =
        futures::future::join_all(["completed", "failed", "cancelled", "completed"].map(|to| {
            let server = &server;
            async move {
                patch(server, "race", json!({"state": to}))
                    .await
                    .status()
                    .as_u16()
            }
        }))
        .await;
    let final_state = get_execution(&server, "race").await["state"].clone();
    let wins = outcomes.iter().filter(|s| **s == 200).count();
    assert!(wins >= 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|s| *s == 200 || *s == 409),
        "{outcomes:?}"
    );
    // Only one transition out of running happened: one event after creation
    // (two winners only when both asked for the same final state: a no-op).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        state_events(&server).await.len(),
        2,
        "final {final_state}, {outcomes:?}"
    );
}

vigil_tests::backend_tests!(
    executions_are_created_read_listed_and_updated,
    every_illegal_transition_is_a_conflict_naming_the_current_state,
    every_state_change_is_an_event_in_the_log,
    the_run_record_keeps_submit_and_poll_details_within_its_bounds,
    bad_execution_bodies_are_refused_and_change_nothing,
    concurrent_transitions_of_one_execution_allow_exactly_one_winner,
);
