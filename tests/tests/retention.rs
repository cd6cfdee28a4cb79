//! Retention: samples older than `--retention` are deleted in the background,
//! newer ones stay.

use std::time::Duration;

use vigil_tests::*;

async fn samples_older_than_the_retention_are_deleted_and_newer_ones_kept(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .arg("--retention")
        .arg("1h")
        .start()
        .await;
    let component = unique("ret");
    let old = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let recent = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    server
        .report_ok(&report(
            &component,
            [
                gauge("retained_gauge", 1.0).at(&old),
                gauge("retained_gauge", 2.0).at(&recent),
                gauge("retained_gauge", 3.0),
            ],
        ))
        .await;
    let all = server.query_all(&[("component_name", &component)]).await;
    assert_eq!(all.len(), 3, "{all:?}");
    // The retention pass runs at start and then every retention/10 (60 s here):
    // a restart triggers one now.
    drop(server);
    let server = TestServer::builder(&db)
        .arg("--retention")
        .arg("1h")
        .start()
        .await;
    let kept = poll_until(Duration::from_secs(20), "old sample deleted", || async {
        let rows = server.query_all(&[("component_name", &component)]).await;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    let values: Vec<f64> = kept
        .iter()
        .map(|r| r["metric_value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, vec![2.0, 3.0]);
}

vigil_tests::backend_tests!(samples_older_than_the_retention_are_deleted_and_newer_ones_kept);
