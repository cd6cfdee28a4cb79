//! Alert latency: from the `200` of the report that crosses a rule's
//! threshold to the webhook receiver holding the notification, with
//! `for: 0s` and `group_wait: 0s` — Vigil (release build, SQLite, the real
//! webhook notifier plugin, the rule's interval one minute so only the
//! evaluation on commit can be this fast) beside Prometheus + Alertmanager at
//! their fastest settings in the same run (the sample remote-written into
//! Prometheus, rules evaluated every 100 ms, Alertmanager `group_wait: 0s`),
//! the same webhook receiver behind both.
//!
//! Each probe is a new series (`component="p<n>"`), so each is a new alert
//! and a new group; probes are spaced 200–450 ms apart so they fall at every
//! phase of Prometheus's evaluation ticks. Prints p50, p99 and max of each.
//!
//! `cargo bench -p vigil-tests --bench alert_latency`
//! (`VIGIL_BENCH_PROBES`, default 40, sets the probes per system.)

use std::time::{Duration, Instant};

use serde_json::json;
use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(30);

/// When the receiver got the first notification naming `component`
/// (`None` after [`WAIT`]).
async fn arrival(receiver: &WebhookReceiver, component: &str) -> Option<Instant> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = receiver.requests().into_iter().find(|r| {
            r.json()["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["labels"]["component"] == component))
        });
        if let Some(r) = found {
            return Some(r.at);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The body of a GET, for a failure's message.
async fn show(url: String) -> String {
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

/// Latencies in ms, from the `200` (0 when the notification was there first).
struct Latencies {
    from_ok: Vec<f64>,
    from_send: Vec<f64>,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            from_ok: Vec::new(),
            from_send: Vec::new(),
        }
    }
    fn add(&mut self, sent: Instant, ok: Instant, at: Instant) {
        self.from_ok
            .push(at.saturating_duration_since(ok).as_secs_f64() * 1e3);
        self.from_send
            .push(at.saturating_duration_since(sent).as_secs_f64() * 1e3);
    }
    fn print(&mut self, what: &str) {
        for v in [&mut self.from_ok, &mut self.from_send] {
            v.sort_by(f64::total_cmp);
        }
        let pick =
            |v: &[f64], q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        println!(
            "alert latency, {what}: from the 200 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             from sending the report p50 {:.1} ms, p99 {:.1} ms ({} probes)",
            pick(&self.from_ok, 0.5),
            pick(&self.from_ok, 0.99),
            pick(&self.from_ok, 1.0),
            pick(&self.from_send, 0.5),
            pick(&self.from_send, 0.99),
            self.from_ok.len()
        );
    }
}

/// 200–450 ms, varying from probe to probe.
fn spacing(n: usize) -> Duration {
    Duration::from_millis(200 + (n as u64 * 137) % 250)
}

async fn vigil(probes: usize) -> Latencies {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let receiver = WebhookReceiver::start().await;
    dir.install_with_manifest(
        "webhook",
        "webhook-notifier",
        &format!(
            "[capabilities]\nallowed_hosts = [\"{}\"]\n",
            receiver.origin()
        ),
    );
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    server
        .wait_plugin("webhook", WAIT, "loaded", |p| p["state"] == "loaded")
        .await;
    let (status, body) = status_json(
        server
            .post_json(
                "/api/v2/notification-channels",
                &json!({"name": "ops", "plugin": "webhook",
                        "config": {"url": receiver.url("/hook")}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body:#}");
    let (status, body) = status_json(
        server
            .post_json(
                "/api/v2/alert-rules",
                &json!({"name": "Probe", "expr": "latency_probe > 100", "for": "0s",
                        "interval": "1m", "group_by": ["component"], "group_wait": "0s",
                        "channels": ["ops"]}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body:#}");
    let mut out = Latencies::new();
    for n in 0..probes {
        let component = format!("p{n}");
        let sent = Instant::now();
        server
            .report_ok(&report(&component, [gauge("latency_probe", 500.0)]))
            .await;
        let ok = Instant::now();
        let Some(at) = arrival(&receiver, &component).await else {
            panic!(
                "Vigil: no notification for {component}; alerts: {}",
                show(server.url("/api/v2/alerts")).await
            );
        };
        out.add(sent, ok, at);
        tokio::time::sleep(spacing(n)).await;
    }
    out
}

async fn prometheus(probes: usize) -> Option<Latencies> {
    let receiver = WebhookReceiver::start().await;
    let am = AlertmanagerServer::start_with_group_wait(
        "hook",
        &receiver.url("/hook"),
        &["component"],
        "0s",
    )
    .await?;
    let origin = am.origin();
    let prom = PrometheusServer::start(PrometheusOptions {
        scrape_interval: Some(Duration::from_millis(100)),
        remote_write_receiver: true,
        rules: Some(
            "groups:\n  - name: probe\n    interval: 100ms\n    rules:\n      - alert: Probe\n        expr: latency_probe > 100\n        for: 0s\n"
                .into(),
        ),
        alertmanagers: vec![origin.trim_start_matches("http://").to_string()],
        ..PrometheusOptions::default()
    })
    .await?;
    // Prometheus finds its Alertmanager a few seconds after it starts; an
    // alert that fires before is dropped and sent again only after the
    // resend delay (1 minute). A running Prometheus knows its Alertmanager.
    let addr = prom.addr();
    let deadline = Instant::now() + WAIT;
    while !show(format!("http://{addr}/api/v1/alertmanagers"))
        .await
        .contains(&origin)
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never found its Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::new();
    let url = prom.remote_write_url();
    let mut out = Latencies::new();
    for n in 0..probes {
        let component = format!("p{n}");
        let mut request = Vec::new();
        remote_write::put_series(
            &mut request,
            &[
                ("__name__".to_string(), "latency_probe".to_string()),
                ("component".to_string(), component.clone()),
            ],
            500.0,
            chrono::Utc::now().timestamp_millis(),
        );
        let mut post = client.post(&url).body(remote_write::compress(&request));
        for (name, value) in remote_write::HEADERS {
            post = post.header(name, value);
        }
        let sent = Instant::now();
        let resp = post.send().await.expect("remote write");
        assert!(
            resp.status().is_success(),
            "remote write: {}",
            resp.status()
        );
        let ok = Instant::now();
        let Some(at) = arrival(&receiver, &component).await else {
            panic!(
                "Prometheus: no notification for {component}; query: {}; rules: {}; \
                 alertmanager: {}; its alertmanagers: {}; log:\n{}",
                show(format!("http://{addr}/api/v1/query?query=latency_probe")).await,
                show(format!("http://{addr}/api/v1/rules")).await,
                show(format!("{origin}/api/v2/alerts")).await,
                show(format!("http://{addr}/api/v1/alertmanagers")).await,
                prom.log(),
            );
        };
        out.add(sent, ok, at);
        tokio::time::sleep(spacing(n)).await;
    }
    drop((prom, am));
    Some(out)
}

#[tokio::main]
async fn main() {
    let probes: usize = std::env::var("VIGIL_BENCH_PROBES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // VIGIL_BENCH_SKIP_VIGIL=1 measures the peers alone.
    if std::env::var_os("VIGIL_BENCH_SKIP_VIGIL").is_none() {
        vigil(probes)
            .await
            .print("Vigil (report → webhook notifier)");
    }
    match prometheus(probes).await {
        Some(mut l) => l.print("Prometheus + Alertmanager (remote write → webhook)"),
        None => println!("alert latency, Prometheus + Alertmanager: skipped (not installed)"),
    }
}
