//! The real RHAPSODY 0.6.0 and AsyncFlow 0.6.0 (pinned in
//! `tests/python/requirements.txt`) running real workflows with telemetry on:
//! every event forwarded live with the README's forwarder, and RHAPSODY's
//! checkpoint file replayed with `vigil import` into a second server, comes
//! back field for field and type for type; the workflow filter finds each
//! workflow's events; a replay of what was forwarded live is all duplicates.
//! The checks run in `tests/python/asyncflow_workflows.py`, on the objects
//! the client itself sent.

use std::path::Path;
use std::process::Command;

use vigil_tests::*;

fn packages_present(python: &str) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import radical.asyncflow, rhapsody.telemetry, opentelemetry.sdk",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn asyncflow_workflows_round_trip_live_and_replayed(backend: Backend) {
    let python = python();
    if !packages_present(&python) {
        skip_or_fail(
            "RHAPSODY/AsyncFlow",
            &format!(
                "{python} cannot import radical.asyncflow and rhapsody.telemetry: install tests/python/requirements.txt into the virtualenv named by {PYTHON_ENV}"
            ),
        );
        return;
    }
    let live_db = TestDatabase::new(&backend).await;
    let replay_db = TestDatabase::new(&backend).await;
    let live = TestServer::start(&live_db).await;
    let replay = TestServer::start(&replay_db).await;
    // Inside the live server's data directory, so it is removed with it.
    let work = live_db.data_dir().join("asyncflow-work");
    std::fs::create_dir_all(&work).expect("work dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let script = root.join("tests/python/asyncflow_workflows.py");
    let readme = root.join("README.md");
    let vigil = vigil_binary();
    let out = tokio::task::spawn_blocking({
        let (live, replay) = (live.url(""), replay.url(""));
        let work = work.clone();
        move || {
            Command::new(&python)
                .arg(&script)
                .arg(&readme)
                .arg(&vigil)
                .arg(live.trim_end_matches('/'))
                .arg(replay.trim_end_matches('/'))
                .arg(&work)
                .env_remove("VIGIL_URL")
                .env_remove("VIGIL_TOKEN")
                .output()
                .expect("run the workflow script")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "workflow script failed ({}):\n{stderr}\n{stdout}\nlive server:\n{}",
        out.status,
        live.logs().join("\n")
    );
    let summary: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no summary ({e}): {stdout}"));
    let events = summary["events"].as_u64().expect("event count");
    // Three workflow scopes and a block of tasks, each task seven events or so.
    assert!(events >= 35, "only {events} events: {summary}");
    assert!(
        summary["workflows"]
            .as_array()
            .is_some_and(|w| w.len() >= 4),
        "{summary}"
    );
    assert_eq!(
        summary["again"]["duplicates"].as_u64(),
        Some(events),
        "{summary}"
    );

    // The server holds what the script saw, and nothing else.
    let listed = live.get("/api/v2/events?limit=10000&json=strict").await;
    let (status, body) = status_json(listed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["events"].as_array().map(Vec::len),
        Some(events as usize),
        "live server holds another number of events than were sent"
    );
}

backend_tests!(asyncflow_workflows_round_trip_live_and_replayed);

fn event_line(id: &str, event_type: &str) -> String {
    format!(
        r#"{{"event_id": "{id}", "event_type": "{event_type}", "event_time": 1796000000.25, "emit_time": 1796000000.5, "session_id": "s-import", "backend": "concurrent", "task_id": null, "node_id": null, "attributes": {{}}, "section": "event"}}"#
    )
}

async fn import(args: &[&str]) -> (bool, String) {
    let (status, out) = run_vigil(args, &[], std::time::Duration::from_secs(60)).await;
    (status.is_some_and(|s| s.success()), out)
}

/// `vigil import` against a server with tokens: what it counts, what it
/// refuses, and that a refused batch names its lines and leaves the batches
/// before it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_import_counts_what_it_sends_and_names_what_was_refused() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::builder(&db)
        .token("read,write:imp0rt")
        .start()
        .await;
    let url = server.url("");
    let url = url.trim_end_matches('/');
    let dir = db.data_dir().join("checkpoints");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("a.telemetry.jsonl"),
        [
            event_line("imp-1", "TaskCreated"),
            String::new(),
            event_line("imp-2", "TaskStarted"),
            r#"{"name": "task", "section": "span", "duration_ms": Infinity}"#.into(),
            event_line("imp-3", "TaskCompleted"),
        ]
        .join("\n"),
    )
    .expect("write");
    std::fs::write(
        dir.join("b.telemetry.jsonl"),
        format!(
            "{}\n{}\n",
            event_line("imp-4", "TaskCreated"),
            event_line("imp-5", "my.Custom")
        ),
    )
    .expect("write");
    std::fs::write(dir.join("notes.txt"), "not a checkpoint").expect("write");
    let dir_s = dir.to_string_lossy().to_string();

    // Without the token: the server's 401, not retried, nothing stored.
    let (ok, out) = import(&["import", "--url", url, &dir_s]).await;
    assert!(!ok && out.contains("401"), "{out}");

    let (ok, out) = import(&[
        "import", "--url", url, "--token", "imp0rt", "--batch", "2", &dir_s,
    ])
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("a.telemetry.jsonl: 5 lines: 3 stored, 0 already there, skipped 1 span"),
        "{out}"
    );
    assert!(
        out.contains("b.telemetry.jsonl: 2 lines: 2 stored, 0 already there"),
        "{out}"
    );
    assert!(
        out.contains("total: 7 lines: 5 stored, 0 already there, skipped 1 span"),
        "{out}"
    );
    let (ok, out) = import(&["import", "--url", url, "--token", "imp0rt", &dir_s]).await;
    assert!(
        ok && out.contains("total: 7 lines: 0 stored, 5 already there"),
        "{out}"
    );

    // A bad line: its batch is refused with the server's reason and its
    // lines named; the batch before it is stored, the rest not sent.
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        [
            event_line("imp-6", "TaskCreated"),
            event_line("imp-7", "TaskStarted"),
            event_line("imp-8", "TaskCompleted"),
            event_line("imp-9", "Checkpoint"),
            event_line("imp-10", "TaskCreated"),
        ]
        .join("\n"),
    )
    .expect("write");
    let bad_s = bad.to_string_lossy().to_string();
    let (ok, out) = import(&[
        "import", "--url", url, "--token", "imp0rt", "--batch", "2", &bad_s,
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("lines 3–4") && out.contains("400") && out.contains("event_type"),
        "{out}"
    );
    let (status, listed) = status_json(
        server
            .get("/api/v2/events?session_id=s-import&limit=100")
            .await,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["imp-1", "imp-2", "imp-3", "imp-4", "imp-5", "imp-6", "imp-7"],
        "{listed}"
    );

    // What cannot be read or reached.
    let missing = dir.join("missing.jsonl").to_string_lossy().to_string();
    let (ok, out) = import(&["import", "--url", url, &missing]).await;
    assert!(!ok && out.contains("missing.jsonl"), "{out}");
    let empty = db.data_dir().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let (ok, out) = import(&["import", "--url", url, &empty.to_string_lossy()]).await;
    assert!(!ok && out.contains("no *.jsonl files"), "{out}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (ok, out) = import(&["import", "--url", &format!("http://{closed}"), &bad_s]).await;
    assert!(
        !ok && out.contains("retrying") && out.contains("sending to"),
        "{out}"
    );
}
