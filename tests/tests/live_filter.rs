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

fn event(i: usize, task: Option<&str>, attributes: &str) -> NewEvent {
    NewEvent {
        event_id: format!("e{i}"),
        event_type: if i.is_multiple_of(2) {
            "TaskStarted"
        } else {
            "myapp.Milestone"
        }
        .into(),
        event_time_ms: 1_000 * i as i64,
        session_id: i.is_multiple_of(3).then(|| "s1".to_string()),
        workflow_id: i.is_multiple_of(4).then(|| "w1".to_string()),
        task_id: task.map(str::to_string),
        backend: None,
        attributes: attributes.into(),
    }
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
            q.start_ms = Some(3_000);
            q.end_ms = Some(20_000);
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
