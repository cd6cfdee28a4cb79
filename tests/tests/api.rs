//! API surface: the OpenAPI document, self-report, and the host's own metrics,
//! over SQLite and PostgreSQL.

use vigil_tests::*;

/// Every (method, path) of the contract.
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("post", "/api/metrics/report"),
    ("post", "/api/v2/metrics/report"),
    ("get", "/api/metrics/query"),
    ("get", "/api/v2/metrics/query"),
    ("get", "/api/metrics/prometheus"),
    ("delete", "/api/v2/metrics/series"),
    ("post", "/api/v2/components"),
    ("get", "/api/v2/components"),
    ("post", "/api/v2/components/{name}/heartbeat"),
    ("post", "/api/metrics/self-report"),
    ("post", "/api/worker/pool/register"),
    ("post", "/api/worker/pool/heartbeat"),
    ("delete", "/api/worker/pool/deregister"),
    ("post", "/api/worker/pool/deregister"),
    ("get", "/api/worker/pools"),
    ("post", "/api/runtime/register"),
    ("delete", "/api/runtime/deregister"),
    ("get", "/api/metrics/components"),
    ("get", "/api/v2/health"),
    ("get", "/api/v2/ready"),
    ("get", "/api/v2/metrics"),
    ("get", "/api/v2/openapi.json"),
];

async fn the_openapi_document_lists_every_contract_route(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let resp = server.get("/api/v2/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    assert!(
        ct.as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "content-type {ct:?}"
    );
    let doc: Value = resp.json().await.expect("openapi.json is JSON");
    let version = doc["openapi"]
        .as_str()
        .unwrap_or_else(|| panic!("no openapi version: {doc}"));
    assert!(version.starts_with("3."), "openapi {version}");
    assert!(
        doc["info"]["title"].is_string() && doc["info"]["version"].is_string(),
        "info: {}",
        doc["info"]
    );
    let paths = doc["paths"].as_object().expect("paths object");
    let mut missing = Vec::new();
    for (method, path) in CONTRACT_ROUTES {
        // Accept any parameter name in the heartbeat path template.
        let entry = paths.get(*path).or_else(|| {
            paths
                .iter()
                .find(|(p, _)| {
                    path.contains('{')
                        && p.starts_with("/api/v2/components/{")
                        && p.ends_with("}/heartbeat")
                })
                .map(|(_, v)| v)
        });
        match entry {
            Some(ops) if ops.get(*method).is_some() => {
                let op = &ops[*method];
                assert!(
                    op["responses"].is_object(),
                    "{method} {path}: no responses: {op}"
                );
            }
            _ => missing.push(format!("{} {path}", method.to_uppercase())),
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}\npaths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
}

async fn self_report_stores_noetls_seven_gauges_for_the_component(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("vigil-self");
    let resp = server
        .post_json(
            &format!("/api/metrics/self-report?component_name={comp}"),
            &json!({}),
        )
        .await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["component_name"], comp.as_str(), "{body}");
    assert_eq!(body["metrics_reported"], 7, "{body}");
    let runtime_id = body["runtime_id"].as_i64().expect("numeric runtime_id");
    let samples = server.query_all(&[("component_name", &comp)]).await;
    let mut names: Vec<&str> = samples
        .iter()
        .map(|s| s["metric_name"].as_str().expect("name"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "noetl_process_cpu_percent",
            "noetl_process_memory_rss_bytes",
            "noetl_process_start_time_seconds",
            "noetl_system_cpu_usage_percent",
            "noetl_system_memory_usage_bytes",
            "noetl_system_memory_usage_percent",
            "noetl_uptime_seconds",
        ]
    );
    let now = chrono::Utc::now().timestamp() as f64;
    for s in &samples {
        assert_eq!(s["metric_type"], "gauge", "{s}");
        let v = s["metric_value"].as_f64().expect("value");
        match s["metric_name"].as_str().expect("name") {
            "noetl_process_memory_rss_bytes" | "noetl_system_memory_usage_bytes" => {
                assert!(v > 1e5, "memory of a running server: {s}")
            }
            "noetl_process_start_time_seconds" => {
                assert!(v > 1.6e9 && v <= now + 1.0, "start time: {s}")
            }
            "noetl_uptime_seconds" => assert!((0.0..86_400.0).contains(&v), "uptime: {s}"),
            "noetl_process_cpu_percent" => assert!(v >= 0.0, "{s}"),
            _ => assert!((0.0..=100.0).contains(&v), "{s}"),
        }
    }
    // A second self-report adds seven more samples.
    let (status, again) = status_json(
        server
            .post_json(
                &format!("/api/metrics/self-report?component_name={comp}"),
                &json!({}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["runtime_id"], runtime_id, "{again}");
    assert_eq!(
        server.query_all(&[("component_name", &comp)]).await.len(),
        14
    );
    // Without component_name the host reports as itself (--self-report-component).
    let (status, own) = status_json(
        server
            .post_json("/api/metrics/self-report", &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["component_name"], "vigil", "{own}");
    assert_eq!(own["metrics_reported"], 7, "{own}");
    // And the gauges are exported with the component label.
    let text = server.export().await;
    let rss = expo_value(
        &text,
        "noetl_process_memory_rss_bytes",
        &[("component", &comp)],
    );
    assert!(rss > 1e5);
}

fn sum_of(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find_samples(&parse_exposition(text), name, labels)
        .iter()
        .map(|s| s.value)
        .sum()
}

async fn host_metrics_expose_the_vigil_families_and_count_requests(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("counted");
    server
        .report_ok(&report(
            &comp,
            [
                gauge("a_gauge", 1.0),
                gauge("b_gauge", 2.0),
                counter("c_total", 3.0),
            ],
        ))
        .await;
    for _ in 0..3 {
        assert_eq!(server.get("/api/v2/health").await.status(), 200);
    }
    let resp = server.get("/api/v2/metrics").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    let samples = parse_exposition(&text);
    for family in [
        "vigil_http_requests_total",
        "vigil_http_request_duration_seconds_bucket",
        "vigil_http_request_duration_seconds_count",
        "vigil_samples_ingested_total",
        "vigil_store_write_duration_seconds_bucket",
        "vigil_store_write_duration_seconds_count",
        "vigil_live_series",
        "vigil_components_alive",
    ] {
        assert!(
            samples.iter().any(|s| s.name == family),
            "{family} missing from /api/v2/metrics:\n{text}"
        );
    }
    assert!(
        samples.iter().all(|s| s.name.starts_with("vigil_")),
        "only host metrics expected:\n{text}"
    );
    assert_eq!(
        sum_of(&text, "vigil_samples_ingested_total", &[]),
        3.0,
        "{text}"
    );
    assert_eq!(sum_of(&text, "vigil_live_series", &[]), 3.0, "{text}");
    assert!(
        sum_of(&text, "vigil_components_alive", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        sum_of(&text, "vigil_store_write_duration_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    let requests = find_samples(&samples, "vigil_http_requests_total", &[]);
    let count = |route_part: &str, status: &str| -> f64 {
        requests
            .iter()
            .filter(|s| {
                s.label("route").is_some_and(|r| r.contains(route_part))
                    && s.label("status") == Some(status)
            })
            .map(|s| s.value)
            .sum()
    };
    assert!(
        count("/metrics/report", "200") >= 1.0,
        "report request not counted:\n{text}"
    );
    assert!(
        count("/health", "200") >= 3.0,
        "health requests not counted:\n{text}"
    );
    // Routes are templates, not raw paths: no per-id explosion.
    let _ = server
        .post_json("/api/v2/components/someone-unknown/heartbeat", &json!({}))
        .await;
    let text = server
        .get("/api/v2/metrics")
        .await
        .text()
        .await
        .expect("body");
    assert!(
        !text.contains("someone-unknown"),
        "raw path used as route label:\n{text}"
    );
    // The unified export carries the same families.
    let export = server.export().await;
    assert!(export.contains("vigil_samples_ingested_total"), "{export}");
}

async fn the_metrics_listener_can_be_turned_off(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db).metrics_listen("off").start().await;
    assert_eq!(server.metrics_addr(), None);
    assert_eq!(server.get("/api/v2/health").await.status(), 200);
    // The export stays available on the API listener.
    server
        .report_ok(&report("solo", [gauge("g_value", 1.0).help("h")]))
        .await;
    assert_eq!(
        expo_value(&server.export().await, "g_value", &[("component", "solo")]),
        1.0
    );
}

backend_tests!(
    the_metrics_listener_can_be_turned_off,
    the_openapi_document_lists_every_contract_route,
    self_report_stores_noetls_seven_gauges_for_the_component,
    host_metrics_expose_the_vigil_families_and_count_requests,
);
