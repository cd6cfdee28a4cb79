//! The export stays valid whatever a client with write scope reports: every
//! exported name and label set is unique by construction. A report that would
//! collide with an existing family (including the suffixes of both formats and
//! the host's own `vigil_` families) or duplicate another series' label set is
//! a `400` naming what it collides with, and a real Prometheus scraping the
//! host keeps it `up` with every earlier series.

use std::time::Duration;

use vigil_tests::{
    backend_tests, counter, expect_error, find_samples, gauge, histogram, openmetrics_check,
    parse_exposition, promtool_check, report, summary, unique, Backend, PrometheusOptions,
    PrometheusServer, TestDatabase, TestServer, Value,
};

/// The `reason` of every detail of a `400 invalid_report`.
async fn refused(server: &TestServer, body: &Value) -> Vec<String> {
    let error = expect_error(server.report(body).await, 400, "invalid_report").await;
    error["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| e["reason"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn assert_scraped_up(prom: &PrometheusServer, after: &str) {
    let targets = prom.wait_scrapes(2).await;
    for t in &targets {
        assert_eq!(
            t["health"], "up",
            "after {after}: Prometheus marked the target down: {t}"
        );
    }
}

async fn poison_reports_are_refused_and_prometheus_keeps_every_series(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let Some(prom) = PrometheusServer::start(PrometheusOptions {
        scrape_targets: vec![server.metrics_addr().expect("metrics addr").to_string()],
        scrape_interval: Some(Duration::from_millis(500)),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let c = unique("good");
    server
        .report_ok(&report(
            &c,
            [
                gauge("depth", 3.0),
                counter("jobs_total", 7.0),
                counter("handled", 2.0),
                histogram("lat", 0.2),
                summary("size", 10.0),
                // Renamed as Prometheus does: exported_component would clash
                // with the label of that name, so it becomes exported_exported_component.
                gauge("mixed", 1.0)
                    .label("component", "other")
                    .label("exported_component", "x"),
            ],
        ))
        .await;
    assert_scraped_up(&prom, "the first report").await;

    let poisons: Vec<(&str, Value, &str)> = vec![
        (
            "counter jobs beside jobs_total",
            report(&c, [counter("jobs", 1.0)]),
            "`jobs_total`",
        ),
        (
            "counter handled_total beside handled",
            report(&c, [counter("handled_total", 1.0)]),
            "`handled`",
        ),
        (
            "gauge lat_sum beside histogram lat",
            report(&c, [gauge("lat_sum", 1.0)]),
            "`lat`",
        ),
        (
            "gauge lat_bucket",
            report(&c, [gauge("lat_bucket", 1.0)]),
            "`lat`",
        ),
        (
            "gauge lat_created",
            report(&c, [gauge("lat_created", 1.0)]),
            "`lat`",
        ),
        (
            "gauge size_count beside summary size",
            report(&c, [gauge("size_count", 1.0)]),
            "`size`",
        ),
        (
            "gauge handled_total beside counter handled",
            report(&c, [gauge("handled_total", 1.0)]),
            "`handled`",
        ),
        (
            "gauge jobs_created beside counter jobs_total",
            report(&c, [gauge("jobs_created", 1.0)]),
            "`jobs_total`",
        ),
        (
            "histogram dep and gauge dep_count in one report",
            report(&c, [histogram("dep", 1.0), gauge("dep_count", 1.0)]),
            "`dep`",
        ),
        (
            "host family",
            report(&c, [gauge("vigil_live_series", 1.0)]),
            "`vigil_live_series`",
        ),
        (
            "host counter sample",
            report(&c, [gauge("vigil_http_requests_total", 1.0)]),
            "`vigil_http_requests`",
        ),
        (
            "host plugin family",
            report(&c, [counter("vigil_plugin_calls", 1.0)]),
            "`vigil_plugin_calls`",
        ),
        (
            "a label set another series exports already",
            report(
                &c,
                [gauge("mixed", 2.0)
                    .label("exported_exported_component", "other")
                    .label("exported_component", "x")],
            ),
            "label set",
        ),
    ];
    for (what, body, names) in &poisons {
        let reasons = refused(&server, body).await;
        assert!(
            reasons.iter().any(|r| r.contains(names)),
            "{what}: the 400 does not name {names}: {reasons:?}"
        );
        assert_scraped_up(&prom, what).await;
    }

    // Every earlier series is still there, once, with its value.
    for (expr, value) in [
        (format!("depth{{component=\"{c}\"}}"), 3.0),
        (format!("jobs_total{{component=\"{c}\"}}"), 7.0),
        (format!("handled_total{{component=\"{c}\"}}"), 2.0),
        (format!("lat_count{{component=\"{c}\"}}"), 1.0),
        (format!("size_sum{{component=\"{c}\"}}"), 10.0),
        (
            format!("mixed{{component=\"{c}\",exported_component=\"x\",exported_exported_component=\"other\"}}"),
            1.0,
        ),
    ] {
        let result = prom.query(&expr, None).await;
        assert_eq!(result.len(), 1, "{expr}: {result:?}");
        let got: f64 = result[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a value");
        assert_eq!(got, value, "{expr}");
    }
    // Nothing refused reached the export, and both formats pass strict checks.
    let text = server.export().await;
    promtool_check(&text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    let om = server.export_openmetrics().await;
    openmetrics_check(&om).unwrap_or_else(|e| panic!("OpenMetrics parser: {e}\n{om}"));
    let samples = parse_exposition(&text);
    for (name, count) in [
        ("jobs_total", 1),
        ("handled_total", 1),
        ("lat_sum", 1),
        ("lat_bucket", 12),
        ("size_count", 1),
        ("jobs_created", 0),
        ("vigil_live_series", 0),
    ] {
        assert_eq!(
            find_samples(&samples, name, &[("component", &c)]).len(),
            count,
            "{name} of {c} in the export:\n{text}"
        );
    }
    assert!(
        !prom.log().contains("not unique"),
        "Prometheus complained: {}",
        prom.log()
    );
}

async fn names_colliding_inside_one_report_are_refused_as_a_whole(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let c = unique("one");
    let reasons = refused(
        &server,
        &report(
            &c,
            [
                histogram("h1", 0.5),
                gauge("h1_sum", 1.0),
                gauge("fine", 1.0),
            ],
        ),
    )
    .await;
    assert!(reasons.iter().any(|r| r.contains("`h1`")), "{reasons:?}");
    let text = server.export().await;
    assert!(
        !text.contains("fine{"),
        "nothing of a refused report is stored:\n{text}"
    );
    // The same series reported twice in one report is one series, not a clash;
    // a `component` label naming the component itself is the same series too.
    server
        .report_ok(&report(
            &c,
            [
                gauge("g", 1.0),
                gauge("g", 2.0),
                gauge("g", 3.0).label("component", &c),
            ],
        ))
        .await;
    let text = server.export().await;
    let samples = parse_exposition(&text);
    let g = find_samples(&samples, "g", &[("component", &c)]);
    assert_eq!(g.len(), 1, "{text}");
    assert_eq!(g[0].value, 3.0);
}

backend_tests!(
    poison_reports_are_refused_and_prometheus_keeps_every_series,
    names_colliding_inside_one_report_are_refused_as_a_whole
);
