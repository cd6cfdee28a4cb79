//! The Grafana dashboard in `dashboards/grafana/vigil.json`: every query of
//! every panel (and of the replica variable) runs on a real Prometheus that
//! scrapes a real Vigil, and returns series: a renamed metric or a broken
//! expression fails here.

use std::time::Duration;

use vigil_tests::*;

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .join("dashboards/grafana/vigil.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard file"))
        .expect("dashboard JSON")
}

/// What Grafana puts in place of the dashboard's variables.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "vigil-ops");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut ids: Vec<i64> = panels
        .iter()
        .map(|p| p["id"].as_i64().expect("id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{expr}: filters by the replica variable"
            );
        }
    }
    // The panels the debug order needs are there.
    let exprs: String = panels
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .expect("present")
                .iter()
                .map(|t| t["expr"].as_str().expect("present").to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    for family in [
        "vigil_dependency_up",
        "vigil_executions",
        "vigil_publisher_queue_depth",
        "vigil_publisher_oldest_undelivered_age_seconds",
        "vigil_stream_subscribers",
        "vigil_samples_ingested_total",
        "vigil_events_ingested_total",
    ] {
        assert!(exprs.contains(family), "{family} has no panel");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_real_prometheus_scraping_vigil() {
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install_with_manifest(
        "hook",
        "webhook-publisher",
        &format!(
            "[capabilities]\nallowed_hosts = [\"{}\"]\n[config]\nurl = \"{}\"\n",
            receiver.origin(),
            receiver.url("/ingest")
        ),
    );
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    server
        .wait_publisher("hook", Duration::from_secs(30), "cursor opened", |p| {
            p["cursor_seq"] == 0
        })
        .await;
    let Some(prometheus) = PrometheusServer::start(PrometheusOptions {
        scrape_targets: vec![server.metrics_addr().expect("metrics listener").to_string()],
        ..Default::default()
    })
    .await
    else {
        return;
    };
    // Something for every panel: samples, events, executions, a stream.
    server
        .report_ok(&report(
            "dash",
            (0..50).map(|i| gauge("dash_g", i as f64).help("h")),
        ))
        .await;
    let (status, _) = status_json(
        server
            .post_json("/api/v2/events", &json!({"event_type": "TaskCreated"}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = status_json(
        server
            .post_json("/api/v2/executions", &json!({"backend": "dim"}))
            .await,
    )
    .await;
    assert_eq!(status, 201);
    let _stream = SseStream::open(&server, "/api/v2/events/stream?cursor=latest", None).await;
    let up = prometheus
        .query_until_some("up{job=\"vigil\"} == 1", Duration::from_secs(30))
        .await;
    assert_eq!(up.len(), 1);
    // The replica variable.
    let instances = prometheus
        .query_until_some("vigil_start_time_seconds", Duration::from_secs(30))
        .await;
    assert!(instances[0]["metric"]["instance"].is_string());
    let d = dashboard();
    for panel in d["panels"].as_array().expect("present") {
        for target in panel["targets"].as_array().expect("present") {
            let expr = as_grafana_sends(target["expr"].as_str().expect("present"));
            let result = prometheus
                .query_until_some(&expr, Duration::from_secs(30))
                .await;
            assert!(!result.is_empty(), "{}: {expr}", panel["title"]);
        }
    }
    // The gauges a panel reads have the values Vigil has.
    let executions = prometheus
        .query_until_some(
            "vigil_executions{backend=\"dim\",state=\"pending\"}",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(executions[0]["value"][1], "1");
    let subscribers = prometheus
        .query_until_some("vigil_stream_subscribers == 1", Duration::from_secs(10))
        .await;
    assert_eq!(subscribers.len(), 1);
}
