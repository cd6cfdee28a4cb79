//! A real Prometheus server (Debian's `prometheus`) for tests: started on a
//! free port with a temporary storage path, scraping given targets (and/or
//! receiving remote writes), queried through its HTTP API. Skips loudly when
//! the binary is missing (a failure under `VIGIL_TEST_REQUIRE_SERVICES=1`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::skip_or_fail;

/// A running `prometheus` process; killed and its storage removed on drop.
pub struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    client: reqwest::Client,
}

/// How to start one: scrape targets and options.
#[derive(Default)]
pub struct PrometheusOptions {
    /// `host:port` targets scraped at `/metrics` every `scrape_interval`.
    pub scrape_targets: Vec<String>,
    pub scrape_interval: Option<Duration>,
    /// Starts the remote-write receiver (`--web.enable-remote-write-receiver`).
    pub remote_write_receiver: bool,
    /// OpenMetrics text (with timestamps, ending `# EOF`) written into the
    /// storage before start by `promtool tsdb create-blocks-from openmetrics`,
    /// so queries see exactly these samples.
    pub backfill: Option<String>,
    /// A rule file (`groups:` YAML), evaluated every `scrape_interval`.
    pub rules: Option<String>,
    /// `host:port` of Alertmanagers its alerts go to.
    pub alertmanagers: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrometheusServer {
    /// Whether the `prometheus` binary is installed; skips loudly (or fails
    /// under `VIGIL_TEST_REQUIRE_SERVICES=1`) when it is not.
    pub fn available() -> bool {
        let ok = Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            skip_or_fail(
                "tests with a real Prometheus: `prometheus` is not installed (apt install prometheus)",
                "prometheus required (VIGIL_TEST_REQUIRE_SERVICES=1) but not installed",
            );
        }
        ok
    }

    /// Starts Prometheus and waits until it is ready. `None` when it is not
    /// installed (after a loud skip).
    pub async fn start(options: PrometheusOptions) -> Option<PrometheusServer> {
        if !Self::available() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("vigil-prom-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let interval = options.scrape_interval.unwrap_or(Duration::from_secs(1));
        let mut config = format!(
            "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n  evaluation_interval: {ms}ms\nscrape_configs:\n",
            ms = interval.as_millis()
        );
        if !options.scrape_targets.is_empty() {
            config.push_str("  - job_name: vigil\n    static_configs:\n      - targets: [");
            let targets: Vec<String> = options
                .scrape_targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect();
            config.push_str(&targets.join(", "));
            config.push_str("]\n");
        }
        if let Some(rules) = &options.rules {
            std::fs::write(dir.join("rules.yml"), rules).expect("rule file");
            config.push_str(&format!(
                "rule_files: ['{}']\n",
                dir.join("rules.yml").display()
            ));
        }
        if !options.alertmanagers.is_empty() {
            let targets: Vec<String> = options
                .alertmanagers
                .iter()
                .map(|t| format!("'{t}'"))
                .collect();
            config.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus config");
        if let Some(text) = &options.backfill {
            let file = dir.join("backfill.om");
            std::fs::write(&file, text).expect("backfill file");
            let out = Command::new("promtool")
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&file)
                .arg(dir.join("data"))
                .output()
                .expect("run promtool");
            assert!(
                out.status.success(),
                "promtool backfill failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("prometheus.log")).expect("log file"),
        ));
        if options.remote_write_receiver {
            cmd.arg("--web.enable-remote-write-receiver");
        }
        let child = cmd.spawn().expect("start prometheus");
        let server = PrometheusServer {
            child,
            addr,
            dir,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = server
                .client
                .get(format!("http://{addr}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Some(server);
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr/api/v1/write`.
    pub fn remote_write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query (at `time`, unix seconds, when given); returns
    /// the `data.result` array. Panics on an error answer.
    pub async fn query(&self, expr: &str, time: Option<f64>) -> Vec<Value> {
        let mut params = vec![("query", expr.to_string())];
        if let Some(t) = time {
            params.push(("time", format!("{t:.3}")));
        }
        let resp = self
            .client
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&params)
            .send()
            .await
            .expect("prometheus query");
        let body: Value = resp.json().await.expect("prometheus answer");
        assert_eq!(body["status"], "success", "query {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls an instant query until its result is not empty; returns the result.
    pub async fn query_until_some(&self, expr: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(expr, None).await;
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "query `{expr}` stayed empty for {timeout:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The `activeTargets` of `/api/v1/targets`.
    pub async fn targets(&self) -> Vec<Value> {
        let body: Value = self
            .client
            .get(format!("http://{}/api/v1/targets", self.addr))
            .send()
            .await
            .expect("prometheus targets")
            .json()
            .await
            .expect("targets answer");
        body["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until every target has been scraped at least `scrapes` more
    /// times than now and returns the targets then (their `health` and
    /// `lastError` say how the last scrape went).
    pub async fn wait_scrapes(&self, scrapes: u32) -> Vec<Value> {
        let last = |targets: &[Value]| -> Vec<String> {
            targets
                .iter()
                .map(|t| t["lastScrape"].as_str().unwrap_or("").to_string())
                .collect()
        };
        let mut seen = last(&self.targets().await);
        let mut left = scrapes;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let targets = self.targets().await;
            let now = last(&targets);
            if now.iter().zip(&seen).all(|(a, b)| a != b) && !now.is_empty() {
                seen = now;
                left -= 1;
                if left == 0 {
                    return targets;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape: {targets:?}\n{}",
                self.log()
            );
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
