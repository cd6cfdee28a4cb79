//! Plugins under test: a temporary plugin directory with atomic writes, and
//! status helpers on [`TestServer`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{plugins, status_json, TestServer, TestServerBuilder};
use serde_json::Value;

impl TestServerBuilder {
    /// Adds `--plugin-dir DIR`.
    pub fn plugin_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().display().to_string();
        self.arg("--plugin-dir").arg(dir)
    }
}

/// A temporary plugin directory (removed on drop). Every write is atomic (a
/// temporary file in the same directory, whose extension the server ignores,
/// renamed into place) so the watcher never sees half a file.
pub struct PluginDir {
    path: PathBuf,
}

impl Default for PluginDir {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginDir {
    /// Creates an empty directory under the system temp dir.
    pub fn new() -> PluginDir {
        let path =
            std::env::temp_dir().join(format!("vigil-plugins-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create plugin dir");
        PluginDir { path }
    }

    /// The directory (pass to [`TestServerBuilder::plugin_dir`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/<name>.wasm`.
    pub fn wasm_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.wasm"))
    }

    /// `<dir>/<name>.toml`.
    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.toml"))
    }

    fn write_atomic(&self, target: &Path, bytes: &[u8]) {
        let tmp = self.path.join(format!(
            ".{}.tmp-{}",
            target.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, target)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", target.display()));
    }

    /// Installs the component of plugin crate `fixture` (see
    /// [`plugins::plugin_wasm`]) as `<name>.wasm`, atomically.
    pub fn install(&self, name: &str, fixture: &str) {
        let bytes = std::fs::read(plugins::plugin_wasm(fixture)).expect("read component");
        self.write_wasm(name, &bytes);
    }

    /// Writes `<name>.toml` first, then installs `fixture` as `<name>.wasm`.
    pub fn install_with_manifest(&self, name: &str, fixture: &str, manifest: &str) {
        self.write_manifest(name, manifest);
        self.install(name, fixture);
    }

    /// Writes `<name>.toml` atomically.
    pub fn write_manifest(&self, name: &str, manifest: &str) {
        self.write_atomic(&self.manifest_path(name), manifest.as_bytes());
    }

    /// Writes `<name>.wasm` atomically with arbitrary bytes.
    pub fn write_wasm(&self, name: &str, bytes: &[u8]) {
        self.write_atomic(&self.wasm_path(name), bytes);
    }

    /// Removes `<name>.wasm` (the manifest stays).
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.wasm_path(name))
            .unwrap_or_else(|e| panic!("remove {name}.wasm: {e}"));
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Hex SHA-256 of a plugin crate's component (what `/api/v2/plugins` shows as `sha256`).
pub fn plugin_sha256(fixture: &str) -> String {
    let out = Command::new("sha256sum")
        .arg(plugins::plugin_wasm(fixture))
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// A value from `/proc/<pid>/status` in bytes (e.g. `"VmRSS"`, `"VmHWM"`).
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl TestServer {
    /// `plugins` of `GET /api/v2/plugins`; asserts 200.
    pub async fn plugins(&self) -> Vec<Value> {
        let (status, json) = status_json(self.get("/api/v2/plugins").await).await;
        assert_eq!(status, 200, "GET /api/v2/plugins: {json}");
        json["plugins"].as_array().cloned().unwrap_or_default()
    }

    /// One plugin of `GET /api/v2/plugins` by name.
    pub async fn plugin(&self, name: &str) -> Option<Value> {
        self.plugins().await.into_iter().find(|p| p["name"] == name)
    }

    /// Sends `method url` (a full URL) with an optional bearer token and
    /// JSON body; returns status and body.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let client = self.client();
        let mut req = match method {
            "GET" => client.get(url),
            "POST" => client.post(url),
            "DELETE" => client.delete(url),
            m => panic!("method {m}"),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        status_json(req.send().await.expect("request")).await
    }

    /// `publishers` of `GET /api/v2/publishers`; asserts 200.
    pub async fn publishers(&self) -> Vec<Value> {
        let (status, json) = status_json(self.get("/api/v2/publishers").await).await;
        assert_eq!(status, 200, "GET /api/v2/publishers: {json}");
        json["publishers"].as_array().cloned().unwrap_or_default()
    }

    /// One publisher of `GET /api/v2/publishers` by name.
    pub async fn publisher(&self, name: &str) -> Option<Value> {
        self.publishers()
            .await
            .into_iter()
            .find(|p| p["name"] == name)
    }

    /// Polls `GET /api/v2/plugins` until plugin `name` satisfies `pred`; returns it.
    pub async fn wait_plugin(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.plugin(name).await {
                if pred(&p) {
                    return p;
                }
                last = p;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for plugin {name}: {what}\nlast status: {last:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET /api/v2/publishers` until publisher `name` satisfies `pred`; returns it.
    pub async fn wait_publisher(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.publisher(name).await {
                if pred(&p) {
                    return p;
                }
                last = p;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for publisher {name}: {what}\nlast status: {last:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
