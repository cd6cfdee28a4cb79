//! Integration test harness for Vigil.
//!
//! The tests in `tests/tests/*.rs` never link against the server: they build the
//! real `vigil` binary once per test process ([`vigil_binary`]), start it as a child
//! process on ephemeral ports ([`TestServer`]) against a fresh database
//! ([`TestDatabase`]: a temporary SQLite data directory or a freshly created
//! PostgreSQL database) and talk to it over HTTP, exactly as a user would.
//!
//! Environment:
//! - `VIGIL_TEST_DATABASE_URL`: admin URL of a PostgreSQL server
//!   (e.g. `postgres://postgres@127.0.0.1:5432/test`). Each test creates its own
//!   database `vigil_test_<uuid>` there and drops it afterwards. When unset, the
//!   PostgreSQL variants of the tests are skipped with a loud banner.
//! - `VIGIL_TEST_REQUIRE_SERVICES=1`: turn every such skip (PostgreSQL, `promtool`,
//!   the Python OpenMetrics parser) into a failure. CI sets it.
//!
//! Most tests are written once as `async fn name(backend: Backend)` and
//! instantiated for both backends with [`backend_tests!`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod plugins;

pub use reqwest;
pub use serde_json::{json, Value};

/// Environment variable holding the PostgreSQL admin URL.
pub const DATABASE_URL_ENV: &str = "VIGIL_TEST_DATABASE_URL";
/// Environment variable that turns skips of missing services/tools into failures.
pub const REQUIRE_SERVICES_ENV: &str = "VIGIL_TEST_REQUIRE_SERVICES";

/// True when `VIGIL_TEST_REQUIRE_SERVICES=1`: missing services and tools fail the test.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV)
        .map(|v| v == "1" || v == "true")
        .unwrap_or(false)
}

/// Skips loudly (stderr banner) or, under `VIGIL_TEST_REQUIRE_SERVICES=1`, panics.
pub fn skip_or_fail(what: &str, required_msg: &str) {
    if services_required() {
        panic!("{required_msg}");
    }
    // Written to the stderr handle directly: libtest captures eprintln! of
    // passing tests, and a skip must be seen.
    static BANNERS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let first = {
        let mut seen = BANNERS.lock().unwrap_or_else(|e| e.into_inner());
        let first = !seen.iter().any(|w| w == what);
        if first {
            seen.push(what.to_string());
        }
        first
    };
    let msg = if first {
        format!(
            "\n\
             ********************************************************************\n\
             *** SKIPPING {what}\n\
             *** ({REQUIRE_SERVICES_ENV}=1 turns this skip into a failure)\n\
             ********************************************************************\n"
        )
    } else {
        format!("*** SKIPPING {what}\n")
    };
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

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
// Backends and databases
// ---------------------------------------------------------------------------

/// A storage backend of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in a temporary data directory.
    Sqlite,
    /// PostgreSQL; holds the admin URL from `VIGIL_TEST_DATABASE_URL`.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend when `VIGIL_TEST_DATABASE_URL` is set. Otherwise
    /// panics under `VIGIL_TEST_REQUIRE_SERVICES=1`, else prints a loud skip
    /// banner and returns `None`.
    pub fn postgres() -> Option<Backend> {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Some(Backend::Postgres(url)),
            _ => {
                skip_or_fail(
                    "PostgreSQL: set VIGIL_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test)",
                    "PostgreSQL required but VIGIL_TEST_DATABASE_URL unset",
                );
                None
            }
        }
    }

    /// Short name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// Every backend available here: SQLite always, PostgreSQL when configured
/// (see [`Backend::postgres`]).
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    v.extend(Backend::postgres());
    v
}

/// Instantiates `async fn NAME(backend: Backend)` test bodies once per backend:
/// `sqlite::NAME` and `postgres::NAME`. The PostgreSQL variant skips loudly when
/// `VIGIL_TEST_DATABASE_URL` is unset (fails under `VIGIL_TEST_REQUIRE_SERVICES=1`).
///
/// ```text
/// async fn samples_round_trip(backend: Backend) { ... }
/// vigil_tests::backend_tests!(samples_round_trip);
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}

/// A fresh, empty database for one test: a temporary data directory (always, so
/// the server never writes into the working directory) plus, for PostgreSQL, a
/// freshly created database `vigil_test_<uuid>`. Everything is removed on drop.
pub struct TestDatabase {
    backend: Backend,
    data_dir: PathBuf,
    pg: Option<PgDatabase>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates the database for `backend`.
    pub async fn new(backend: &Backend) -> TestDatabase {
        let data_dir =
            std::env::temp_dir().join(format!("vigil-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin_url) => {
                use sqlx::Connection;
                let name = format!("vigil_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("connect to {DATABASE_URL_ENV}={admin_url}: {e}"));
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                let _ = conn.close().await;
                let url = with_database(admin_url, &name);
                Some(PgDatabase {
                    admin_url: admin_url.clone(),
                    name,
                    url,
                })
            }
        };
        TestDatabase {
            backend: backend.clone(),
            data_dir,
            pg,
        }
    }

    /// The backend of this database.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The server's `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The PostgreSQL URL of the fresh database (None for SQLite).
    pub fn database_url(&self) -> Option<&str> {
        self.pg.as_ref().map(|p| p.url.as_str())
    }

    /// Command-line arguments that point a server at this database.
    pub fn server_args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
        ];
        if let Some(pg) = &self.pg {
            args.push("--database-url".into());
            args.push(pg.url.clone());
        }
        args
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            // Drop may run inside an async test: do the async work on a thread of
            // its own with its own runtime.
            let handle = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let Ok(rt) = rt else { return };
                rt.block_on(async move {
                    use sqlx::Connection;
                    match sqlx::PgConnection::connect(&pg.admin_url).await {
                        Ok(mut conn) => {
                            let sql =
                                format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", pg.name);
                            if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                                eprintln!("[harness] could not drop {}: {e}", pg.name);
                            }
                            let _ = conn.close().await;
                        }
                        Err(e) => eprintln!("[harness] could not drop {}: {e}", pg.name),
                    }
                });
            });
            let _ = handle.join();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Replaces the database name (URL path) of a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("bad database URL {url}: {e}"));
    u.set_path(&format!("/{database}"));
    u.to_string()
}

/// Replaces host and port of a PostgreSQL URL (used to route through a [`TcpProxy`]).
pub fn with_host_port(url: &str, addr: SocketAddr) -> String {
    let mut u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("bad database URL {url}: {e}"));
    u.set_host(Some(&addr.ip().to_string())).expect("set host");
    u.set_port(Some(addr.port())).expect("set port");
    u.to_string()
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

// ---------------------------------------------------------------------------
// TCP proxy
// ---------------------------------------------------------------------------

/// A TCP forwarder `127.0.0.1:<port>` → `target` that can be cut and restored,
/// to simulate a database outage. Runs on the current tokio runtime.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    /// Starts forwarding from a fresh port on 127.0.0.1 to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let mut p = TcpProxy {
            addr: "127.0.0.1:0".parse().expect("addr"),
            target,
            accept_task: None,
            conns: Arc::default(),
        };
        p.listen().await;
        p
    }

    async fn listen(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(self.addr)
            .unwrap_or_else(|e| panic!("proxy bind {}: {e}", self.addr));
        let listener = socket.listen(128).expect("listen");
        self.addr = listener.local_addr().expect("local addr");
        let target = self.target;
        let conns = self.conns.clone();
        self.accept_task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut c = conns.lock().expect("conns");
                c.retain(|h| !h.is_finished());
                c.push(task.abort_handle());
            }
        }));
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every forwarded connection.
    pub async fn stop(&mut self) {
        if let Some(t) = self.accept_task.take() {
            t.abort();
            let _ = t.await;
        }
        for h in self.conns.lock().expect("conns").drain(..) {
            h.abort();
        }
        // Give aborted tasks a moment to drop their sockets.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Listens again on the same port.
    pub async fn start_again(&mut self) {
        assert!(self.accept_task.is_none(), "proxy is running");
        self.listen().await;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(t) = self.accept_task.take() {
            t.abort();
        }
        if let Ok(mut c) = self.conns.lock() {
            for h in c.drain(..) {
                h.abort();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Exposition format checks
// ---------------------------------------------------------------------------

fn tool_missing(tool: &str) -> Result<(), String> {
    skip_or_fail(
        &format!("exposition check: {tool} is not available"),
        &format!("{tool} required (VIGIL_TEST_REQUIRE_SERVICES=1) but not available"),
    );
    Ok(())
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output();
    let _ = writer.join();
    out
}

/// Runs `promtool check metrics` (parser and linter) on `text`. `Err` carries
/// promtool's complaints. When promtool is not installed: loud skip (`Ok`), or a
/// panic under `VIGIL_TEST_REQUIRE_SERVICES=1`.
///
/// Note: promtool 2.x reads only the Prometheus text format; it treats OpenMetrics
/// `# EOF`/`# UNIT` as comments and would misreport OpenMetrics counter families,
/// so use [`openmetrics_check`] for OpenMetrics.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let out = match run_with_stdin(Command::new("promtool").args(["check", "metrics"]), text) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return tool_missing("promtool"),
        Err(e) => return Err(format!("could not run promtool: {e}")),
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

const OPENMETRICS_CHECK_PY: &str = r#"
import sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError as e:
    print("prometheus_client missing: %s" % e)
    sys.exit(3)
text = sys.stdin.read()
try:
    for _ in text_string_to_metric_families(text):
        pass
except Exception as e:
    print("invalid OpenMetrics: %s" % e)
    sys.exit(1)
"#;

/// Parses `text` with the strict OpenMetrics 1.0 parser of the Python
/// `prometheus_client` package (`python3 -m pip install prometheus-client`).
/// `Err` carries the parser's complaint. When python3 or the package is missing:
/// loud skip (`Ok`), or a panic under `VIGIL_TEST_REQUIRE_SERVICES=1`.
pub fn openmetrics_check(text: &str) -> Result<(), String> {
    let out = match run_with_stdin(
        Command::new("python3").args(["-c", OPENMETRICS_CHECK_PY]),
        text,
    ) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return tool_missing("python3"),
        Err(e) => return Err(format!("could not run python3: {e}")),
    };
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => tool_missing("python3 module prometheus_client (pip install prometheus-client)"),
        _ => Err(format!(
            "OpenMetrics parse failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// One sample line of a text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpoSample {
    /// Sample name (e.g. `foo_bucket`).
    pub name: String,
    /// Labels with unescaped values.
    pub labels: BTreeMap<String, String>,
    /// The value (`+Inf`, `-Inf`, `NaN` parsed too).
    pub value: f64,
}

impl ExpoSample {
    /// Label value by name.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Parses the sample lines of a Prometheus text / OpenMetrics exposition
/// (comments skipped, label values unescaped). Panics on a line it cannot parse,
/// quoting the line.
pub fn parse_exposition(text: &str) -> Vec<ExpoSample> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            parse_sample_line(l)
                .unwrap_or_else(|e| panic!("cannot parse exposition line {l:?}: {e}"))
        })
        .collect()
}

fn parse_sample_line(line: &str) -> Result<ExpoSample, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut name = String::new();
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
    {
        name.push(chars[i]);
        i += 1;
    }
    if name.is_empty() {
        return Err("no metric name".into());
    }
    let mut labels = BTreeMap::new();
    if i < chars.len() && chars[i] == '{' {
        i += 1;
        loop {
            while i < chars.len() && (chars[i] == ' ' || chars[i] == ',') {
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated label set".into());
            }
            if chars[i] == '}' {
                i += 1;
                break;
            }
            let mut lname = String::new();
            while i < chars.len() && chars[i] != '=' {
                lname.push(chars[i]);
                i += 1;
            }
            if i + 1 >= chars.len() || chars[i + 1] != '"' {
                return Err(format!("label {lname}: expected =\""));
            }
            i += 2;
            let mut val = String::new();
            loop {
                match chars.get(i) {
                    None => return Err("unterminated label value".into()),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some('n') => val.push('\n'),
                            Some('\\') => val.push('\\'),
                            Some('"') => val.push('"'),
                            other => return Err(format!("bad escape \\{other:?}")),
                        }
                        i += 2;
                    }
                    Some(c) => {
                        val.push(*c);
                        i += 1;
                    }
                }
            }
            labels.insert(lname.trim().to_string(), val);
        }
    }
    let rest: String = chars[i..].iter().collect();
    let value_str = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value_str {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(ExpoSample {
        name,
        labels,
        value,
    })
}

/// Samples named `name` whose labels include every `(name, value)` in `labels`.
pub fn find_samples<'a>(
    samples: &'a [ExpoSample],
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a ExpoSample> {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

/// The single sample named `name` with `labels` (subset match); panics with the
/// exposition when there is none or more than one.
pub fn expo_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parse_exposition(text);
    let found = find_samples(&samples, name, labels);
    match found.as_slice() {
        [one] => one.value,
        [] => panic!("no sample {name}{labels:?} in export:\n{text}"),
        many => panic!(
            "{} samples {name}{labels:?} in export: {many:?}",
            many.len()
        ),
    }
}

// ---------------------------------------------------------------------------
// Report bodies
// ---------------------------------------------------------------------------

/// Builder for one item of a report's `metrics` array.
#[derive(Debug, Clone)]
pub struct MetricItem(pub Value);

impl MetricItem {
    /// An item with `metric_name`, `metric_type` and `metric_value`.
    pub fn new(name: &str, metric_type: &str, value: f64) -> Self {
        MetricItem(json!({"metric_name": name, "metric_type": metric_type, "metric_value": value}))
    }
    /// Adds a label.
    pub fn label(mut self, name: &str, value: &str) -> Self {
        if !self.0["labels"].is_object() {
            self.0["labels"] = json!({});
        }
        self.0["labels"][name] = json!(value);
        self
    }
    /// Sets `help_text`.
    pub fn help(mut self, help: &str) -> Self {
        self.0["help_text"] = json!(help);
        self
    }
    /// Sets `unit`.
    pub fn unit(mut self, unit: &str) -> Self {
        self.0["unit"] = json!(unit);
        self
    }
    /// Sets `timestamp` (any JSON string).
    pub fn at(mut self, timestamp: &str) -> Self {
        self.0["timestamp"] = json!(timestamp);
        self
    }
    /// Sets an arbitrary field (to build malformed items).
    pub fn field(mut self, key: &str, value: Value) -> Self {
        self.0[key] = value;
        self
    }
}

impl From<MetricItem> for Value {
    fn from(m: MetricItem) -> Value {
        m.0
    }
}

/// A gauge item.
pub fn gauge(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "gauge", value)
}
/// A counter item.
pub fn counter(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "counter", value)
}
/// A histogram observation.
pub fn histogram(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "histogram", value)
}
/// A summary observation.
pub fn summary(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "summary", value)
}

/// A report body for `component` (type `worker_pool`) with the given items.
pub fn report<I, M>(component: &str, metrics: I) -> Value
where
    I: IntoIterator<Item = M>,
    M: Into<Value>,
{
    json!({
        "component_name": component,
        "component_type": "worker_pool",
        "metrics": metrics.into_iter().map(Into::into).collect::<Vec<Value>>(),
    })
}

/// A unique name with `prefix`, valid as component, metric or label value.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The current time as RFC 3339 (UTC, `Z`, milliseconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp from a query response; panics with the value otherwise.
pub fn parse_ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("timestamp {s:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_are_parsed_and_unescaped() {
        let text = "# HELP x y\n# TYPE x gauge\nx{a=\"q\\\"b\\\\c\\nd\",b=\"ü\"} 1.5 1700000000\nx_total 3\nh_bucket{le=\"+Inf\"} +Inf\n# EOF\n";
        let s = parse_exposition(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].label("a"), Some("q\"b\\c\nd"));
        assert_eq!(s[0].label("b"), Some("ü"));
        assert_eq!(s[0].value, 1.5);
        assert_eq!(s[1].name, "x_total");
        assert!(s[2].value.is_infinite());
        assert_eq!(expo_value(text, "x", &[("b", "ü")]), 1.5);
    }

    #[test]
    fn exposition_checkers_reject_broken_input() {
        let good = "# HELP up_total Ups.\n# TYPE up_total counter\nup_total 1\n";
        assert_eq!(promtool_check(good), Ok(()));
        if Command::new("promtool").arg("--version").output().is_ok() {
            assert!(promtool_check("garbage{{ 1\n").is_err());
            assert!(
                promtool_check("# TYPE c counter\nc 1\n").is_err(),
                "lint problems count"
            );
        }
        let om = "# TYPE up counter\n# HELP up Ups.\nup_total 1\n# EOF\n";
        assert_eq!(openmetrics_check(om), Ok(()));
        let python_ok = Command::new("python3")
            .args(["-c", "import prometheus_client"])
            .output()
            .is_ok_and(|o| o.status.success());
        if python_ok {
            assert!(
                openmetrics_check("# TYPE up counter\nup_total 1\n").is_err(),
                "missing # EOF"
            );
            assert!(openmetrics_check("# TYPE h histogram\nh_bucket{le=\"1.0\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 1\n# EOF\n").is_err());
        }
    }

    #[test]
    fn database_urls_are_rewritten() {
        let u = with_database(
            "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            "vigil_x",
        );
        assert_eq!(
            u,
            "postgres://postgres@127.0.0.1:5432/vigil_x?sslmode=disable"
        );
        let u = with_host_port(&u, "127.0.0.1:6000".parse().expect("addr"));
        assert_eq!(
            u,
            "postgres://postgres@127.0.0.1:6000/vigil_x?sslmode=disable"
        );
    }
}

// ---------------------------------------------------------------------------
// Plugins: plugin directory, status helpers, a webhook receiver
// ---------------------------------------------------------------------------

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

/// One request a [`WebhookReceiver`] read completely.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// When its connection was accepted.
    pub accepted_at: Instant,
    /// When the request had been read completely.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer coding removed).
    pub body: Vec<u8>,
    /// The status the receiver answered (or was about to answer).
    pub status: u16,
}

impl ReceivedRequest {
    /// First header of that (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `samples` array of a webhook-publisher body.
    pub fn samples(&self) -> Vec<Value> {
        self.json()["samples"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `seq` of every sample in the body, in body order.
    pub fn seqs(&self) -> Vec<i64> {
        self.samples()
            .iter()
            .filter_map(|s| s["seq"].as_i64())
            .collect()
    }

    /// The `events` array of a webhook-publisher body.
    pub fn events(&self) -> Vec<Value> {
        self.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `seq` of every sample and every event in the body.
    pub fn all_seqs(&self) -> Vec<i64> {
        self.samples()
            .iter()
            .chain(self.events().iter())
            .filter_map(|s| s["seq"].as_i64())
            .collect()
    }
}

/// What a [`WebhookReceiver`] answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waited before the answer is written.
    pub delay: Duration,
}

impl Reply {
    /// `200 {}`.
    pub fn ok() -> Reply {
        Reply::status(200)
    }
    /// `<code> {}`.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            headers: Vec::new(),
            body: "{}".into(),
            delay: Duration::ZERO,
        }
    }
    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Sets a JSON body.
    pub fn json(mut self, body: &Value) -> Reply {
        self.body = body.to_string();
        self
    }
    /// Waits `d` before answering.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type ReplyFn = Box<dyn FnMut(&ReceivedRequest, usize) -> Reply + Send>;

/// A minimal HTTP/1.1 server on 127.0.0.1 standing in for a webhook: reads each
/// request (Content-Length or chunked body), records it, answers what the
/// handler says (default `200 {}`) and closes the connection. Runs on the
/// current tokio runtime; stops on drop.
pub struct WebhookReceiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    handler: Arc<Mutex<ReplyFn>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver that answers `200 {}` to everything.
    pub async fn start() -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let requests: Arc<Mutex<Vec<ReceivedRequest>>> = Arc::default();
        let handler: Arc<Mutex<ReplyFn>> = Arc::new(Mutex::new(Box::new(|_, _| Reply::ok())));
        let (reqs, h) = (requests.clone(), handler.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let accepted_at = Instant::now();
                let (reqs, h) = (reqs.clone(), h.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, accepted_at, reqs, h).await;
                });
            }
        });
        WebhookReceiver {
            addr,
            requests,
            handler,
            task,
        }
    }

    /// Replaces the handler; it gets the request and its 0-based index.
    pub fn set_handler(&self, f: impl FnMut(&ReceivedRequest, usize) -> Reply + Send + 'static) {
        *self.handler.lock().expect("handler") = Box::new(f);
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (for `allowed_hosts`).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request read so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().expect("requests").clone()
    }

    /// Number of requests read so far.
    pub fn count(&self) -> usize {
        self.requests.lock().expect("requests").len()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    accepted_at: Instant,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    handler: Arc<Mutex<ReplyFn>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let path = parts.next().ok_or_else(|| bad("no path"))?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(bad("eof in headers"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Err(bad("eof in chunk size"));
            }
            let size_text = line
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size_text, 16).map_err(|_| bad("chunk size"))?;
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0
                        || line.trim_end_matches(['\r', '\n']).is_empty()
                    {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await?;
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("content-length"))?;
        body.resize(len, 0);
        reader.read_exact(&mut body).await?;
    }
    let mut req = ReceivedRequest {
        accepted_at,
        at: Instant::now(),
        method,
        path,
        headers,
        body,
        status: 0,
    };
    let reply = {
        let mut reqs = requests.lock().expect("requests");
        let index = reqs.len();
        let reply = (handler.lock().expect("handler"))(&req, index);
        req.status = reply.status;
        reqs.push(req);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let stream = reader.get_mut();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(reply.body.as_bytes()).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// A task reporting gauge samples to `server` until stopped: every `interval`
/// one report of `per_report` samples of `name` for `component`, with values
/// counting up from 0. Returns the stop flag, the number of acknowledged
/// samples, and the task (which ends at the first failed request).
pub fn start_reporter(
    server: &TestServer,
    component: &str,
    name: &str,
    per_report: usize,
    interval: Duration,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let url = server.url("/api/v2/metrics/report");
    let (component, name) = (component.to_string(), name.to_string());
    let (s, a) = (stop.clone(), acked.clone());
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut n = 0usize;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !s.load(Ordering::SeqCst) {
            tick.tick().await;
            let body = report(
                &component,
                (0..per_report).map(|i| gauge(&name, (n + i) as f64)),
            );
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status() == 200 => {
                    n += per_report;
                    a.fetch_add(per_report, Ordering::SeqCst);
                }
                _ => return,
            }
        }
    });
    (stop, acked, task)
}
