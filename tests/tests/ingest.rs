//! Ingest → store → query → export, over SQLite and PostgreSQL.

use std::collections::BTreeSet;

use vigil_tests::*;

/// Stored samples of `component`, via the v2 query API.
async fn samples_of(server: &TestServer, component: &str) -> Vec<Value> {
    server.query_all(&[("component_name", component)]).await
}

fn values(samples: &[Value]) -> Vec<f64> {
    samples
        .iter()
        .map(|s| s["metric_value"].as_f64().expect("metric_value number"))
        .collect()
}

async fn a_report_round_trips_through_query_and_export(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("worker-cpu");
    let ts = "2024-01-01T12:00:00Z";
    // Stored with an explicit (old) timestamp: checked through the query API.
    let old = report(
        &comp,
        [gauge("noetl_system_cpu_usage_percent", 45.2)
            .at(ts)
            .label("hostname", "node-1")
            .help("CPU usage percentage")
            .unit("percent")],
    );
    let resp = server.post_json("/api/metrics/report", &old).await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["metrics_inserted"], 1, "{body}");
    let runtime_id = body["runtime_id"].as_i64().expect("numeric runtime_id");
    assert!(runtime_id > 0, "{body}");

    // Fresh samples (timestamp now): checked through export too.
    let now = now_rfc3339();
    let fresh = report(
        &comp,
        [
            gauge("queue_depth", 12.0)
                .at(&now)
                .label("queue", "high")
                .help("Jobs waiting in the queue"),
            counter("jobs_processed_total", 7.0)
                .label("queue", "high")
                .help("Jobs processed so far"),
        ],
    );
    let resp = server.post_json("/api/v2/metrics/report", &fresh).await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["metrics_inserted"], 2, "{body}");
    assert_eq!(
        body["runtime_id"], runtime_id,
        "same component, same id: {body}"
    );

    // NoETL's query and Vigil's cursor-paged one find the same three samples.
    let v1 = {
        let resp = server
            .client()
            .get(server.url("/api/metrics/query"))
            .query(&[("component_name", comp.as_str())])
            .send()
            .await
            .expect("query");
        let (status, body) = status_json(resp).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let v2 = server.query_page(&[("component_name", &comp)]).await;
    assert_eq!(v1["count"], 3, "{v1}");
    assert_eq!(v1["limit"], 1000, "{v1}");
    let ids = |rows: &Value, key: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = rows
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r[key].as_i64().expect("id"))
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        ids(&v1["metrics"], "metric_id"),
        ids(&v2["samples"], "seq"),
        "/api/metrics/query and /api/v2/metrics/query find different samples"
    );
    for row in v1["metrics"].as_array().expect("metrics") {
        assert_eq!(row["runtime_id"], runtime_id, "{row}");
        assert_eq!(row["component_name"], comp.as_str(), "{row}");
    }
    // NoETL's order: newest first (the old sample comes last).
    assert_eq!(
        v1["metrics"][2]["metric_name"], "noetl_system_cpu_usage_percent",
        "{v1}"
    );
    assert!(v2["next_cursor"].is_null(), "single page expected: {v2}");
    let samples = v2["samples"].as_array().expect("samples").clone();
    assert_eq!(samples.len(), 3, "{samples:#?}");

    let cpu = &samples[0];
    assert_eq!(cpu["component_name"], comp.as_str());
    assert_eq!(cpu["component_type"], "worker_pool");
    assert_eq!(cpu["metric_name"], "noetl_system_cpu_usage_percent");
    assert_eq!(cpu["metric_type"], "gauge");
    assert_eq!(cpu["metric_value"].as_f64(), Some(45.2));
    assert_eq!(parse_ts(&cpu["timestamp"]), parse_ts(&json!(ts)));
    assert_eq!(cpu["labels"], json!({"hostname": "node-1"}));

    let depth = &samples[1];
    assert_eq!(depth["metric_name"], "queue_depth");
    assert_eq!(depth["metric_value"].as_f64(), Some(12.0));
    assert_eq!(parse_ts(&depth["timestamp"]), parse_ts(&json!(now)));
    let jobs = &samples[2];
    assert_eq!(jobs["metric_name"], "jobs_processed_total");
    assert_eq!(jobs["metric_type"], "counter");
    assert_eq!(jobs["metric_value"].as_f64(), Some(7.0));
    assert_eq!(jobs["labels"], json!({"queue": "high"}));
    // A sample without timestamp is stamped "now" by the server.
    let age = chrono::Utc::now() - parse_ts(&jobs["timestamp"]);
    assert!(
        age.num_seconds().abs() < 300,
        "default timestamp is not now: {}",
        jobs["timestamp"]
    );

    let seqs: Vec<i64> = samples
        .iter()
        .map(|s| s["seq"].as_i64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not ascending: {seqs:?}"
    );

    // Export: types, help texts, values and the component label.
    let text = server.export().await;
    assert!(text.contains("# TYPE queue_depth gauge"), "{text}");
    assert!(
        text.contains("# HELP queue_depth Jobs waiting in the queue"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE jobs_processed_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# HELP jobs_processed_total Jobs processed so far"),
        "{text}"
    );
    assert_eq!(
        expo_value(
            &text,
            "queue_depth",
            &[("component", &comp), ("queue", "high")]
        ),
        12.0
    );
    assert_eq!(
        expo_value(
            &text,
            "jobs_processed_total",
            &[("component", &comp), ("queue", "high")]
        ),
        7.0
    );
}

async fn a_reported_component_label_is_exported_as_exported_component(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("svc");
    server
        .report_ok(&report(
            &comp,
            [gauge("temperature_celsius", 21.5)
                .label("component", "fan")
                .help("Temperature")],
        ))
        .await;
    let text = server.export().await;
    let samples = parse_exposition(&text);
    let found = find_samples(&samples, "temperature_celsius", &[]);
    assert_eq!(found.len(), 1, "{text}");
    assert_eq!(found[0].label("component"), Some(comp.as_str()), "{text}");
    assert_eq!(found[0].label("exported_component"), Some("fan"), "{text}");
    // The query API keeps the reported labels as they were.
    let stored = samples_of(&server, &comp).await;
    assert_eq!(stored[0]["labels"], json!({"component": "fan"}));
}

async fn counter_and_gauge_exports_show_the_latest_value(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("w");
    for v in [1.0, 5.0, 3.0] {
        server
            .report_ok(&report(
                &comp,
                [gauge("temp_gauge", v).label("zone", "a").help("g")],
            ))
            .await;
    }
    server
        .report_ok(&report(
            &comp,
            [gauge("temp_gauge", 100.0).label("zone", "b").help("g")],
        ))
        .await;
    for v in [10.0, 15.0, 40.0] {
        server
            .report_ok(&report(&comp, [counter("events_total", v).help("c")]))
            .await;
    }
    // Several values of one series in a single report: the last one wins.
    server
        .report_ok(&report(
            &comp,
            [
                gauge("temp_gauge", 7.0).label("zone", "c").help("g"),
                gauge("temp_gauge", 8.0).label("zone", "c").help("g"),
            ],
        ))
        .await;
    let text = server.export().await;
    assert_eq!(
        expo_value(&text, "temp_gauge", &[("component", &comp), ("zone", "a")]),
        3.0
    );
    assert_eq!(
        expo_value(&text, "temp_gauge", &[("component", &comp), ("zone", "b")]),
        100.0
    );
    assert_eq!(
        expo_value(&text, "temp_gauge", &[("component", &comp), ("zone", "c")]),
        8.0
    );
    assert_eq!(
        expo_value(&text, "events_total", &[("component", &comp)]),
        40.0
    );
    // Every value is still stored.
    assert_eq!(samples_of(&server, &comp).await.len(), 9);
}

/// Checks `_bucket`/`_sum`/`_count` of one exported histogram series against the
/// observations; returns the finite bucket bounds.
fn check_histogram(
    text: &str,
    name: &str,
    labels: &[(&str, &str)],
    observations: &[f64],
) -> Vec<f64> {
    let samples = parse_exposition(text);
    let buckets = find_samples(&samples, &format!("{name}_bucket"), labels);
    assert!(
        buckets.len() >= 2,
        "{name}: expected buckets in export:\n{text}"
    );
    let mut bounds = Vec::new();
    let mut saw_inf = false;
    for b in &buckets {
        let le = b
            .label("le")
            .unwrap_or_else(|| panic!("bucket without le: {b:?}"));
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or_else(|_| panic!("le {le:?}"))
        };
        let expected = observations.iter().filter(|o| **o <= bound).count() as f64;
        assert_eq!(b.value, expected, "{name} bucket le={le}: {b:?}\n{text}");
        if bound.is_infinite() {
            saw_inf = true;
        } else {
            bounds.push(bound);
        }
    }
    assert!(saw_inf, "{name}: no le=\"+Inf\" bucket:\n{text}");
    let sum: f64 = observations.iter().sum();
    let got_sum = expo_value(text, &format!("{name}_sum"), labels);
    assert!(
        (got_sum - sum).abs() < 1e-9 * sum.abs().max(1.0),
        "{name}_sum {got_sum} != {sum}"
    );
    assert_eq!(
        expo_value(text, &format!("{name}_count"), labels),
        observations.len() as f64
    );
    bounds.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    bounds
}

async fn histogram_observations_aggregate_into_buckets_sum_and_count(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("api");
    let obs = [0.003, 0.3, 0.3, 7.0, 20.0, 0.07];
    // Default buckets, split over two reports.
    server
        .report_ok(&report(
            &comp,
            obs[..3]
                .iter()
                .map(|v| histogram("request_latency_seconds", *v).help("Latency")),
        ))
        .await;
    server
        .report_ok(&report(
            &comp,
            obs[3..]
                .iter()
                .map(|v| histogram("request_latency_seconds", *v).help("Latency")),
        ))
        .await;
    // Explicit buckets through the `le` label.
    let custom = [0.05, 0.1, 0.7, 0.7, 3.0];
    server
        .report_ok(&report(
            &comp,
            custom.iter().map(|v| {
                histogram("upload_latency_seconds", *v)
                    .label("route", "/upload")
                    .label("le", "0.1,0.5,1")
                    .help("Upload latency")
            }),
        ))
        .await;
    let text = server.export().await;
    assert!(
        text.contains("# TYPE request_latency_seconds histogram"),
        "{text}"
    );
    let default_bounds = check_histogram(
        &text,
        "request_latency_seconds",
        &[("component", &comp)],
        &obs,
    );
    assert!(
        default_bounds.len() >= 3,
        "default buckets look too few: {default_bounds:?}"
    );
    let bounds = check_histogram(
        &text,
        "upload_latency_seconds",
        &[("component", &comp), ("route", "/upload")],
        &custom,
    );
    assert_eq!(bounds, vec![0.1, 0.5, 1.0], "buckets from the le label");
    // Each observation is one stored sample.
    let stored = server
        .query_all(&[
            ("component_name", &comp),
            ("metric_name", "upload_latency_seconds"),
        ])
        .await;
    assert_eq!(values(&stored), custom.to_vec());
    assert!(stored.iter().all(|s| s["metric_type"] == "histogram"));
}

async fn summary_observations_give_quantiles_sum_and_count(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("api");
    let obs: Vec<f64> = (1..=100).map(f64::from).collect();
    server
        .report_ok(&report(
            &comp,
            obs.iter().map(|v| {
                summary("payload_size_bytes", *v)
                    .label("quantile", "0.5,0.9,0.99")
                    .help("Payload size")
            }),
        ))
        .await;
    server
        .report_ok(&report(
            &comp,
            [2.0, 4.0]
                .iter()
                .map(|v| summary("batch_size", *v).help("Batch size")),
        ))
        .await;
    let text = server.export().await;
    assert!(text.contains("# TYPE payload_size_bytes summary"), "{text}");
    let samples = parse_exposition(&text);
    let quantiles: Vec<(f64, f64)> =
        find_samples(&samples, "payload_size_bytes", &[("component", &comp)])
            .iter()
            .map(|s| {
                (
                    s.label("quantile")
                        .expect("quantile label")
                        .parse::<f64>()
                        .expect("quantile"),
                    s.value,
                )
            })
            .collect();
    let qs: BTreeSet<String> = quantiles.iter().map(|(q, _)| q.to_string()).collect();
    assert_eq!(
        qs,
        ["0.5", "0.9", "0.99"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "{text}"
    );
    for (q, v) in &quantiles {
        let exact = q * 100.0;
        assert!(
            (v - exact).abs() <= 5.0,
            "quantile {q} = {v}, expected about {exact}\n{text}"
        );
    }
    assert_eq!(
        expo_value(&text, "payload_size_bytes_sum", &[("component", &comp)]),
        5050.0
    );
    assert_eq!(
        expo_value(&text, "payload_size_bytes_count", &[("component", &comp)]),
        100.0
    );
    // Default quantiles: whatever they are, they lie within the observations.
    assert_eq!(
        expo_value(&text, "batch_size_sum", &[("component", &comp)]),
        6.0
    );
    assert_eq!(
        expo_value(&text, "batch_size_count", &[("component", &comp)]),
        2.0
    );
    for s in find_samples(&samples, "batch_size", &[("component", &comp)]) {
        assert!(s.label("quantile").is_some(), "{s:?}");
        assert!((2.0..=4.0).contains(&s.value), "{s:?}");
    }
}

async fn query_filters_by_component_metric_labels_and_time_range(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let (a_name, b_name) = (unique("a"), unique("b"));
    let (a, b) = (a_name.as_str(), b_name.as_str());
    let (t0, t1, t2) = (
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00Z",
        "2024-01-01T02:00:00Z",
    );
    server
        .report_ok(&report(
            a,
            [
                gauge("m1", 1.0)
                    .at(t0)
                    .label("env", "prod")
                    .label("zone", "x"),
                gauge("m1", 2.0)
                    .at(t1)
                    .label("env", "dev")
                    .label("zone", "x"),
                gauge("m2", 3.0)
                    .at(t2)
                    .label("env", "prod")
                    .label("zone", "y"),
            ],
        ))
        .await;
    server
        .report_ok(&report(
            b,
            [gauge("m1", 4.0)
                .at(t1)
                .label("env", "prod")
                .label("zone", "y")],
        ))
        .await;

    // (query parameters, expected values in ingest order)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<f64>);
    let cases: Vec<Case> = vec![
        (vec![], vec![1.0, 2.0, 3.0, 4.0]),
        (vec![("component_name", a)], vec![1.0, 2.0, 3.0]),
        (vec![("component_name", b)], vec![4.0]),
        (vec![("component_name", "nobody")], vec![]),
        (vec![("metric_name", "m1")], vec![1.0, 2.0, 4.0]),
        (
            vec![("component_name", a), ("metric_name", "m1")],
            vec![1.0, 2.0],
        ),
        (vec![("label", "env=prod")], vec![1.0, 3.0, 4.0]),
        (vec![("label", "env!=prod")], vec![2.0]),
        (
            vec![("label", "env=prod"), ("label", "zone=y")],
            vec![3.0, 4.0],
        ),
        (vec![("label", "env=prod"), ("label", "zone!=y")], vec![1.0]),
        (
            vec![("label", "env=prod"), ("component_name", a)],
            vec![1.0, 3.0],
        ),
        (vec![("start", t1)], vec![2.0, 3.0, 4.0]),
        (vec![("end", t1)], vec![1.0]),
        (vec![("start", t1), ("end", t2)], vec![2.0, 4.0]),
        (vec![("start", "1704070800")], vec![2.0, 3.0, 4.0]),
        (vec![("end", "1704070800")], vec![1.0]),
        (
            vec![("start", "1704070800"), ("end", "1704074400")],
            vec![2.0, 4.0],
        ),
        (
            vec![("start", t1), ("end", t2), ("component_name", b)],
            vec![4.0],
        ),
    ];
    for (params, expected) in cases {
        let got = values(&server.query_all(&params).await);
        assert_eq!(got, expected, "query {params:?}");
    }
    // NoETL's query filters the same way.
    let resp = server
        .client()
        .get(server.url("/api/metrics/query"))
        .query(&[("metric_name", "m1"), ("label", "env=prod")])
        .send()
        .await
        .expect("query");
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    // NoETL's query answers newest first.
    assert_eq!(
        values(body["metrics"].as_array().expect("metrics")),
        vec![4.0, 1.0]
    );
    // A bad time value is an invalid_query, not an empty result.
    let resp = server
        .client()
        .get(server.url("/api/v2/metrics/query"))
        .query(&[("start", "soon")])
        .send()
        .await
        .expect("q");
    expect_error(resp, 400, "invalid_query").await;
}

async fn cursor_pagination_visits_every_sample_exactly_once_in_seq_order(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("pager");
    let other = unique("other");
    let mut expected = Vec::new();
    for r in 0..5 {
        let vals: Vec<f64> = (0..5).map(|i| f64::from(r * 5 + i)).collect();
        expected.extend(vals.iter().copied());
        server
            .report_ok(&report(
                &comp,
                vals.iter()
                    .map(|v| gauge("paged", *v).label("r", &r.to_string())),
            ))
            .await;
        // Interleave another component's samples.
        server
            .report_ok(&report(&other, [gauge("paged", -1.0)]))
            .await;
    }
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("component_name", comp.as_str()), ("limit", "7")];
        if let Some(c) = &cursor {
            params.push(("cursor", c));
        }
        let page = server.query_page(&params).await;
        pages += 1;
        let samples = page["samples"].as_array().expect("samples");
        assert!(
            samples.len() <= 7,
            "page larger than limit: {}",
            samples.len()
        );
        for s in samples {
            assert_eq!(s["component_name"], comp.as_str());
            seqs.push(s["seq"].as_i64().expect("seq"));
            seen.push(s["metric_value"].as_f64().expect("value"));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 20, "pagination does not end");
    }
    assert!(
        pages >= 4,
        "25 samples at limit 7 need at least 4 pages, got {pages}"
    );
    assert_eq!(seen, expected, "every sample exactly once, in ingest order");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not strictly ascending: {seqs:?}"
    );
    // Unfiltered, the pages also cover everything once.
    let all = server.query_all(&[("limit", "3")]).await;
    assert_eq!(all.len(), 30);
    let all_seqs: Vec<i64> = all
        .iter()
        .map(|s| s["seq"].as_i64().expect("seq"))
        .collect();
    assert!(all_seqs.windows(2).all(|w| w[0] < w[1]), "{all_seqs:?}");
    // A nonsensical limit is rejected or handled, never a server error.
    let resp = server
        .client()
        .get(server.url("/api/v2/metrics/query"))
        .query(&[("limit", "0")])
        .send()
        .await
        .expect("q");
    let (status, body) = status_json(resp).await;
    assert!(
        status == 400 || (status == 200 && body["samples"].is_array()),
        "limit=0: {status} {body}"
    );
}

async fn an_unknown_component_registers_itself_with_its_first_report(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("newcomer");
    server.report_ok(&report(&comp, [gauge("up", 1.0)])).await;
    let (status, list) = status_json(server.get("/api/v2/components").await).await;
    assert_eq!(status, 200, "{list}");
    let found = list["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == comp.as_str())
        .unwrap_or_else(|| panic!("{comp} not registered: {list}"))
        .clone();
    assert_eq!(found["type"], "worker_pool");
    assert_eq!(found["status"], "alive");
}

async fn strict_components_rejects_unknown_components_with_422_and_stores_nothing(
    backend: Backend,
) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .arg("--strict-components")
        .start()
        .await;
    let comp = unique("stranger");
    let resp = server
        .report(&report(&comp, [gauge("up", 1.0), gauge("load", 2.0)]))
        .await;
    expect_error(resp, 422, "unknown_component").await;
    assert!(
        samples_of(&server, &comp).await.is_empty(),
        "rejected report was stored"
    );
    assert!(
        server.query_all(&[]).await.is_empty(),
        "rejected report was stored"
    );
    let (_, list) = status_json(server.get("/api/v2/components").await).await;
    assert!(
        !list["components"]
            .as_array()
            .expect("components")
            .iter()
            .any(|c| c["name"] == comp.as_str()),
        "strict mode registered the component: {list}"
    );
    // Once registered, the same component may report.
    let (status, body) = status_json(
        server
            .post_json(
                "/api/v2/components",
                &json!({"name": comp, "type": "worker_pool", "capabilities": [], "capacity": 1}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.report_ok(&report(&comp, [gauge("up", 1.0)])).await;
    assert_eq!(values(&samples_of(&server, &comp).await), vec![1.0]);
}

backend_tests!(
    a_report_round_trips_through_query_and_export,
    a_reported_component_label_is_exported_as_exported_component,
    counter_and_gauge_exports_show_the_latest_value,
    histogram_observations_aggregate_into_buckets_sum_and_count,
    summary_observations_give_quantiles_sum_and_count,
    query_filters_by_component_metric_labels_and_time_range,
    cursor_pagination_visits_every_sample_exactly_once_in_seq_order,
    an_unknown_component_registers_itself_with_its_first_report,
    strict_components_rejects_unknown_components_with_422_and_stores_nothing,
);
