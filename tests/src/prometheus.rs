//! A real Prometheus (Debian's `prometheus`) for tests: started on a free
//! loopback port with a temporary storage path, scraping the given targets
//! every second; queried through its HTTP API. Stopped and removed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::skip_or_fail;

/// A running Prometheus server.
pub struct TestPrometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

impl TestPrometheus {
    /// Starts Prometheus scraping `targets` (job `vigil`, every 1 s). `None`
    /// (a loud skip, or a panic under `VIGIL_TEST_REQUIRE_SERVICES=1`) when
    /// the `prometheus` binary is not installed.
    pub async fn start(targets: &[SocketAddr]) -> Option<TestPrometheus> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            skip_or_fail(
                "Prometheus: install Debian's `prometheus` package",
                "prometheus required but not installed",
            );
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("vigil-prom-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let addr = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let prom = TestPrometheus { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("http://{addr}/-/ready")).send().await {
                if r.status().is_success() {
                    return Some(prom);
                }
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs an instant query; returns the whole answer (`status`, `data` or `error`).
    pub async fn query(&self, expr: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query prometheus")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// Polls an instant query until its result is not empty; returns the result.
    pub async fn query_until_some(&self, expr: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.query(expr).await;
            assert_eq!(
                answer["status"], "success",
                "query `{expr}` failed: {answer}"
            );
            let result = answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "query `{expr}` stayed empty for {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
