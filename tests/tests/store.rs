//! The storage suite: the same behaviour checked through the `Store` trait on
//! SQLite and on PostgreSQL.

use std::sync::Arc;

use vigil_host::metrics::model::MetricKind;
use vigil_host::store::{
    self, Component, ComponentTouch, LatestValue, NewSeries, SampleQuery, SampleRow, SeriesRef,
    Store, WriteBatch,
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
    store
        .register_component(&Component {
            name: "w1".into(),
            component_type: "worker_pool".into(),
            capabilities: vec!["cpu".into(), "gpu".into()],
            capacity: Some(4),
            registered_at_ms: 100,
            last_heartbeat_ms: 100,
        })
        .await
        .expect("register");
    let c = store
        .heartbeat("w1", 200)
        .await
        .expect("heartbeat")
        .expect("known");
    assert_eq!(c.last_heartbeat_ms, 200);
    assert_eq!(c.registered_at_ms, 100);
    assert_eq!(c.capabilities, vec!["cpu".to_string(), "gpu".to_string()]);
    assert_eq!(c.capacity, Some(4));
    let all = store.list_components().await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].component_type, "worker_pool");
}

vigil_tests::backend_tests!(
    commit_assigns_series_ids_and_samples_come_back_in_sequence_order,
    a_failing_commit_leaves_nothing_behind,
    latest_values_checkpoint_and_aggregate_state_survive_reopening,
    deleted_series_leave_loading_but_stay_findable_and_revive,
    retention_deletes_only_old_samples_in_bounded_batches,
    components_register_heartbeat_and_list,
);
