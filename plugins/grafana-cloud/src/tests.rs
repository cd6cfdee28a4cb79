//! Native tests: series naming, labels, order.

use super::*;
use vigil_plugin::publisher::{BatchBuilder, MetricKind};

#[test]
fn series_are_named_as_the_export_and_ordered_by_time() {
    let batch = BatchBuilder::new()
        .sample(
            1,
            "w1",
            "jobs",
            MetricKind::Counter,
            3.0,
            2000,
            &[("queue", "a"), ("component", "x")],
        )
        .sample(
            2,
            "w1",
            "jobs",
            MetricKind::Counter,
            2.0,
            1000,
            &[("queue", "a"), ("component", "x")],
        )
        .sample(
            3,
            "w1",
            "depth",
            MetricKind::Gauge,
            1.0,
            1000,
            &[("empty", "")],
        )
        .sample(4, "w1", "reqs_total", MetricKind::Counter, 1.0, 1000, &[])
        .sample(5, "w1", "lat", MetricKind::Histogram, 0.2, 1000, &[])
        .build();
    let g = series::group(&batch, CounterNames::Total);
    let names: Vec<&str> = g.labels.iter().map(|l| l[0].1.as_str()).collect();
    assert_eq!(names, vec!["depth", "jobs_total", "reqs_total"]);
    assert_eq!(
        g.labels[1],
        vec![
            ("__name__".to_string(), "jobs_total".to_string()),
            ("component".to_string(), "w1".to_string()),
            ("exported_component".to_string(), "x".to_string()),
            ("queue".to_string(), "a".to_string()),
        ]
    );
    assert_eq!(
        g.labels[0].len(),
        2,
        "empty labels are dropped: {:?}",
        g.labels[0]
    );
    let jobs: Vec<(i64, u64)> = g
        .units
        .iter()
        .filter(|u| u.series == 1)
        .map(|u| (u.ts, u.seq))
        .collect();
    assert_eq!(jobs, vec![(1000, 2), (2000, 1)]);
    assert_eq!(g.unsupported.len(), 1);
    assert_eq!(g.unsupported[0].0, 5);
    let s = series::series_of(&g.labels, &g.units);
    assert_eq!(s.len(), 3);
    assert_eq!(s[1].samples, vec![(1000, 2.0), (2000, 3.0)]);
    let reported = series::group(&batch, CounterNames::Reported);
    assert_eq!(reported.labels[1][0].1, "jobs");
}

#[test]
fn events_become_loki_streams_in_time_order() {
    let batch = BatchBuilder::new()
        .event(
            3,
            2000,
            "TaskDone",
            "t1",
            r#"{"backend":"dim","task_id":"t1"}"#,
        )
        .event(
            4,
            1000,
            "TaskDone",
            "t2",
            r#"{"backend":"dim","task_id":"t2"}"#,
        )
        .event(5, 1500, "x.Custom", "s", "not json")
        .build();
    let s = loki::group(&batch, "vigil");
    assert_eq!(s.labels.len(), 2);
    assert_eq!(
        s.labels[0],
        vec![
            ("backend".to_string(), "dim".to_string()),
            ("event_type".to_string(), "TaskDone".to_string()),
            ("service".to_string(), "vigil".to_string()),
        ]
    );
    let order: Vec<u64> = s.entries.iter().map(|e| e.seq).collect();
    assert_eq!(order, vec![4, 3, 5]);
    let body: serde_json::Value =
        serde_json::from_slice(&loki::push_body(&s.labels, &s.entries)).expect("json");
    assert_eq!(body["streams"][0]["values"][0][0], "1000000000");
    let line: serde_json::Value =
        serde_json::from_str(body["streams"][0]["values"][0][1].as_str().expect("line"))
            .expect("line json");
    assert_eq!(line["attributes"]["task_id"], "t2");
    assert_eq!(line["seq"], 4);
    assert_eq!(body["streams"][1]["stream"]["event_type"], "x.Custom");
}
