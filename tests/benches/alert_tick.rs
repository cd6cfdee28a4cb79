//! One evaluator tick on SQLite: 1,000 rules over 100,000 series (500
//! components × 100 instances × 2 metrics, a sample every 15 s for the last
//! 6 minutes), through the real server (release build): the reports go in
//! over the API, the rules come in as one Prometheus rule file (one group,
//! `interval: 5s`), and the evaluator's own gauges
//! `vigil_alert_evaluation_last_pass_duration_seconds` and
//! `vigil_alert_evaluation_last_pass_rules` give each pass's time, the
//! reads, evaluation, state commit and group flushes included. The first
//! pass reads every window from SQLite; later ticks read the samples the
//! evaluator holds. Prints the first pass and the median and worst of the
//! ticks after it.
//!
//! `cargo bench -p vigil-tests --bench alert_tick`
//! (`VIGIL_BENCH_TICKS`, default 6, sets how many ticks are measured.)

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::*;

const COMPONENTS: usize = 500;
const INSTANCES: usize = 100;
const POINTS: i64 = 24;
const STEP_MS: i64 = 15_000;

/// The report of one component at one instant.
fn round(component: usize, k: i64, ts: &str) -> Value {
    let mut metrics = Vec::with_capacity(INSTANCES * 2);
    for i in 0..INSTANCES {
        let inst = format!("i{i}");
        metrics.push(
            counter("http_requests", (k * (i as i64 + 1)) as f64)
                .label("instance", &inst)
                .at(ts),
        );
        metrics.push(
            gauge("temp", ((k * i as i64) % 50) as f64)
                .label("instance", &inst)
                .at(ts),
        );
    }
    report(&format!("j{component}"), metrics)
}

async fn load(server: &TestServer) {
    let client = server.client();
    let url = server.url("/api/v2/metrics/report");
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    for k in 0..POINTS {
        let at = chrono::DateTime::from_timestamp_millis(now - (POINTS - 1 - k) * STEP_MS)
            .expect("time")
            .to_rfc3339();
        let sends = (0..COMPONENTS).map(|c| {
            let body = round(c, k, &at);
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client.post(url).json(&body).send().await.expect("report");
                assert_eq!(
                    resp.status(),
                    200,
                    "{}",
                    resp.text().await.unwrap_or_default()
                );
            }
        });
        futures::stream::iter(sends)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }
    eprintln!(
        "reported {} samples in {:.1} s",
        COMPONENTS as i64 * INSTANCES as i64 * 2 * POINTS,
        started.elapsed().as_secs_f64()
    );
}

/// The rule file: four expression shapes over each component's series.
/// With `most` the thresholds make about 85% of the series alert (85,000
/// alerts: every tick changes values of all of them); otherwise about 2%,
/// as a production rule set mostly evaluates to nothing.
fn rule_file(most: bool) -> String {
    let templates = if most {
        [
            r#"sum by (instance) (rate(http_requests_total{component="C"}[5m])) > 0.5"#,
            r#"rate(http_requests_total{component="C"}[5m]) > 1"#,
            r#"avg_over_time(temp{component="C"}[5m]) > 10"#,
            r#"temp{component="C"} / on(instance) rate(http_requests_total{component="C"}[5m]) > 3"#,
        ]
    } else {
        [
            r#"sum by (instance) (rate(http_requests_total{component="C"}[5m])) > 6.5"#,
            r#"rate(http_requests_total{component="C"}[5m]) > 6.5"#,
            r#"avg_over_time(temp{component="C"}[5m]) > 40"#,
            r#"temp{component="C"} / on(instance) rate(http_requests_total{component="C"}[5m]) > 400"#,
        ]
    };
    let mut out = String::from("groups:\n  - name: tick\n    interval: 5s\n    rules:\n");
    for r in 0..1000 {
        let expr = templates[r % templates.len()].replace('C', &format!("j{}", r % COMPONENTS));
        out.push_str(&format!(
            "      - alert: R{r}\n        expr: '{expr}'\n        for: 1m\n"
        ));
    }
    out
}

/// The last pass's (seconds, rules evaluated), from the host's metrics.
async fn last_pass(server: &TestServer) -> (f64, i64) {
    let text = server
        .get("/api/v2/metrics")
        .await
        .text()
        .await
        .unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("vigil_alert_evaluation_last_pass_duration_seconds"),
        value("vigil_alert_evaluation_last_pass_rules") as i64,
    )
}

/// How many alerts are pending or firing.
async fn alerts(server: &TestServer) -> usize {
    let (_, body) = status_json(server.get("/api/v2/alerts").await).await;
    body["alerts"].as_array().map_or(0, Vec::len)
}

use futures::StreamExt;

#[tokio::main]
async fn main() {
    let ticks: usize = std::env::var("VIGIL_BENCH_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    // VIGIL_BENCH_ALERTING=most: most series alert.
    let most = std::env::var("VIGIL_BENCH_ALERTING").is_ok_and(|v| v == "most");
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let server = TestServer::builder(&db)
        .self_report_interval("0s")
        .start()
        .await;
    load(&server).await;
    let resp = server
        .client()
        .post(server.url("/api/v2/alert-rules/import"))
        .header("content-type", "application/yaml")
        .body(rule_file(most))
        .send()
        .await
        .expect("import");
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 201, "{body:#}");
    let mut passes: Vec<(f64, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30 + 6 * ticks as u64);
    while passes.len() < ticks + 1 {
        assert!(Instant::now() < deadline, "only {passes:?} passes seen");
        let pass = last_pass(&server).await;
        if pass.1 > 0 && passes.last() != Some(&pass) {
            passes.push(pass);
        }
        // Rendering the host's metrics walks every series (`vigil_live_series`):
        // polled often it would compete with the evaluator it measures.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ms = |s: f64| s * 1e3;
    let (first, first_rules) = passes[0];
    let mut later: Vec<(f64, i64)> = passes[1..].to_vec();
    later.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rules: Vec<i64> = later.iter().map(|p| p.1).collect();
    println!(
        "1,000 rules over {} series on SQLite ({} alerting): first pass {:.1} ms ({first_rules} rules, windows read from SQLite); \
         ticks after it median {:.1} ms, worst {:.1} ms ({} ticks, rules per tick {:?}, alerts {})",
        COMPONENTS * INSTANCES * 2,
        if most { "most" } else { "few" },
        ms(first),
        ms(later[later.len() / 2].0),
        ms(later[later.len() - 1].0),
        later.len(),
        rules,
        alerts(&server).await,
    );
}
