//! The storage suite: the same behaviour checked through the `Store` trait on
//! SQLite and on PostgreSQL.

use std::sync::Arc;

use vigil_host::events::NewEvent;
use vigil_host::metrics::model::MetricKind;
use vigil_host::store::{
    self, Component, ComponentTouch, EventQuery, LatestValue, NewSeries, SampleQuery, SampleRow,
    SeriesRef, Store, WriteBatch,
};
use vigil_tests::{Backend, TestDatabase};

async fn open(db: &TestDatabase) -> Arc<dyn Store> {
    let url = match db.database_url() {
        Some(url) => url.to_string(),
        None => format!("sqlite://{}/vigil.db", db.data_dir().display()),
    };
    store::open(&url).await.expect("open store")
}

fn series(component: &str, name: &str, labels: &str) -> NewSeries {
    NewSeries {
        component: component.into(),
        metric_name: name.into(),
        kind: MetricKind::Gauge,
        labels: labels.into(),
        help: "help".into(),
        unit: String::new(),
    }
}

fn sample(series: SeriesRef, ts_ms: i64, value: f64) -> SampleRow {
    SampleRow {
        series,
        ts_ms,
        value,
    }
}

async fn commit_assigns_series_ids_and_samples_come_back_in_sequence_order(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let mut batch = WriteBatch {
        new_series: vec![series("w1", "a", "{}"), series("w1", "b", r#"{"x":"1"}"#)],
        ..Default::default()
    };
    // 600 samples exercise every multi-row insert size.
    for i in 0..600 {
        batch.samples.push(sample(
            SeriesRef::New(i % 2),
            1_000 + i as i64,
            i as f64 + 0.25,
        ));
    }
    let ids = store.commit(&batch).await.expect("commit").new_ids;
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    let rows = store
        .query_samples(&SampleQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(rows.len(), 600);
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.series_id, ids[i % 2]);
        assert_eq!(r.value, i as f64 + 0.25);
        assert_eq!(r.ts_ms, 1_000 + i as i64);
    }
    // Filters and paging.
    let page = store
        .query_samples(&SampleQuery {
            series_ids: Some(vec![ids[1]]),
            start_ms: Some(1_100),
            end_ms: Some(1_200),
            after_seq: 0,
            limit: 10,
            newest_first: false,
        })
        .await
        .expect("query");
    assert_eq!(page.len(), 10);
    assert!(page
        .iter()
        .all(|r| r.series_id == ids[1] && (1_100..1_200).contains(&r.ts_ms)));
    let next = store
        .query_samples(&SampleQuery {
            series_ids: Some(vec![ids[1]]),
            start_ms: Some(1_100),
            end_ms: Some(1_200),
            after_seq: page[9].seq,
            limit: 100,
            newest_first: false,
        })
        .await
        .expect("query");
    assert_eq!(page.len() + next.len(), 50);
}

async fn a_failing_commit_leaves_nothing_behind(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let batch = WriteBatch {
        new_series: vec![series("w1", "a", "{}")],
        samples: vec![
            sample(SeriesRef::New(0), 1, 1.0),
            // No such series: the foreign key fails the whole transaction.
            sample(SeriesRef::Known(987_654), 2, 2.0),
        ],
        ..Default::default()
    };
    assert!(store.commit(&batch).await.is_err());
    assert!(store.load_series().await.expect("series").is_empty());
    let rows = store
        .query_samples(&SampleQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("query");
    assert!(rows.is_empty(), "{rows:?}");
}

async fn latest_values_checkpoint_and_aggregate_state_survive_reopening(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let committed = store
        .commit(&WriteBatch {
            new_series: vec![series("w1", "a", "{}"), series("w1", "b", "{}")],
            samples: vec![
                sample(SeriesRef::New(0), 10, 1.0),
                sample(SeriesRef::New(0), 5, 2.0),
                sample(SeriesRef::New(1), 5, 0.1),
            ],
            states: vec![(SeriesRef::New(0), r#"{"kind":"x"}"#.into())],
            components: vec![ComponentTouch {
                name: "w1".into(),
                component_type: "worker".into(),
                now_ms: 42,
            }],
            ..Default::default()
        })
        .await
        .expect("commit");
    let ids = committed.new_ids.clone();
    assert!(committed.last_seq > 0);
    assert_eq!(store.checkpoint_seq().await.expect("seq"), 0);
    // A value whose decimal form does not round-trip through short strings.
    let tricky = 0.1 + 0.2;
    store
        .save_latest(&[LatestValue {
            series_id: ids[1],
            value: tricky,
            ts_ms: 5,
        }])
        .await
        .expect("save");
    store
        .set_checkpoint_seq(committed.last_seq)
        .await
        .expect("seq");
    // The checkpoint never moves backwards.
    store.set_checkpoint_seq(1).await.expect("seq");
    let later = store
        .commit(&WriteBatch {
            samples: vec![sample(SeriesRef::Known(ids[0]), 20, 3.0)],
            ..Default::default()
        })
        .await
        .expect("commit");
    drop(store);
    let store = open(&db).await;
    assert_eq!(
        store.checkpoint_seq().await.expect("seq"),
        committed.last_seq
    );
    let loaded = store.load_series().await.expect("series");
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].state.as_deref(), Some(r#"{"kind":"x"}"#));
    assert_eq!(loaded[0].last, None);
    assert_eq!(loaded[1].last, Some((tricky, 5)));
    let after = store
        .latest_after(committed.last_seq)
        .await
        .expect("replay");
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].series_id, after[0].value, after[0].ts_ms),
        (ids[0], 3.0, 20)
    );
    let everything = store.latest_after(0).await.expect("replay");
    assert_eq!(everything.len(), 2, "{everything:?}");
    assert!(later.last_seq > committed.last_seq);
    let components = store.list_components().await.expect("components");
    assert_eq!(components.len(), 1);
    assert_eq!(components[0].last_heartbeat_ms, 42);
    let since = store.load_since(&ids, 6).await.expect("since");
    assert_eq!(since.len(), 2);
    assert_eq!(since[0].value, 1.0);
}

async fn deleted_series_leave_loading_but_stay_findable_and_revive(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let ids = store
        .commit(&WriteBatch {
            new_series: vec![series("w1", "a", "{}"), series("w2", "a", "{}")],
            samples: vec![
                sample(SeriesRef::New(0), 1, 1.0),
                sample(SeriesRef::New(1), 1, 1.0),
            ],
            ..Default::default()
        })
        .await
        .expect("commit")
        .new_ids;
    assert_eq!(store.delete_series_of("w1").await.expect("delete"), 1);
    assert_eq!(store.delete_series_of("w1").await.expect("delete"), 0);
    let live: Vec<i64> = store
        .load_series()
        .await
        .expect("series")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![ids[1]]);
    let found = store
        .find_series(Some("w1"), Some("a"), None)
        .await
        .expect("find");
    assert_eq!(found.len(), 1);
    let by_id = store
        .find_series(None, None, Some(&ids))
        .await
        .expect("find");
    assert_eq!(by_id.len(), 2);
    // Reporting the same series again revives it under the same id.
    let again = store
        .commit(&WriteBatch {
            new_series: vec![series("w1", "a", "{}")],
            samples: vec![sample(SeriesRef::New(0), 2, 3.0)],
            ..Default::default()
        })
        .await
        .expect("commit");
    assert_eq!(again.new_ids, vec![ids[0]]);
    assert_eq!(store.load_series().await.expect("series").len(), 2);
}

async fn retention_deletes_only_old_samples_in_bounded_batches(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let mut batch = WriteBatch {
        new_series: vec![series("w1", "a", "{}")],
        ..Default::default()
    };
    for i in 0..50 {
        batch.samples.push(sample(SeriesRef::New(0), i, i as f64));
    }
    store.commit(&batch).await.expect("commit");
    assert_eq!(
        store.delete_samples_before(30, 20).await.expect("delete"),
        20
    );
    assert_eq!(
        store.delete_samples_before(30, 20).await.expect("delete"),
        10
    );
    assert_eq!(
        store.delete_samples_before(30, 20).await.expect("delete"),
        0
    );
    let rest = store
        .query_samples(&SampleQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(rest.len(), 20);
    assert!(rest.iter().all(|r| r.ts_ms >= 30));
}

async fn components_register_heartbeat_and_list(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    assert!(store
        .heartbeat("nobody", 1)
        .await
        .expect("heartbeat")
        .is_none());
    let mut w1 = Component::new("w1".into(), "worker_pool".into(), 100);
    w1.capabilities = vec!["cpu".into(), "gpu".into()];
    w1.capacity = Some(4);
    w1.uri = Some("local://node-1".into());
    w1.labels = Some(r#"["a","b"]"#.into());
    let first = store.register_component(&w1).await.expect("register");
    assert!(first.runtime_id > 0, "{first:?}");
    assert_eq!(first.status, "ready");
    // Set offline (NoETL's deregistration), then a heartbeat makes it ready again.
    let off = store
        .set_component_status("w1", None, "offline", 150)
        .await
        .expect("status")
        .expect("known");
    assert_eq!(off.status, "offline");
    assert!(store
        .set_component_status("w1", Some("server_api"), "offline", 150)
        .await
        .expect("status")
        .is_none());
    let c = store
        .heartbeat("w1", 200)
        .await
        .expect("heartbeat")
        .expect("known");
    assert_eq!(c.last_heartbeat_ms, 200);
    assert_eq!(c.registered_at_ms, 100);
    assert_eq!(c.capabilities, vec!["cpu".to_string(), "gpu".to_string()]);
    assert_eq!(c.capacity, Some(4));
    assert_eq!(c.status, "ready");
    assert_eq!(c.runtime_id, first.runtime_id);
    // A second component gets another id; registering the first again keeps
    // its id and its address when the new registration gives none.
    let w2 = store
        .register_component(&Component::new("w2".into(), "server_api".into(), 300))
        .await
        .expect("register w2");
    assert_ne!(w2.runtime_id, first.runtime_id);
    let again = store
        .register_component(&Component::new("w1".into(), "worker_pool".into(), 400))
        .await
        .expect("register again");
    assert_eq!(again.runtime_id, first.runtime_id);
    assert_eq!(again.uri.as_deref(), Some("local://node-1"));
    assert_eq!(again.labels.as_deref(), Some(r#"["a","b"]"#));
    // A component first seen in a report gets an id too.
    store
        .commit(&WriteBatch {
            components: vec![ComponentTouch {
                name: "w3".into(),
                component_type: "queue_worker".into(),
                now_ms: 500,
            }],
            ..WriteBatch::default()
        })
        .await
        .expect("commit");
    let w3 = store
        .find_component("w3")
        .await
        .expect("find")
        .expect("w3 stored");
    assert!(
        w3.runtime_id > 0 && w3.runtime_id != w2.runtime_id && w3.runtime_id != first.runtime_id
    );
    let all = store.list_components().await.expect("list");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].component_type, "worker_pool");
}

fn event(id: &str, kind: &str, time_ms: i64, task: Option<&str>) -> NewEvent {
    NewEvent {
        event_id: id.into(),
        event_type: kind.into(),
        event_ts: time_ms as f64 / 1000.0,
        session_id: Some("s1".into()),
        workflow_id: None,
        task_id: task.map(Into::into),
        backend: None,
        execution_id: None,
        source_id: None,
        project_module: None,
        body: format!(r#"{{"event_id":"{id}","n":"{id}"}}"#),
    }
}

async fn commit_samples(store: &Arc<dyn Store>, component: &str, n: usize) -> i64 {
    let batch = WriteBatch {
        new_series: vec![series(component, "g", "{}")],
        samples: (0..n)
            .map(|i| sample(SeriesRef::New(0), 1_000 + i as i64, i as f64))
            .collect(),
        ..Default::default()
    };
    store.commit(&batch).await.expect("commit").last_seq
}

async fn events_share_the_log_with_samples_and_duplicates_are_kept_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let after_samples = commit_samples(&store, "w1", 3).await;
    let seqs = store
        .append_events(
            &[
                event("e1", "TaskCreated", 5_000, Some("t1")),
                event("e2", "TaskStarted", 6_000, Some("t1")),
            ],
            7_000,
        )
        .await
        .expect("append");
    let (s1, s2) = (seqs[0].expect("stored"), seqs[1].expect("stored"));
    assert!(after_samples < s1 && s1 < s2, "{after_samples} {s1} {s2}");
    let more_samples = commit_samples(&store, "w2", 2).await;
    assert!(
        more_samples > s2,
        "samples continue after events: {more_samples} {s2}"
    );
    assert_eq!(store.max_seq().await.expect("head"), more_samples);
    // A retry of e2 with new content changes nothing; e3 is new.
    let mut changed = event("e2", "TaskFailed", 9_000, Some("t9"));
    changed.body = r#"{"n":"changed"}"#.into();
    let again = store
        .append_events(
            &[
                changed,
                event("e3", "asyncflow.TaskResolved", 6_500, Some("t2")),
            ],
            8_000,
        )
        .await
        .expect("append again");
    assert_eq!(again[0], None);
    assert!(again[1].expect("e3 stored") > more_samples);
    let all = store
        .list_events(&EventQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    let ids: Vec<&str> = all.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, vec!["e1", "e2", "e3"]);
    assert_eq!(all[1].event_type, "TaskStarted");
    assert_eq!(all[1].body, r#"{"event_id":"e2","n":"e2"}"#);
    assert_eq!(all[1].received_ms, 7_000);
    // Filters: types, task, time range, paging.
    let q = |f: &dyn Fn(&mut EventQuery)| {
        let mut q = EventQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let by = |events: Vec<vigil_host::events::StoredEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.event_id).collect()
    };
    let typed = store
        .list_events(&q(&|q| {
            q.event_types = vec!["TaskCreated".into(), "asyncflow.TaskResolved".into()]
        }))
        .await
        .expect("typed");
    assert_eq!(by(typed), vec!["e1", "e3"]);
    let task = store
        .list_events(&q(&|q| q.task_id = Some("t1".into())))
        .await
        .expect("task");
    assert_eq!(by(task), vec!["e1", "e2"]);
    let timed = store
        .list_events(&q(&|q| {
            q.start = Some(5.5);
            q.end = Some(6.5);
        }))
        .await
        .expect("time");
    assert_eq!(by(timed), vec!["e2"]);
    let page = store
        .list_events(&q(&|q| {
            q.after_seq = s1;
            q.limit = 1;
        }))
        .await
        .expect("page");
    assert_eq!(by(page), vec!["e2"]);
    // The log interleaves both kinds in sequence order, cut at the limit.
    let log = store.log_after(0, 4).await.expect("log");
    assert_eq!(log.samples.len(), 3);
    assert_eq!(log.events.len(), 1);
    assert_eq!(log.last_seq(), Some(s1));
    let rest = store.log_after(s1, 1000).await.expect("rest");
    assert_eq!(rest.samples.len(), 2);
    assert_eq!(rest.events.len(), 2);
    // Retention by receive time (e1 and e2 came at 7 000, e3 at 8 000), in
    // bounded batches.
    assert_eq!(
        store.delete_events_before(7_500, 1).await.expect("delete"),
        1
    );
    assert_eq!(
        store.delete_events_before(7_500, 10).await.expect("delete"),
        1
    );
    assert_eq!(
        store.delete_events_before(7_500, 10).await.expect("delete"),
        0
    );
    let left = store.list_events(&q(&|_| {})).await.expect("left");
    assert_eq!(by(left), vec!["e3"]);
}

/// Two stores on one database (two replicas) append samples and events
/// concurrently while a reader follows the log the way a publisher does.
/// Every item must be seen exactly once: a reader that has passed `seq`
/// never finds a smaller one committed later.
async fn expired_silences_are_deleted_after_their_retention_and_others_kept(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let store = open(&db).await;
    let day = 86_400_000;
    let now = 1_800_000_000_000;
    for (id, ends) in [
        ("old", now - 6 * day),
        ("recent", now - day),
        ("active", now + day),
    ] {
        store
            .save_silence(id, &format!("{{\"id\":\"{id}\"}}"), ends, now - 7 * day)
            .await
            .expect("save");
    }
    assert_eq!(
        store
            .delete_silences_ended_before(now - 5 * day)
            .await
            .expect("delete"),
        1
    );
    let mut left = store.list_silences().await.expect("list");
    left.sort();
    assert_eq!(left, vec![r#"{"id":"active"}"#, r#"{"id":"recent"}"#]);
}

async fn a_log_reader_misses_nothing_while_two_writers_append(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let first = open(&db).await;
    let second = if db.database_url().is_some() {
        open(&db).await
    } else {
        first.clone()
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, store) in [first.clone(), second.clone()].into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            for round in 0..40 {
                if round % 2 == 0 {
                    commit_samples(&store, &format!("w{w}-{round}"), 50).await;
                } else {
                    let events: Vec<NewEvent> = (0..20)
                        .map(|i| event(&format!("{w}-{round}-{i}"), "TaskStarted", 1_000, None))
                        .collect();
                    store.append_events(&events, 1_000).await.expect("append");
                }
            }
        }));
    }
    let reader = {
        let store = first.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let items = store.log_after(cursor, 37).await.expect("read");
                seen.extend(items.samples.iter().map(|s| s.seq));
                seen.extend(items.events.iter().map(|e| e.seq));
                match items.last_seq() {
                    Some(last) => cursor = last,
                    None if finished => break,
                    None => tokio::task::yield_now().await,
                }
            }
            seen
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = reader.await.expect("reader");
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), count, "an item was read twice");
    let stored = first.log_after(0, 100_000).await.expect("all");
    assert_eq!(stored.len(), 2 * (20 * 50 + 20 * 20));
    assert_eq!(count, stored.len(), "the reader skipped items");
}

async fn leases_are_exclusive_across_replicas_and_free_after_release(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let first = open(&db).await;
    let mut lease = first
        .try_lease("publisher/es")
        .await
        .expect("lease")
        .expect("free lease");
    assert!(lease.held().await);
    if db.database_url().is_none() {
        // SQLite serves one process: nothing to exclude.
        return;
    }
    let second = open(&db).await;
    assert!(second
        .try_lease("publisher/es")
        .await
        .expect("try")
        .is_none());
    let mut other = second
        .try_lease("publisher/slack")
        .await
        .expect("try")
        .expect("another name is free");
    assert!(other.held().await);
    lease.release().await;
    let mut taken = second
        .try_lease("publisher/es")
        .await
        .expect("try")
        .expect("free after release");
    assert!(taken.held().await);
    drop(taken);
    // Dropping the lease's session frees it too (the replica died).
    let mut retaken = None;
    for _ in 0..50 {
        retaken = first.try_lease("publisher/es").await.expect("try");
        if retaken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        retaken
            .expect("free after the holder's session ended")
            .held()
            .await
    );
    other.release().await;
}

vigil_tests::backend_tests!(
    expired_silences_are_deleted_after_their_retention_and_others_kept,
    events_share_the_log_with_samples_and_duplicates_are_kept_once,
    a_log_reader_misses_nothing_while_two_writers_append,
    leases_are_exclusive_across_replicas_and_free_after_release,
    commit_assigns_series_ids_and_samples_come_back_in_sequence_order,
    a_failing_commit_leaves_nothing_behind,
    latest_values_checkpoint_and_aggregate_state_survive_reopening,
    deleted_series_leave_loading_but_stay_findable_and_revive,
    retention_deletes_only_old_samples_in_bounded_batches,
    components_register_heartbeat_and_list,
);
