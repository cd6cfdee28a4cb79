//! The live filter of the provenance streams (`bus::live::matches`, applied
//! in memory to events arriving from the ring) agrees with the store's event
//! query (applied to the stored history) on both backends, for every filter,
//! so a stream never shows live what its history would not, or the reverse.

use std::sync::Arc;

use vigil_host::bus::live::{matches, Scope};
use vigil_host::events::NewEvent;
use vigil_host::store::{self, EventQuery, Store};
use vigil_tests::{Backend, TestDatabase};

async fn open(db: &TestDatabase) -> Arc<dyn Store> {
    let url = match db.database_url() {
        Some(url) => url.to_string(),
        None => format!("sqlite://{}/vigil.db", db.data_dir().display()),
    };
    store::open(&url).await.expect("open store")
}

/// Event `i` as a client would send it, its scope fields at the top level
/// (even `i`) or inside `attributes` (odd `i`), parsed as the API parses it.
fn event(i: usize, task: Option<&str>, attributes: &str) -> NewEvent {
    let mut e = serde_json::json!({
        "event_id": format!("e{i}"),
        "event_type": if i.is_multiple_of(2) { "TaskStarted" } else { "myapp.Milestone" },
        "event_time": i as f64,
        "session_id": i.is_multiple_of(3).then(|| "s1".to_string()),
        "asyncflow.workflow_id": i.is_multiple_of(4).then(|| "w1".to_string()),
        "task_id": task,
    });
    let attrs: serde_json::Value = serde_json::from_str(attributes).expect("attributes");
    if i.is_multiple_of(2) {
        for (k, v) in attrs.as_object().expect("object") {
            e[k] = v.clone();
        }
    } else {
        e["attributes"] = attrs;
    }
    let body = e.to_string();
    vigil_host::events::parse_events(body.as_bytes(), false, 10, 0)
        .expect("a valid event")
        .events
        .remove(0)
}

async fn the_live_filter_agrees_with_the_store_query(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let attrs = [
        r#"{"execution_id":"x1","source_id":"s-a","project_module":"p.a"}"#,
        r#"{"execution_id":"x2","source_id":"s-a"}"#,
        r#"{"execution_id":7,"source_id":"7"}"#,
        r#"{"execution_id":null,"project_module":"p.a"}"#,
        r#"{"execution_id":{"nested":"x1"},"source_id":["s-a"]}"#,
        r#"{"execution_id":"x1 ","project_module":"P.A"}"#,
        r#"{}"#,
        r#"{"execution_id":"ünï","source_id":"s'a\"b"}"#,
    ];
    let events: Vec<NewEvent> = (0..24)
        .map(|i| {
            event(
                i,
                i.is_multiple_of(5).then_some("t1"),
                attrs[i % attrs.len()],
            )
        })
        .collect();
    store.append_events(&events, 5).await.expect("append");
    let all = store
        .list_events(&EventQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), events.len());
    let q = |f: &dyn Fn(&mut EventQuery)| {
        let mut q = EventQuery {
            limit: 1000,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let queries = [
        q(&|_| {}),
        q(&|q| q.execution_id = Some("x1".into())),
        q(&|q| q.execution_id = Some("7".into())),
        q(&|q| q.execution_id = Some("ünï".into())),
        q(&|q| q.execution_id = Some(r#"{"nested":"x1"}"#.into())),
        q(&|q| q.source_id = Some(r#"["s-a"]"#.into())),
        q(&|q| q.source_id = Some("s-a".into())),
        q(&|q| q.source_id = Some("7".into())),
        q(&|q| q.source_id = Some("s'a\"b".into())),
        q(&|q| q.project_module = Some("p.a".into())),
        q(&|q| {
            q.project_module = Some("p.a".into());
            q.event_types = vec!["TaskStarted".into()];
        }),
        q(&|q| {
            q.source_id = Some("s-a".into());
            q.session_id = Some("s1".into());
        }),
        q(&|q| {
            q.execution_id = Some("x2".into());
            q.start = Some(3.0);
            q.end = Some(20.0);
        }),
        q(&|q| {
            q.workflow_id = Some("w1".into());
            q.task_id = Some("t1".into());
        }),
        q(&|q| q.event_types = vec!["myapp.Milestone".into(), "TaskFailed".into()]),
    ];
    for (n, query) in queries.iter().enumerate() {
        let stored: Vec<i64> = store
            .list_events(query)
            .await
            .expect("query")
            .iter()
            .map(|e| e.seq)
            .collect();
        let live: Vec<i64> = all
            .iter()
            .filter(|e| matches(query, e, &Scope::of(e)))
            .map(|e| e.seq)
            .collect();
        assert_eq!(live, stored, "query {n}: {query:?}");
    }
    // The tables are not trivially all or nothing.
    let x1 = &queries[1];
    assert_eq!(
        all.iter().filter(|e| matches(x1, e, &Scope::of(e))).count(),
        3
    );
}

vigil_tests::backend_tests!(the_live_filter_agrees_with_the_store_query);
