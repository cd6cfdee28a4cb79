//! Native tests of the body and the response mapping (no wasi:http needed).

use super::*;
use vigil_plugin::publisher::{BatchBuilder, MetricKind};

fn batch() -> Batch {
    BatchBuilder::new()
        .sample(
            5,
            "svc",
            "up",
            MetricKind::Gauge,
            1.5,
            1_700_000_000_000,
            &[("host", "a")],
        )
        .sample(
            6,
            "svc",
            "lat",
            MetricKind::Histogram,
            f64::NAN,
            1_700_000_000_001,
            &[],
        )
        .event(
            7,
            1_700_000_000_002,
            "TaskCreated",
            "exec-1",
            r#"{"k":"v"}"#,
        )
        .event(8, 1_700_000_000_003, "x.Custom", "exec-1", "not json")
        .build()
}

#[test]
fn body_has_samples_labels_and_events() {
    let v: serde_json::Value = serde_json::to_value(body::BatchBody(&batch())).expect("serialises");
    assert_eq!(
        v["samples"][0],
        serde_json::json!({"seq":5,"component":"svc","name":"up","kind":"gauge","value":1.5,
            "timestamp_ms":1_700_000_000_000_i64,"labels":{"host":"a"}})
    );
    assert_eq!(v["samples"][1]["value"], serde_json::Value::Null);
    assert_eq!(v["events"][0]["attributes"], serde_json::json!({"k":"v"}));
    assert_eq!(v["events"][1]["attributes"], "not json");
    assert_eq!(v["events"][1]["event_type"], "x.Custom");
}

#[test]
fn responses_map_to_reports_and_errors() {
    let b = batch();
    let ok = outcome(&b, Response::new(202, vec![], vec![])).expect("2xx accepted");
    assert!(ok.rejected().is_empty());

    let partial = Response::new(
        400,
        vec![],
        br#"{"rejected":[{"seq":6,"reason":"NaN"},{"seq":99,"reason":"not ours"}]}"#.to_vec(),
    );
    let report = outcome(&b, partial).expect("400 with rejections is a report");
    let rejected: Vec<(u64, &str)> = report
        .rejected()
        .iter()
        .map(|r| (r.seq, r.reason.as_str()))
        .collect();
    assert_eq!(rejected, vec![(6, "NaN")]);

    let bad = outcome(&b, Response::new(400, vec![], b"nope".to_vec())).unwrap_err();
    assert!(!bad.is_retryable());
    let limited = Response::new(429, vec![("retry-after".into(), b"3".to_vec())], vec![]);
    assert_eq!(
        outcome(&b, limited).unwrap_err(),
        PublishError::Retryable {
            message: "receiver answered HTTP 429".into(),
            retry_after_ms: Some(3000)
        }
    );
    assert!(outcome(&b, Response::new(503, vec![], vec![]))
        .unwrap_err()
        .is_retryable());
    assert!(outcome(&b, Response::new(502, vec![], vec![]))
        .unwrap_err()
        .is_retryable());
    assert!(!outcome(&b, Response::new(401, vec![], vec![]))
        .unwrap_err()
        .is_retryable());
    assert!(!outcome(&b, Response::new(302, vec![], vec![]))
        .unwrap_err()
        .is_retryable());
}

#[test]
fn configuration_is_checked() {
    assert!(WebhookPublisher::configure(&Config::default()).is_err());
    let bad = Config::from_pairs([("url", "ftp://x")]);
    assert!(WebhookPublisher::configure(&bad).is_err());
    let zero = Config::from_pairs([("url", "http://x"), ("timeout_ms", "0")]);
    assert!(WebhookPublisher::configure(&zero).is_err());
    let ok = Config::from_pairs([("url", "http://x"), ("timeout_ms", "250")]);
    let p = WebhookPublisher::configure(&ok).expect("valid");
    assert_eq!(p.timeout, Duration::from_millis(250));
    let schema: serde_json::Value =
        serde_json::from_str(&WebhookPublisher::config_schema()).expect("schema is JSON");
    assert_eq!(schema["required"], serde_json::json!(["url"]));
    assert_eq!(schema["properties"]["url"]["format"], "uri");
}
