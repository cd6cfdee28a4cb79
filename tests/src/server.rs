//! The `vigil` binary under test: building it once per test process, starting
//! it as a child process on ephemeral ports, and talking to it over HTTP.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::TestDatabase;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Building the binary
// ---------------------------------------------------------------------------

/// Path of the `vigil` binary, built once per test process.
///
/// Runs `$CARGO build -p vigil-host --bin vigil` (with `--release` when this test
/// executable was built in release mode) in the workspace directory and returns
/// `<target dir>/<profile>/vigil`, the target directory being derived from the
/// running test executable (`.../target/debug/deps/test-xxxx`). Panics with the
/// compiler output when the build fails.
pub fn vigil_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // .../target/<profile>/deps/<test exe>  →  .../target/<profile>
        let mut profile_dir = exe.parent().expect("exe dir").to_path_buf();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        let release = profile_dir.file_name().is_some_and(|n| n == "release")
            || exe.to_string_lossy().contains("/release/");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "-p", "vigil-host", "--bin", "vigil"])
            .current_dir(&workspace);
        if release {
            cmd.arg("--release");
        }
        // Build into the same target dir as this test executable.
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            if let Some(target) = profile_dir.parent() {
                cmd.env("CARGO_TARGET_DIR", target);
            }
        }
        eprintln!("[harness] building vigil: {cmd:?}");
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("could not run {cargo}: {e}"));
        if !out.status.success() {
            panic!(
                "building the vigil binary failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bin = profile_dir.join(format!("vigil{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.exists(),
            "cargo build succeeded but {} does not exist",
            bin.display()
        );
        bin
    })
    .clone()
}

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/// How to start a `vigil serve` process; see [`TestServer::builder`].
#[derive(Clone, Debug)]
pub struct TestServerBuilder {
    db_args: Vec<String>,
    database_url: Option<String>,
    listen: String,
    metrics_listen: String,
    self_report_interval: String,
    tokens: Vec<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl TestServerBuilder {
    /// Appends a raw command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several raw command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the server process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Adds `--token SCOPES:SECRET`, e.g. `.token("read,write:secret")`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// Replaces the default `--listen 127.0.0.1:0`.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Replaces the default `--metrics-listen 127.0.0.1:0` (`"off"` disables).
    pub fn metrics_listen(mut self, addr: impl Into<String>) -> Self {
        self.metrics_listen = addr.into();
        self
    }

    /// Replaces the default `--self-report-interval 0s`.
    pub fn self_report_interval(mut self, d: impl Into<String>) -> Self {
        self.self_report_interval = d.into();
        self
    }

    /// Replaces the `--database-url` of the test database (e.g. to go through a proxy).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// The full argument list after `vigil`.
    pub fn command_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            self.listen.clone(),
            "--metrics-listen".into(),
            self.metrics_listen.clone(),
            "--log-format".into(),
            "json".into(),
            "--self-report-interval".into(),
            self.self_report_interval.clone(),
        ];
        let mut db_args = self.db_args.clone();
        if let Some(url) = &self.database_url {
            if let Some(i) = db_args.iter().position(|a| a == "--database-url") {
                db_args[i + 1] = url.clone();
            } else {
                db_args.push("--database-url".into());
                db_args.push(url.clone());
            }
        }
        a.extend(db_args);
        for t in &self.tokens {
            a.push("--token".into());
            a.push(t.clone());
        }
        // Tests store samples with old timestamps (2024) to check queries;
        // the default 24 h retention would delete them whenever its first
        // round runs after the report. Tests of retention set their own.
        if !self.args.iter().any(|a| a == "--retention") {
            a.push("--retention".into());
            a.push("36500days".into());
        }
        a.extend(self.args.iter().cloned());
        a
    }

    /// Starts the server and waits (at most 30 s) for its `listening` log line.
    /// Panics with the captured stderr if it exits first or never gets there.
    pub async fn start(self) -> TestServer {
        let bin = vigil_binary();
        let args = self.command_args();
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        strip_vigil_env(&mut cmd);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let readers = vec![
            spawn_line_reader(
                child.stderr.take().expect("stderr"),
                logs.clone(),
                "[vigil] ",
            ),
            spawn_line_reader(
                child.stdout.take().expect("stdout"),
                logs.clone(),
                "[vigil stdout] ",
            ),
        ];
        let mut server = TestServer {
            child: Some(child),
            logs,
            readers,
            api: "127.0.0.1:0".parse().expect("addr"),
            metrics: None,
            builder: self,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((api, metrics)) = server.find_listening_line() {
                server.api = api;
                server.metrics = metrics;
                return server;
            }
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                server.join_readers();
                panic!(
                    "vigil exited ({status}) before logging \"listening\"\nargs: {args:?}\nstderr:\n{}",
                    server.logs().join("\n")
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "vigil did not log \"listening\" within 30 s\nargs: {args:?}\nstderr:\n{}",
                    server.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Removes inherited `VIGIL_*` settings (but not `VIGIL_TEST_*`) so that a
/// developer's environment cannot change the server under test.
fn strip_vigil_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("VIGIL_") && !k.starts_with("VIGIL_TEST_") {
            cmd.env_remove(k);
        }
    }
}

fn spawn_line_reader(
    stream: impl Read + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    prefix: &'static str,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    eprintln!("{prefix}{line}");
                    logs.lock().expect("logs lock").push(line);
                }
            }
        }
    })
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = s.trim().parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Some(addr)
}

/// A running `vigil serve` child process on ephemeral ports. Killed on drop.
pub struct TestServer {
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    api: SocketAddr,
    metrics: Option<SocketAddr>,
    builder: TestServerBuilder,
}

impl TestServer {
    /// A builder for a server on `db` with the harness defaults:
    /// `serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json
    /// --self-report-interval 0s` plus the database arguments.
    pub fn builder(db: &TestDatabase) -> TestServerBuilder {
        TestServerBuilder {
            db_args: db.server_args(),
            database_url: None,
            listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            self_report_interval: "0s".into(),
            tokens: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Starts a server with the defaults on `db`.
    pub async fn start(db: &TestDatabase) -> TestServer {
        Self::builder(db).start().await
    }

    fn find_listening_line(&self) -> Option<(SocketAddr, Option<SocketAddr>)> {
        let logs = self.logs.lock().expect("logs lock");
        for line in logs.iter() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let fields = &v["fields"];
            if fields["message"] != "listening" {
                continue;
            }
            let api = fields["api"].as_str().and_then(parse_addr);
            let metrics = match fields["metrics"].as_str() {
                Some("off") => Some(None),
                Some(s) => parse_addr(s).map(Some),
                None => None,
            };
            match (api, metrics) {
                (Some(api), Some(metrics)) => return Some((api, metrics)),
                _ => panic!("unparsable \"listening\" log line (want fields.api and fields.metrics): {line}"),
            }
        }
        None
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// The API listener address.
    pub fn addr(&self) -> SocketAddr {
        self.api
    }

    /// The metrics listener address, None when `--metrics-listen off`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// `http://<api addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// `http://<metrics addr><path>`; panics when the metrics listener is off.
    pub fn metrics_url(&self, path: &str) -> String {
        let addr = self.metrics.expect("metrics listener is off");
        format!("http://{addr}{path}")
    }

    /// A fresh HTTP client (no credentials).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client")
    }

    /// Every line the server printed so far (stderr and stdout).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs lock").clone()
    }

    /// The process id (None once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
    }

    /// Sends SIGTERM and waits (at most 30 s) for the process to exit; returns its
    /// exit status. Panics (after SIGKILL) if it does not exit in time.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.join_readers();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_readers();
                panic!(
                    "vigil did not exit within 30 s of SIGTERM\nlogs:\n{}",
                    self.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a new server process with the same arguments on the same database
    /// (ports change). A still-running process is terminated gracefully first.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate().await;
        }
        let new = self.builder.clone().start().await;
        *self = new;
    }

    fn bearer(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.builder.tokens.first().and_then(|t| t.split_once(':')) {
            Some((_, secret)) => req.bearer_auth(secret),
            None => req,
        }
    }

    /// GET `path` on the API listener (with the first configured token, if any).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.bearer(self.client().get(self.url(path)))
            .send()
            .await
            .expect("GET")
    }

    /// POST a JSON body to `path` (with the first configured token, if any).
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.bearer(self.client().post(self.url(path)).json(body))
            .send()
            .await
            .expect("POST")
    }

    /// POST a raw body with `Content-Type: application/json` to `path`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.bearer(
            self.client()
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .send()
        .await
        .expect("POST")
    }

    /// DELETE `path` (with the first configured token, if any).
    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.bearer(self.client().delete(self.url(path)))
            .send()
            .await
            .expect("DELETE")
    }

    /// POSTs a report to `/api/v2/metrics/report`; returns the raw response.
    pub async fn report(&self, body: &Value) -> reqwest::Response {
        self.post_json("/api/v2/metrics/report", body).await
    }

    /// POSTs a report and asserts `200 {"accepted": <number of metrics>}`.
    pub async fn report_ok(&self, body: &Value) {
        let n = body["metrics"].as_array().map(|a| a.len()).unwrap_or(0);
        let resp = self.report(body).await;
        let (status, json) = status_json(resp).await;
        assert_eq!(status, 200, "report rejected: {json}\nbody: {body}");
        assert_eq!(json["accepted"], n, "accepted count: {json}");
    }

    /// One page of `/api/v2/metrics/query` with `params`; asserts 200.
    pub async fn query_page(&self, params: &[(&str, &str)]) -> Value {
        let req = self
            .client()
            .get(self.url("/api/v2/metrics/query"))
            .query(params);
        let resp = self.bearer(req).send().await.expect("query");
        let (status, json) = status_json(resp).await;
        assert_eq!(status, 200, "query {params:?} failed: {json}");
        json
    }

    /// Every sample matching `params`, following `next_cursor` to the end
    /// (at most 10 000 pages).
    pub async fn query_all(&self, params: &[(&str, &str)]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut p: Vec<(&str, &str)> = params.to_vec();
            if let Some(c) = &cursor {
                p.push(("cursor", c.as_str()));
            }
            let page = self.query_page(&p).await;
            out.extend(
                page["samples"]
                    .as_array()
                    .expect("samples array")
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
        panic!("query did not end after 10000 pages");
    }

    /// Seqs of every stored sample of `component`, ascending.
    pub async fn stored_seqs(&self, component: &str) -> Vec<i64> {
        self.query_all(&[("component_name", component), ("limit", "10000")])
            .await
            .iter()
            .map(|s| s["seq"].as_i64().expect("seq"))
            .collect()
    }

    /// Body of `GET /api/metrics/prometheus` (text format); asserts 200.
    pub async fn export(&self) -> String {
        let resp = self.get("/api/metrics/prometheus").await;
        let status = resp.status();
        let text = resp.text().await.expect("export body");
        assert_eq!(status, 200, "export failed: {text}");
        text
    }

    /// Body of `GET /api/metrics/prometheus` with `Accept: application/openmetrics-text`.
    pub async fn export_openmetrics(&self) -> String {
        let req = self
            .client()
            .get(self.url("/api/metrics/prometheus"))
            .header("accept", "application/openmetrics-text");
        let resp = self.bearer(req).send().await.expect("export");
        let status = resp.status();
        let text = resp.text().await.expect("export body");
        assert_eq!(status, 200, "export failed: {text}");
        text
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Status code and JSON body (Value::Null plus the raw text in `"_raw"` when the
/// body is not JSON).
pub async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "_raw": text }));
    (status, json)
}

/// Asserts the contract's error shape `{"error":{"code","message",...}}` with
/// the given status and code; returns the `error` object.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, json) = status_json(resp).await;
    assert_eq!(got, status, "expected {status} {code}, got {got}: {json}");
    assert_eq!(json["error"]["code"], code, "error code: {json}");
    assert!(
        json["error"]["message"].is_string(),
        "error.message missing: {json}"
    );
    json["error"].clone()
}

/// Runs `vigil ARGS` to completion (at most `timeout`) and returns its exit
/// status and combined stderr+stdout. Returns `None` as status when it was still
/// running at the deadline (it is killed then).
pub async fn run_vigil(
    args: &[&str],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> (Option<ExitStatus>, String) {
    let bin = vigil_binary();
    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1");
    strip_vigil_env(&mut cmd);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn vigil");
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let readers = [
        spawn_line_reader(
            child.stderr.take().expect("stderr"),
            logs.clone(),
            "[vigil] ",
        ),
        spawn_line_reader(
            child.stdout.take().expect("stdout"),
            logs.clone(),
            "[vigil stdout] ",
        ),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for r in readers {
        let _ = r.join();
    }
    let out = logs.lock().expect("logs").join("\n");
    (status, out)
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
