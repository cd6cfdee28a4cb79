//! Bad reports are rejected with the contract's errors and store nothing, over
//! SQLite and PostgreSQL. Every test first stores a good sample and, after each
//! bad request, checks that the stored data is exactly what it was.

use vigil_tests::*;

struct Fixture {
    _db: TestDatabase,
    server: TestServer,
    comp: String,
    baseline: Vec<Value>,
}

impl Fixture {
    async fn new(backend: &Backend, args: &[&str]) -> Fixture {
        let db = TestDatabase::new(backend).await;
        let server = TestServer::builder(&db)
            .args(args.iter().copied())
            .start()
            .await;
        let comp = unique("good");
        server
            .report_ok(&report(
                &comp,
                [gauge("baseline_value", 42.0)
                    .label("kind", "baseline")
                    .help("A good sample")],
            ))
            .await;
        let baseline = server.query_all(&[]).await;
        assert_eq!(baseline.len(), 1);
        Fixture {
            _db: db,
            server,
            comp,
            baseline,
        }
    }

    /// The store holds exactly the baseline sample.
    async fn assert_unchanged(&self, what: &str) {
        let now = self.server.query_all(&[]).await;
        assert_eq!(now, self.baseline, "after {what}: stored samples changed");
    }

    /// Sends a JSON report, expects `status`/`code`, checks nothing was stored;
    /// returns the error object.
    async fn rejects(&self, what: &str, body: &Value, status: u16, code: &str) -> Value {
        let err = expect_error(self.server.report(body).await, status, code).await;
        self.assert_unchanged(what).await;
        err
    }

    /// Sends a raw body, expects 400 with one of `codes`, checks nothing was stored.
    async fn rejects_raw(&self, what: &str, body: &str, codes: &[&str]) -> Value {
        let (status, json) = status_json(
            self.server
                .post_raw("/api/v2/metrics/report", body.to_string())
                .await,
        )
        .await;
        assert_eq!(status, 400, "{what}: {json}\nbody: {body}");
        let code = json["error"]["code"].as_str().unwrap_or_default();
        assert!(
            codes.contains(&code),
            "{what}: code {code:?} not in {codes:?}: {json}"
        );
        assert!(json["error"]["message"].is_string(), "{what}: {json}");
        self.assert_unchanged(what).await;
        json["error"].clone()
    }
}

/// Asserts `err.details` has an entry with `index` and a field starting with `field`.
fn assert_detail(err: &Value, index: Option<usize>, field: &str) {
    let details = err["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details array: {err}"));
    let want_index = index.map_or(Value::Null, |i| json!(i));
    let found = details.iter().any(|d| {
        d["index"] == want_index
            && d["field"].as_str().is_some_and(|f| f.starts_with(field))
            && d["reason"].as_str().is_some_and(|r| !r.is_empty())
    });
    assert!(
        found,
        "expected a detail with index {want_index} and field {field}*: {err}"
    );
}

fn item(name: &str) -> MetricItem {
    gauge(name, 1.0).help("h")
}

async fn malformed_json_is_rejected_with_400_and_stores_nothing(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let good = serde_json::to_string(&report(&f.comp, [item("x")])).expect("json");
    for body in [
        "{",
        "not json at all",
        "",
        &good[..good.len() - 1],
        "{\"component_name\": \"x\", \"component_type\": \"y\", \"metrics\": [}",
        "{\"component_name\": \"x\" \"metrics\": []}",
    ] {
        let err = f
            .rejects_raw(
                &format!("malformed body {body:?}"),
                body,
                &["malformed_json"],
            )
            .await;
        assert!(!err["message"].as_str().unwrap_or_default().is_empty());
    }
    // Sanity: the unmangled body is accepted.
    let (status, _) = status_json(f.server.post_raw("/api/v2/metrics/report", good).await).await;
    assert_eq!(status, 200);
}

async fn items_with_wrong_types_are_rejected_naming_index_and_field(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let c = &f.comp;
    let err = f
        .rejects(
            "string metric_value",
            &report(
                c,
                [item("ok_one"), item("x").field("metric_value", json!("12"))],
            ),
            400,
            "invalid_report",
        )
        .await;
    assert_detail(&err, Some(1), "metric_value");
    let err = f
        .rejects(
            "labels not an object",
            &report(
                c,
                [item("x").field("labels", json!(["a", "b"])), item("ok_two")],
            ),
            400,
            "invalid_report",
        )
        .await;
    assert_detail(&err, Some(0), "labels");
    let err = f
        .rejects(
            "numeric label value",
            &report(c, [item("x").field("labels", json!({"a": 1}))]),
            400,
            "invalid_report",
        )
        .await;
    assert_detail(&err, Some(0), "labels");
    let err = f
        .rejects(
            "missing metric_value",
            &report(c, [json!({"metric_name": "x", "metric_type": "gauge"})]),
            400,
            "invalid_report",
        )
        .await;
    assert_detail(&err, Some(0), "metric_value");
    // Top-level shape errors: 400, index null where details are given.
    for (what, body) in [
        (
            "metrics not an array",
            json!({"component_name": c, "component_type": "worker_pool", "metrics": {"a": 1}}),
        ),
        (
            "metrics missing",
            json!({"component_name": c, "component_type": "worker_pool"}),
        ),
        (
            "component_name not a string",
            json!({"component_name": 7, "component_type": "worker_pool", "metrics": []}),
        ),
        ("body not an object", json!([1, 2, 3])),
    ] {
        let err = f
            .rejects_raw(
                what,
                &body.to_string(),
                &["invalid_report", "malformed_json"],
            )
            .await;
        if err["code"] == "invalid_report" && what != "body not an object" {
            let details = err["details"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no details: {err}"));
            assert!(
                details.iter().any(|d| d["index"].is_null()),
                "{what}: top-level detail needs index null: {err}"
            );
        }
    }
}

async fn non_finite_values_are_rejected(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let c = f.comp.clone();
    // Python's NaN / Infinity tokens are a gauge's right (see noetl.rs), not
    // a counter's; an overflowing 1e400 is no number at all.
    for (kind, literal) in [
        ("counter", "NaN"),
        ("counter", "Infinity"),
        ("counter", "-Infinity"),
        ("summary", "NaN"),
        ("gauge", "1e400"),
        ("gauge", "-1e400"),
    ] {
        let body = format!(
            r#"{{"component_name":"{c}","component_type":"worker_pool","metrics":[{{"metric_name":"x","metric_type":"{kind}","metric_value":{literal}}}]}}"#
        );
        f.rejects_raw(
            &format!("{kind} metric_value {literal}"),
            &body,
            &["malformed_json", "invalid_report"],
        )
        .await;
    }
    // Strings that some parsers would turn into non-finite floats.
    for s in ["NaN", "Infinity", "-Infinity", "inf", "1e400"] {
        let err = f
            .rejects(
                &format!("metric_value {s:?}"),
                &report(&c, [item("x").field("metric_value", json!(s))]),
                400,
                "invalid_report",
            )
            .await;
        assert_detail(&err, Some(0), "metric_value");
    }
}

async fn invalid_metric_and_label_names_are_rejected(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let c = &f.comp;
    let too_long = "m".repeat(201);
    for name in ["1abc", "a-b", "", "a b", "é", "a.b", too_long.as_str()] {
        let err = f
            .rejects(
                &format!("metric name {name:?}"),
                &report(c, [item(name)]),
                400,
                "invalid_report",
            )
            .await;
        assert_detail(&err, Some(0), "metric_name");
    }
    // 200 characters is still fine, and so are colons.
    let longest = "m".repeat(200);
    f.server
        .report_ok(&report(c, [item(&longest), item("ns:sub:metric")]))
        .await;
    let baseline_plus = f.server.query_all(&[]).await;
    assert_eq!(baseline_plus.len(), 3);

    for label in ["1abc", "a-b", "__reserved", "", "a:b", "a b"] {
        let body = report(c, [item("labelled").label(label, "v")]);
        let (status, json) = status_json(f.server.report(&body).await).await;
        assert_eq!(status, 400, "label name {label:?}: {json}");
        assert_eq!(json["error"]["code"], "invalid_report", "{json}");
        assert_detail(&json["error"], Some(0), "labels");
        assert_eq!(
            f.server.query_all(&[]).await,
            baseline_plus,
            "label name {label:?} stored something"
        );
    }
    // Too many labels (33) and an over-long label value.
    let mut many = item("labelled");
    for i in 0..33 {
        many = many.label(&format!("l{i}"), "v");
    }
    let (status, json) = status_json(f.server.report(&report(c, [many])).await).await;
    assert_eq!(status, 400, "33 labels: {json}");
    assert_detail(&json["error"], Some(0), "labels");
    let (status, json) = status_json(
        f.server
            .report(&report(
                c,
                [item("labelled").label("big", &"v".repeat(2049))],
            ))
            .await,
    )
    .await;
    assert_eq!(status, 400, "2049-byte label value: {json}");
    assert_detail(&json["error"], Some(0), "labels");
    assert_eq!(f.server.query_all(&[]).await, baseline_plus);
}

async fn unknown_types_negative_counters_and_type_conflicts_are_rejected(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let c = &f.comp;
    for t in ["meter", "", "Gauge", "untyped"] {
        let err = f
            .rejects(
                &format!("metric_type {t:?}"),
                &report(c, [item("x").field("metric_type", json!(t))]),
                400,
                "invalid_report",
            )
            .await;
        assert_detail(&err, Some(0), "metric_type");
    }
    let err = f
        .rejects(
            "negative counter",
            &report(c, [counter("things_total", -1.0).help("h")]),
            400,
            "invalid_report",
        )
        .await;
    assert_detail(&err, Some(0), "metric_value");
    // baseline_value is known as a gauge.
    let err = f
        .rejects(
            "type conflict",
            &report(c, [counter("baseline_value", 1.0).help("h")]),
            400,
            "invalid_report",
        )
        .await;
    let d = &err["details"][0];
    assert_eq!(d["index"], 0, "{err}");
    assert!(
        d["field"] == "metric_type" || d["field"] == "metric_name",
        "type conflict should name metric_type or metric_name: {err}"
    );
    // Also from another component, and within one report.
    let err = f
        .rejects(
            "type conflict elsewhere",
            &report("another", [histogram("baseline_value", 1.0)]),
            400,
            "invalid_report",
        )
        .await;
    assert_eq!(err["details"][0]["index"], 0, "{err}");
    let err = f
        .rejects(
            "type conflict inside one report",
            &report(c, [gauge("fresh_name", 1.0), counter("fresh_name", 1.0)]),
            400,
            "invalid_report",
        )
        .await;
    assert_eq!(err["details"][0]["index"], 1, "{err}");
    // Zero is a fine counter value.
    f.server
        .report_ok(&report(c, [counter("things_total", 0.0).help("h")]))
        .await;
}

async fn garbage_timestamps_are_rejected(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let c = &f.comp;
    for ts in [
        json!("yesterday"),
        json!("2024-13-45T99:00:00Z"),
        json!(""),
        json!("12:00"),
        json!({"t": 1}),
        json!(true),
    ] {
        let err = f
            .rejects(
                &format!("timestamp {ts}"),
                &report(c, [item("x").field("timestamp", ts.clone())]),
                400,
                "invalid_report",
            )
            .await;
        assert_detail(&err, Some(0), "timestamp");
    }
    // Naive ISO is UTC; offsets are honoured.
    f.server
        .report_ok(&report(
            c,
            [
                item("ts_naive").at("2024-01-01T12:00:00"),
                item("ts_offset").at("2024-01-01T14:00:00+02:00"),
            ],
        ))
        .await;
    for name in ["ts_naive", "ts_offset"] {
        let s = f.server.query_all(&[("metric_name", name)]).await;
        assert_eq!(
            parse_ts(&s[0]["timestamp"]),
            parse_ts(&json!("2024-01-01T12:00:00Z")),
            "{name}"
        );
    }
}

async fn oversized_bodies_and_too_many_items_get_413(backend: Backend) {
    let f = Fixture::new(
        &backend,
        &["--max-items-per-request", "5", "--max-body-bytes", "4096"],
    )
    .await;
    let c = &f.comp;
    // Exactly at the item limit is fine.
    let five: Vec<MetricItem> = (0..5).map(|i| gauge("five", f64::from(i))).collect();
    f.server.report_ok(&report(c, five)).await;
    let baseline = f.server.query_all(&[]).await;
    assert_eq!(baseline.len(), 6);

    let six: Vec<MetricItem> = (0..6).map(|i| gauge("six", f64::from(i))).collect();
    expect_error(
        f.server.report(&report(c, six)).await,
        413,
        "payload_too_large",
    )
    .await;
    assert_eq!(
        f.server.query_all(&[]).await,
        baseline,
        "too many items stored something"
    );

    let big = report(c, [gauge("big", 1.0).help(&"x".repeat(6000))]);
    expect_error(f.server.report(&big).await, 413, "payload_too_large").await;
    assert_eq!(
        f.server.query_all(&[]).await,
        baseline,
        "oversized body stored something"
    );
    // Far beyond the limit, without Content-Length (chunked) too.
    let huge = "y".repeat(200_000);
    let body = reqwest::Body::wrap_stream(futures::stream::iter(vec![Ok::<_, std::io::Error>(
        huge.into_bytes(),
    )]));
    let resp = f.server.post_raw("/api/v2/metrics/report", body).await;
    expect_error(resp, 413, "payload_too_large").await;
    assert_eq!(f.server.query_all(&[]).await, baseline);
}

async fn a_report_with_several_bad_items_lists_every_one_and_stores_none(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let body = report(
        &f.comp,
        [
            item("fine_one"),
            item("1bad"),
            item("fine_two"),
            counter("neg_total", -5.0),
            item("labelled").label("bad-label", "v"),
            item("fine_three").field("metric_type", json!("meter")),
            item("fine_four"),
        ],
    );
    let err = f
        .rejects("several bad items", &body, 400, "invalid_report")
        .await;
    assert_detail(&err, Some(1), "metric_name");
    assert_detail(&err, Some(3), "metric_value");
    assert_detail(&err, Some(4), "labels");
    assert_detail(&err, Some(5), "metric_type");
    let indexes: Vec<Value> = err["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["index"].clone())
        .collect();
    for good in [0, 2, 6] {
        assert!(
            !indexes.contains(&json!(good)),
            "good item {good} listed as bad: {err}"
        );
    }
}

async fn label_values_with_quotes_backslashes_newlines_and_unicode_round_trip(backend: Backend) {
    let f = Fixture::new(&backend, &[]).await;
    let tricky = [
        ("quote", "say \"hi\""),
        ("backslash", r"C:\path\to\file"),
        ("newline", "line one\nline two"),
        ("unicode", "ünïcödé ✓ 日本語 🚀"),
        ("mixed", "a\\\"b\n\\n"),
        ("empty_ish", " "),
    ];
    let mut m = gauge("tricky_labels", 3.5).help("Help with \\ backslash and\nnewline");
    for (k, v) in tricky {
        m = m.label(k, v);
    }
    f.server.report_ok(&report(&f.comp, [m])).await;
    let stored = f
        .server
        .query_all(&[("metric_name", "tricky_labels")])
        .await;
    assert_eq!(stored.len(), 1);
    let expected: serde_json::Map<String, Value> = tricky
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    assert_eq!(
        stored[0]["labels"],
        Value::Object(expected),
        "labels must round-trip exactly"
    );
    // Label filters match the exact value too.
    let by_label = f
        .server
        .query_all(&[("label", "newline=line one\nline two")])
        .await;
    assert_eq!(by_label.len(), 1, "label filter with a newline value");

    let text = f.server.export().await;
    let line = text
        .lines()
        .find(|l| l.starts_with("tricky_labels{"))
        .unwrap_or_else(|| panic!("tricky_labels not exported:\n{text}"));
    assert!(line.contains(r#"quote="say \"hi\"""#), "{line}");
    assert!(line.contains(r#"backslash="C:\\path\\to\\file""#), "{line}");
    assert!(line.contains(r#"newline="line one\nline two""#), "{line}");
    assert!(line.contains(r#"mixed="a\\\"b\n\\n""#), "{line}");
    assert!(line.contains("unicode=\"ünïcödé ✓ 日本語 🚀\""), "{line}");
    assert!(
        text.contains("# HELP tricky_labels Help with \\\\ backslash and\\nnewline"),
        "help escaping:\n{text}"
    );
    let samples = parse_exposition(&text);
    let s = find_samples(&samples, "tricky_labels", &[("component", &f.comp)]);
    assert_eq!(s.len(), 1);
    for (k, v) in tricky {
        assert_eq!(
            s[0].label(k),
            Some(v),
            "exported label {k} does not unescape to the original"
        );
    }
    promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

/// The default body limit is --max-body-bytes (16 MiB), not the web
/// framework's own 2 MiB: a 3 MB report of valid items is accepted.
async fn bodies_above_two_mebibytes_but_under_the_limit_are_accepted(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let help = "h".repeat(300);
    let component = unique("big");
    let body = report(
        &component,
        (0..9000).map(|i| gauge(&format!("big_gauge_{}", i % 50), i as f64).help(&help)),
    );
    assert!(body.to_string().len() > 3_000_000);
    server.report_ok(&body).await;
    let stored = server.query_all(&[("component_name", &component)]).await;
    assert_eq!(stored.len(), 9000);
}

backend_tests!(
    bodies_above_two_mebibytes_but_under_the_limit_are_accepted,
    malformed_json_is_rejected_with_400_and_stores_nothing,
    items_with_wrong_types_are_rejected_naming_index_and_field,
    non_finite_values_are_rejected,
    invalid_metric_and_label_names_are_rejected,
    unknown_types_negative_counters_and_type_conflicts_are_rejected,
    garbage_timestamps_are_rejected,
    oversized_bodies_and_too_many_items_get_413,
    a_report_with_several_bad_items_lists_every_one_and_stores_none,
    label_values_with_quotes_backslashes_newlines_and_unicode_round_trip,
);
