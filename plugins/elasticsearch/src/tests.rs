//! Native tests: documents, request splitting, answers, configuration.

use super::*;
use serde_json::{json, Value};
use vigil_plugin::publisher::{BatchBuilder, MetricKind};

use crate::settings::Mode;

fn batch() -> Batch {
    BatchBuilder::new()
        .sample(5, "svc", "up", MetricKind::Gauge, 1.5, 1_700_000_000_000, &[("host", "a\"b")])
        .event(6, 1_700_000_000_002, "TaskCreated", "exec-1",
               r#"{"event_id":"ev1","session_id":"s1","asyncflow.workflow_id":"wf","task_id":"t1","backend":"dim"}"#)
        .sample(7, "svc", "lat", MetricKind::Histogram, f64::NAN, 1_699_999_999_999, &[])
        .event(8, 1_700_000_000_003, "x.Custom", "exec-1", "not json")
        .build()
}

fn lines(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn dates_are_utc() {
    assert_eq!(docs::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(docs::rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(docs::rfc3339(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(docs::index_date(951_782_400_000), "2000.02.29");
}

#[test]
fn every_item_is_a_create_with_its_seq_as_id_in_log_order() {
    let mode = Mode::Indices {
        prefix: "vigil".into(),
    };
    let chunks = docs::encode(&batch(), &mode, 1 << 20);
    assert_eq!(chunks.len(), 1);
    let (body, items) = &chunks[0];
    assert!(body.ends_with(b"\n"));
    let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
    assert_eq!(seqs, vec![5, 6, 7, 8]);
    let l = lines(body);
    assert_eq!(l.len(), 8);
    assert_eq!(
        l[0],
        json!({"create": {"_index": "vigil-metrics-2023.11.14", "_id": "m-5"}})
    );
    assert_eq!(
        l[1],
        json!({"@timestamp": "2023-11-14T22:13:20.000Z", "name": "up", "type": "gauge", "value": 1.5,
               "labels": {"host": "a\"b"}, "component": "svc", "seq": 5})
    );
    assert_eq!(
        l[2],
        json!({"create": {"_index": "vigil-events-2023.11.14", "_id": "e-6"}})
    );
    assert_eq!(
        l[3],
        json!({"@timestamp": "2023-11-14T22:13:20.002Z", "type": "TaskCreated", "id": "ev1",
               "session": "s1", "workflow": "wf", "task": "t1", "backend": "dim", "source": "exec-1",
               "attributes": {"event_id":"ev1","session_id":"s1","asyncflow.workflow_id":"wf","task_id":"t1","backend":"dim"},
               "seq": 6})
    );
    assert_eq!(l[4]["create"]["_index"], "vigil-metrics-2023.11.14");
    assert_eq!(l[5]["value"], Value::Null);
    assert_eq!(l[5]["type"], "histogram");
    assert_eq!(l[7]["attributes"], json!({"value": "not json"}));
    assert_eq!(l[7]["id"], Value::Null);

    let ds = Mode::DataStream {
        namespace: "prod".into(),
    };
    let (body, _) = &docs::encode(&batch(), &ds, 1 << 20)[0];
    let l = lines(body);
    assert_eq!(l[0]["create"]["_index"], "metrics-vigil-prod");
    assert_eq!(l[2]["create"]["_index"], "logs-vigil-prod");
}

#[test]
fn large_batches_split_at_max_bulk_bytes() {
    let mut b = BatchBuilder::new();
    for i in 0..500u64 {
        b = b.sample(
            i + 1,
            "svc",
            "m",
            MetricKind::Counter,
            i as f64,
            1_700_000_000_000,
            &[("k", "v")],
        );
    }
    let b = b.build();
    let mode = Mode::Indices {
        prefix: "vigil".into(),
    };
    let chunks = docs::encode(&b, &mode, 4096);
    assert!(chunks.len() > 10, "{}", chunks.len());
    let mut seqs = Vec::new();
    for (body, items) in &chunks {
        assert!(body.len() <= 4096, "{}", body.len());
        assert_eq!(lines(body).len(), items.len() * 2);
        seqs.extend(items.iter().map(|i| i.seq));
    }
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
}

fn answer(items: Value) -> Response {
    Response::new(
        200,
        vec![],
        json!({"took": 3, "errors": true, "items": items})
            .to_string()
            .into_bytes(),
    )
}

#[test]
fn each_item_of_the_answer_counts() {
    let mode = Mode::Indices {
        prefix: "vigil".into(),
    };
    let chunks = docs::encode(&batch(), &mode, 1 << 20);
    let items = &chunks[0].1;
    let ok = answer(json!([
        {"create": {"_id": "m-5", "status": 201}},
        {"create": {"_id": "e-6", "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "exists"}}},
        {"create": {"_id": "m-7", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [value]",
                    "caused_by": {"type": "x", "reason": "not a double"}}}},
        {"create": {"_id": "e-8", "status": 201}}
    ]));
    let mut outcome = bulk::Outcome::default();
    bulk::read_items(&ok, items, &mut outcome).expect("read");
    let report = outcome.into_report().expect("report");
    assert_eq!(report.rejected().len(), 1);
    assert_eq!(report.rejected()[0].seq, 7);
    assert!(
        report.rejected()[0].reason.contains(
            "mapper_parsing_exception: failed to parse field [value] (caused by: not a double)"
        ),
        "{}",
        report.rejected()[0].reason
    );

    let busy = answer(json!([
        {"create": {"_id": "m-5", "status": 201}},
        {"create": {"_id": "e-6", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
        {"create": {"_id": "m-7", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "x"}}},
        {"create": {"_id": "e-8", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "y"}}}
    ]));
    let mut outcome = bulk::Outcome::default();
    bulk::read_items(&busy, items, &mut outcome).expect("read");
    let e = outcome.into_report().unwrap_err();
    assert!(
        e.is_retryable()
            && e.message().contains("2 items")
            && e.message().contains("es_rejected_execution_exception"),
        "{e}"
    );

    for wrong in [
        answer(json!([{"create": {"_id": "m-5", "status": 201}}])),
        answer(
            json!([{"create": {"_id": "e-6", "status": 201}}, {"create": {"_id": "m-5", "status": 201}},
                      {"create": {"_id": "m-7", "status": 201}}, {"create": {"_id": "e-8", "status": 201}}]),
        ),
        Response::new(200, vec![], b"<html>".to_vec()),
    ] {
        let mut outcome = bulk::Outcome::default();
        let e = bulk::read_items(&wrong, items, &mut outcome).unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }
}

#[test]
fn whole_request_errors_name_the_credential_and_honour_retry_after() {
    let auth = Auth::ApiKey("k".into());
    let body = json!({"error": {"type": "security_exception", "reason": "unable to authenticate"}, "status": 401});
    let r = Response::new(401, vec![], body.to_string().into_bytes());
    let e = bulk::request_error("http://es:9200", "/_bulk", &auth, &r);
    assert!(!e.is_retryable());
    assert!(
        e.message().contains("config.api_key") && e.message().contains("security_exception"),
        "{e}"
    );
    let r = Response::new(
        503,
        vec![("retry-after".into(), b"2".to_vec())],
        b"{}".to_vec(),
    );
    let e = bulk::request_error("http://es:9200", "/_bulk", &auth, &r);
    assert_eq!(
        e,
        PublishError::retryable("http://es:9200/_bulk answered HTTP 503: no reason given")
            .retry_after(2000)
    );
    let r = Response::new(413, vec![], b"too big".to_vec());
    assert!(bulk::request_error("h", "/_bulk", &Auth::None, &r)
        .message()
        .contains("max_bulk_bytes"));
}

#[test]
fn configuration_is_checked() {
    let ok = Config::from_pairs([
        ("hosts", r#"["http://a:9200/","https://b:9200"]"#),
        ("username", "u"),
        ("password", "p"),
    ]);
    let s = Settings::from_config(&ok).expect("valid");
    assert_eq!(s.hosts, vec!["http://a:9200", "https://b:9200"]);
    assert!(matches!(s.auth, Auth::Basic { .. }));
    assert_eq!(
        s.mode,
        Mode::Indices {
            prefix: "vigil".into()
        }
    );
    for (pairs, needle) in [
        (vec![], "`hosts`"),
        (vec![("hosts", "ftp://x")], "http:// or https://"),
        (vec![("hosts", "[7]")], "list of strings"),
        (vec![("hosts", "http://a"), ("mode", "bulk")], "config.mode"),
        (
            vec![("hosts", "http://a"), ("index_prefix", "Bad Prefix")],
            "config.index_prefix",
        ),
        (
            vec![
                ("hosts", "http://a"),
                ("mode", "data_stream"),
                ("namespace", "a-b"),
            ],
            "config.namespace",
        ),
        (
            vec![("hosts", "http://a"), ("api_key", "k"), ("username", "u")],
            "not both",
        ),
        (
            vec![("hosts", "http://a"), ("username", "u")],
            "config.password",
        ),
        (
            vec![("hosts", "http://a"), ("max_bulk_bytes", "10")],
            "max_bulk_bytes",
        ),
        (
            vec![("hosts", "http://a"), ("pipeline", "a b")],
            "config.pipeline",
        ),
    ] {
        let e = Settings::from_config(&Config::from_pairs(pairs.clone())).unwrap_err();
        assert!(e.contains(needle), "{pairs:?}: {e}");
    }
    let schema: Value = serde_json::from_str(&settings::schema()).expect("schema is JSON");
    assert_eq!(schema["required"], json!(["hosts"]));
}
