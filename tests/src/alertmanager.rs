//! A real Alertmanager (Debian's `prometheus-alertmanager`) for tests: one
//! route to one webhook receiver, clustering off, on a free port with a
//! temporary storage path. Skips loudly when the binary is missing (a failure
//! under `VIGIL_TEST_REQUIRE_SERVICES=1`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::skip_or_fail;

const BINARY: &str = "prometheus-alertmanager";

/// A running Alertmanager; killed and its storage removed on drop.
pub struct AlertmanagerServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    client: reqwest::Client,
}

impl AlertmanagerServer {
    /// Starts Alertmanager routing every alert, grouped by `group_by`, to the
    /// webhook `receiver` named `receiver_name` at `webhook_url`, with its
    /// fastest timing (`group_wait` 100 ms). `None` (after a loud skip) when
    /// it is not installed.
    pub async fn start(
        receiver_name: &str,
        webhook_url: &str,
        group_by: &[&str],
    ) -> Option<AlertmanagerServer> {
        Self::start_with_group_wait(receiver_name, webhook_url, group_by, "100ms").await
    }

    /// As [`AlertmanagerServer::start`], with `group_wait` given (`0s`: a new
    /// group goes out as soon as its first alert arrives).
    pub async fn start_with_group_wait(
        receiver_name: &str,
        webhook_url: &str,
        group_by: &[&str],
        group_wait: &str,
    ) -> Option<AlertmanagerServer> {
        let installed = Command::new(BINARY)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            skip_or_fail(
                "tests with a real Alertmanager: `prometheus-alertmanager` is not installed (apt install prometheus-alertmanager)",
                "prometheus-alertmanager required (VIGIL_TEST_REQUIRE_SERVICES=1) but not installed",
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("vigil-am-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data")).expect("alertmanager dir");
        let group_by: Vec<String> = group_by.iter().map(|l| format!("'{l}'")).collect();
        let config = format!(
            "route:\n  receiver: '{receiver_name}'\n  group_by: [{}]\n  group_wait: {group_wait}\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: '{receiver_name}'\n    webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n",
            group_by.join(", ")
        );
        std::fs::write(dir.join("alertmanager.yml"), config).expect("alertmanager config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(BINARY)
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("alertmanager.log")).expect("log file"),
            ))
            .spawn()
            .expect("start alertmanager");
        let server = AlertmanagerServer {
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
                "alertmanager did not become ready:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `http://host:port`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }

    /// Posts alerts to `/api/v2/alerts` (what Prometheus does).
    pub async fn post_alerts(&self, alerts: &Value) {
        let r = self
            .client
            .post(format!("http://{}/api/v2/alerts", self.addr))
            .json(alerts)
            .send()
            .await
            .expect("post alerts");
        assert!(
            r.status().is_success(),
            "alertmanager refused: {}",
            r.status()
        );
    }

    /// `GET /api/v2/alerts`.
    pub async fn alerts(&self) -> Vec<Value> {
        self.client
            .get(format!("http://{}/api/v2/alerts", self.addr))
            .send()
            .await
            .expect("get alerts")
            .json::<Value>()
            .await
            .expect("alerts json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for AlertmanagerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
