//! The Prometheus / OpenMetrics export, over SQLite and PostgreSQL.

use std::time::Duration;

use vigil_tests::*;

/// Reports one of every kind, with help texts, units matching the names and
/// tricky label values.
async fn report_everything(server: &TestServer, comp: &str) {
    let now = now_rfc3339();
    server
        .report_ok(&report(
            comp,
            [
                counter("jobs_processed_total", 12.0)
                    .label("queue", "default")
                    .help("Jobs processed"),
                counter("jobs_processed_total", 3.0)
                    .label("queue", "say \"hi\"\\ \n ✓")
                    .help("Jobs processed"),
                gauge("queue_depth", 4.0)
                    .label("queue", "default")
                    .help("Jobs waiting, with \\ and\nnewline")
                    .at(&now),
                gauge("disk_free_bytes", 1.5e9)
                    .unit("bytes")
                    .help("Free disk space"),
                histogram("request_duration_seconds", 0.2)
                    .label("route", "/a")
                    .unit("seconds")
                    .help("Request duration"),
                histogram("request_duration_seconds", 2.0)
                    .label("route", "/a")
                    .unit("seconds")
                    .help("Request duration"),
                histogram("upload_duration_seconds", 0.3)
                    .label("le", "0.1,0.5,1")
                    .unit("seconds")
                    .help("Upload duration"),
                summary("payload_size_bytes", 100.0)
                    .label("quantile", "0.5,0.9")
                    .unit("bytes")
                    .help("Payload size"),
                summary("payload_size_bytes", 300.0)
                    .label("quantile", "0.5,0.9")
                    .unit("bytes")
                    .help("Payload size"),
            ],
        ))
        .await;
}

/// Non-`vigil_` samples of an exposition, sorted, for comparisons across scrapes.
fn reported_samples(text: &str) -> Vec<String> {
    let mut v: Vec<String> = parse_exposition(text)
        .into_iter()
        .filter(|s| !s.name.starts_with("vigil_"))
        .map(|mut s| {
            // le / quantile may be written "1" or "1.0": compare them as numbers.
            for key in ["le", "quantile"] {
                if let Some(v) = s.labels.get_mut(key) {
                    if let Ok(f) = v.parse::<f64>() {
                        *v = f.to_string();
                    }
                }
            }
            format!("{} {:?} {}", s.name, s.labels, s.value)
        })
        .collect();
    v.sort();
    v
}

async fn promtool_accepts_the_text_and_openmetrics_exports(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("exporter");
    report_everything(&server, &comp).await;

    let resp = server.get("/api/metrics/prometheus").await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .expect("content-type")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "text content type: {ct}"
    );
    let text = resp.text().await.expect("body");
    promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n--- export ---\n{text}"));
    for family in [
        "jobs_processed_total",
        "queue_depth",
        "request_duration_seconds",
        "payload_size_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("vigil_")),
        "host metrics missing from export:\n{text}"
    );
    assert!(!text.contains("# EOF"), "text format must not carry # EOF");

    let resp = server
        .client()
        .get(server.url("/api/metrics/prometheus"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .expect("content-type")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        ct.starts_with("application/openmetrics-text") && ct.contains("version=1.0.0"),
        "OpenMetrics content type: {ct}"
    );
    let om = resp.text().await.expect("body");
    assert!(
        om.ends_with("# EOF\n") || om.ends_with("# EOF"),
        "OpenMetrics must end with # EOF:\n{om}"
    );
    openmetrics_check(&om).unwrap_or_else(|e| panic!("{e}\n--- export ---\n{om}"));
    // Same series and values in both formats (OpenMetrics may add _created samples).
    let om_samples: Vec<String> = reported_samples(&om)
        .into_iter()
        .filter(|s| !s.contains("_created "))
        .collect();
    assert_eq!(
        reported_samples(&text),
        om_samples,
        "text and OpenMetrics exports disagree"
    );
}

async fn the_metrics_listener_serves_the_same_export(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let comp = unique("exporter");
    report_everything(&server, &comp).await;
    let api = server.export().await;
    let resp = server
        .client()
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .expect("content-type")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "{ct}"
    );
    let scraped = resp.text().await.expect("body");
    assert_eq!(reported_samples(&api), reported_samples(&scraped));
    let vigil_families = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| l.starts_with("# TYPE vigil_"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(vigil_families(&api), vigil_families(&scraped));
    promtool_check(&scraped).unwrap_or_else(|e| panic!("{e}\n{scraped}"));
    let resp = server
        .client()
        .get(server.metrics_url("/metrics"))
        .header("accept", "application/openmetrics-text")
        .send()
        .await
        .expect("scrape");
    let om = resp.text().await.expect("body");
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    openmetrics_check(&om).unwrap_or_else(|e| panic!("{e}\n{om}"));
}

async fn a_series_leaves_the_export_after_series_ttl_but_stays_queryable(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .args(["--series-ttl", "2s"])
        .start()
        .await;
    let comp = unique("ttl");
    server
        .report_ok(&report(
            &comp,
            [
                gauge("short_lived", 1.0).help("h"),
                gauge("kept_alive", 1.0).help("h"),
            ],
        ))
        .await;
    let text = server.export().await;
    assert_eq!(
        expo_value(&text, "short_lived", &[("component", &comp)]),
        1.0
    );
    let mut n = 1.0;
    let (srv, c) = (&server, comp.as_str());
    let text = poll_until(
        Duration::from_secs(10),
        "short_lived to leave the export",
        || {
            n += 1.0;
            async move {
                srv.report_ok(&report(c, [gauge("kept_alive", n).help("h")]))
                    .await;
                let text = srv.export().await;
                let gone = find_samples(&parse_exposition(&text), "short_lived", &[]).is_empty();
                gone.then_some(text)
            }
        },
    )
    .await;
    assert!(
        !find_samples(
            &parse_exposition(&text),
            "kept_alive",
            &[("component", &comp)]
        )
        .is_empty(),
        "a series still being reported expired too:\n{text}"
    );
    let stored = server.query_all(&[("metric_name", "short_lived")]).await;
    assert_eq!(stored.len(), 1, "expired series must stay queryable");
    // Reporting again brings it back.
    server
        .report_ok(&report(&comp, [gauge("short_lived", 9.0).help("h")]))
        .await;
    assert_eq!(
        expo_value(
            &server.export().await,
            "short_lived",
            &[("component", &comp)]
        ),
        9.0
    );
}

async fn deleting_a_components_series_removes_them_from_the_export_at_once(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let a = unique("doomed");
    let b = unique("survivor");
    server
        .report_ok(&report(
            &a,
            [
                gauge("g1", 1.0).help("h"),
                gauge("g1", 2.0).label("x", "y").help("h"),
                counter("c_total", 1.0).help("h"),
            ],
        ))
        .await;
    server
        .report_ok(&report(&b, [gauge("g1", 5.0).help("h")]))
        .await;
    let resp = server
        .delete(&format!("/api/v2/metrics/series?component={a}"))
        .await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"deleted_series": 3}));
    let text = server.export().await;
    let samples = parse_exposition(&text);
    assert!(
        find_samples(&samples, "g1", &[("component", &a)]).is_empty(),
        "{text}"
    );
    assert!(
        find_samples(&samples, "c_total", &[("component", &a)]).is_empty(),
        "{text}"
    );
    assert_eq!(expo_value(&text, "g1", &[("component", &b)]), 5.0);
    assert_eq!(
        server.query_all(&[("component_name", &a)]).await.len(),
        3,
        "samples must stay queryable"
    );
    // Deleting again finds nothing; an unknown component deletes nothing.
    let (status, body) = status_json(
        server
            .delete(&format!("/api/v2/metrics/series?component={a}"))
            .await,
    )
    .await;
    assert_eq!((status, body), (200, json!({"deleted_series": 0})));
    // Without the parameter: a 400, not a wipe.
    let (status, _) = status_json(server.delete("/api/v2/metrics/series").await).await;
    assert_eq!(status, 400);
    assert_eq!(
        expo_value(&server.export().await, "g1", &[("component", &b)]),
        5.0
    );
}

async fn the_export_survives_a_restart(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let mut server = TestServer::start(&db).await;
    let comp = unique("persistent");
    report_everything(&server, &comp).await;
    server
        .report_ok(&report(
            &comp,
            [gauge("queue_depth", 9.0)
                .label("queue", "default")
                .help("Jobs waiting, with \\ and\nnewline")],
        ))
        .await;
    let before = reported_samples(&server.export().await);
    assert!(
        before.iter().any(|s| s.starts_with("queue_depth ")),
        "{before:#?}"
    );
    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}");
    server.restart().await;
    let text = server.export().await;
    assert_eq!(
        reported_samples(&text),
        before,
        "export after restart differs"
    );
    assert_eq!(
        expo_value(
            &text,
            "queue_depth",
            &[("component", &comp), ("queue", "default")]
        ),
        9.0
    );
    assert!(
        text.contains("# HELP queue_depth Jobs waiting, with \\\\ and\\nnewline"),
        "help lost:\n{text}"
    );
    // Ingest goes on after the restart with higher sequence numbers.
    let max_seq = server
        .query_all(&[])
        .await
        .iter()
        .map(|s| s["seq"].as_i64().expect("seq"))
        .max()
        .expect("stored samples");
    server
        .report_ok(&report(&comp, [gauge("after_restart", 1.0).help("h")]))
        .await;
    let new = server.query_all(&[("metric_name", "after_restart")]).await;
    assert!(
        new[0]["seq"].as_i64().expect("seq") > max_seq,
        "seq reused after restart: {new:?}"
    );
    // And after a crash too.
    server.kill();
    server.restart().await;
    let after_crash: Vec<String> = reported_samples(&server.export().await)
        .into_iter()
        .filter(|s| !s.starts_with("after_restart"))
        .collect();
    assert_eq!(
        after_crash, before,
        "export after SIGKILL + restart differs"
    );
}

backend_tests!(
    promtool_accepts_the_text_and_openmetrics_exports,
    the_metrics_listener_serves_the_same_export,
    a_series_leaves_the_export_after_series_ttl_but_stays_queryable,
    deleting_a_components_series_removes_them_from_the_export_at_once,
    the_export_survives_a_restart,
);
