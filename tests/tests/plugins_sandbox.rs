//! Hostile and broken plugins never take the host down: a plugin that loops,
//! eats memory, panics, overflows its stack, calls forbidden hosts, reads files
//! or returns an enormous answer is contained, reported and (when it traps
//! repeatedly) quarantined, while the other publishers keep delivering and the
//! host stays healthy. Broken files, manifests and configurations are listed
//! as `failed` with a reason naming the problem; secrets never leak.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_tests::*;

const SAMPLES: usize = 60;

/// Polls `/api/v2/health` (must answer 200 within 500 ms) and `/api/v2/ready`
/// (must answer 200) in a loop until stopped; collects every violation.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl HealthProbe {
    fn start(server: &TestServer) -> HealthProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let (health, ready) = (server.url("/api/v2/health"), server.url("/api/v2/ready"));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .expect("client");
            let mut polls = 0;
            let mut problems = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let started = Instant::now();
                match client.get(&health).send().await {
                    Ok(r)
                        if r.status() == 200 && started.elapsed() < Duration::from_millis(500) => {}
                    Ok(r) => problems.push(format!(
                        "health answered {} after {:?}",
                        r.status(),
                        started.elapsed()
                    )),
                    Err(e) => {
                        problems.push(format!("health failed after {:?}: {e}", started.elapsed()))
                    }
                }
                match client.get(&ready).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => problems.push(format!(
                        "ready answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => problems.push(format!("ready failed: {e}")),
                }
                polls += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (polls, problems)
        });
        HealthProbe { stop, task }
    }

    /// Stops the loop and asserts it polled and saw no problem.
    async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let (polls, problems) = self.task.await.expect("probe task");
        assert!(polls >= 10, "the health probe only polled {polls} times");
        assert!(
            problems.is_empty(),
            "health/readiness misbehaved {} of {polls} times: {problems:#?}",
            problems.len()
        );
    }
}

/// Reports `SAMPLES` gauge samples in three reports.
async fn report_samples(server: &TestServer, component: &str) {
    for r in 0..3 {
        server
            .report_ok(&report(
                component,
                (0..SAMPLES / 3).map(|i| gauge("sandbox_value", (r * 100 + i) as f64)),
            ))
            .await;
    }
}

/// Starts a server on `dir` and waits until every publisher in `publishers` has
/// opened its cursor (so that samples reported afterwards are theirs).
async fn start_with_publishers(
    db: &TestDatabase,
    dir: &PluginDir,
    publishers: &[&str],
    tweak: impl FnOnce(TestServerBuilder) -> TestServerBuilder,
) -> TestServer {
    let server = tweak(TestServer::builder(db).plugin_dir(dir.path()))
        .start()
        .await;
    for name in publishers {
        server
            .wait_publisher(name, Duration::from_secs(20), "cursor opened", |_| true)
            .await;
    }
    server
}

fn text_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Installs `fixture` as `hostile` next to a noop publisher, reports samples and
/// checks: health/readiness stay up throughout, the hostile plugin ends
/// quarantined with `traps >= 5` and a `last_error` containing one of
/// `reasons`, the noop publisher delivers everything, readiness reports
/// `plugins.ok = false`. Returns the hostile plugin's final status.
async fn hostile_plugin_is_contained(
    fixture: &str,
    manifest: Option<&str>,
    reasons: &[&str],
) -> (Value, u64) {
    hostile_plugin_is_contained_by(fixture, manifest, reasons, "traps").await
}

/// [`hostile_plugin_is_contained`], counting the faults in `counter`
/// (`traps`, or `invalid_answers` for a plugin that lies in its answers).
async fn hostile_plugin_is_contained_by(
    fixture: &str,
    manifest: Option<&str>,
    reasons: &[&str],
    counter: &str,
) -> (Value, u64) {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install("noop", "noop-publisher");
    match manifest {
        Some(m) => dir.install_with_manifest("hostile", fixture, m),
        None => dir.install("hostile", fixture),
    }
    let server = start_with_publishers(&db, &dir, &["noop", "hostile"], |b| b).await;
    let probe = HealthProbe::start(&server);
    report_samples(&server, &unique("sandbox")).await;

    let hostile = server
        .wait_plugin("hostile", Duration::from_secs(60), "quarantined", |p| {
            p["state"] == "quarantined"
        })
        .await;
    assert!(
        hostile[counter].as_u64().unwrap_or(0) >= 5,
        "{fixture}: quarantined after fewer than 5 {counter}: {hostile:#}"
    );
    let last_error = text_of(&hostile["last_error"]);
    assert!(
        reasons.iter().any(|r| last_error.contains(r)),
        "{fixture}: last_error {last_error:?} names none of {reasons:?}"
    );

    let noop = server
        .wait_publisher(
            "noop",
            Duration::from_secs(30),
            "everything delivered",
            |p| p["delivered"] == SAMPLES && p["lag"] == 0,
        )
        .await;
    assert_eq!(noop["dead_lettered"], 0, "{noop:#}");
    let noop_plugin = server.plugin("noop").await.expect("noop listed");
    assert_eq!(noop_plugin["state"], "loaded", "{noop_plugin:#}");
    assert_eq!(noop_plugin["traps"], 0, "{noop_plugin:#}");

    // The hostile publisher has not delivered anything and says why.
    let publisher = server
        .publisher("hostile")
        .await
        .expect("hostile publisher");
    assert_eq!(publisher["delivered"], 0, "{publisher:#}");
    assert_eq!(publisher["lag"], SAMPLES, "{publisher:#}");
    assert!(
        publisher["last_error"].is_string(),
        "the publisher's last_error is empty: {publisher:#}"
    );

    let (status, ready) = status_json(server.get("/api/v2/ready").await).await;
    assert_eq!(status, 200, "{ready:#}");
    let plugins = &ready["checks"]["plugins"];
    assert_eq!(plugins["ok"], false, "{ready:#}");
    assert_eq!(plugins["critical"], false, "{ready:#}");
    assert_eq!(plugins["detail"]["quarantined"], 1, "{ready:#}");
    assert_eq!(ready["checks"]["database"]["ok"], true, "{ready:#}");

    let own = server
        .get("/api/v2/metrics")
        .await
        .text()
        .await
        .expect("own metrics");
    assert_eq!(
        expo_value(&own, "vigil_plugin_up", &[("plugin", "hostile")]),
        0.0,
        "the host's own metrics at /api/v2/metrics include the plugin families"
    );
    let export = server.export().await;
    assert_eq!(
        expo_value(&export, "vigil_plugin_up", &[("plugin", "hostile")]),
        0.0
    );
    assert_eq!(
        expo_value(&export, "vigil_plugin_up", &[("plugin", "noop")]),
        1.0
    );
    assert!(
        expo_value(
            &export,
            &format!("vigil_plugin_{counter}_total"),
            &[("plugin", "hostile")]
        ) >= 5.0
    );

    probe.finish().await;
    let peak = proc_status_bytes(server.pid().expect("pid"), "VmHWM").expect("VmHWM");
    (hostile, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_cut_at_the_call_time_limit_and_quarantined() {
    let (hostile, _) = hostile_plugin_is_contained(
        "infinite-loop",
        Some("[capabilities]\ncall_timeout_ms = 300\n"),
        &["time limit"],
    )
    .await;
    assert_eq!(hostile["call_timeout_ms"], 300, "{hostile:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_traps_at_its_memory_cap_and_is_quarantined() {
    let (hostile, _) = hostile_plugin_is_contained(
        "memory-bomb",
        Some("[capabilities]\nmemory_mb = 16\n"),
        &["memory cap of 16 MiB exceeded"],
    )
    .await;
    assert_eq!(hostile["memory_limit_mb"], 16, "{hostile:#}");
    assert!(
        hostile["memory_bytes"].as_u64().unwrap_or(0) <= 16 * 1024 * 1024,
        "{hostile:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_huge_allocation_is_explained_by_the_memory_cap() {
    for config in ["", "how = \"layout\"\nbytes = 2147418112\n"] {
        let manifest = format!("[capabilities]\nmemory_mb = 64\n[config]\n{config}");
        let (hostile, _) = hostile_plugin_is_contained(
            "big-alloc",
            Some(&manifest),
            &["memory cap of 64 MiB exceeded"],
        )
        .await;
        assert!(
            !text_of(&hostile["last_error"]).starts_with("wasm trap: wasm `unreachable`"),
            "{hostile:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_lies_in_its_report_is_counted_and_quarantined() {
    for (lie, reason) in [
        ("foreign", "was not in the batch"),
        ("duplicate", "more than once"),
        ("too-many", "rejections for a batch of"),
    ] {
        let manifest = format!("[config]\nlie = \"{lie}\"\n");
        let (hostile, _) = hostile_plugin_is_contained_by(
            "lying-publisher",
            Some(&manifest),
            &[reason],
            "invalid_answers",
        )
        .await;
        assert!(
            text_of(&hostile["last_error"]).starts_with("invalid answer"),
            "{lie}: {hostile:#}"
        );
        assert_eq!(
            hostile["traps"], 0,
            "{lie}: lies are not traps: {hostile:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_traps_and_is_quarantined() {
    // The trap is `unreachable`; the host adds what the plugin logged last.
    hostile_plugin_is_contained("panic-publisher", None, &["plugin panicked"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_overflow_traps_and_is_quarantined() {
    // Rust keeps its frames' buffers on a shadow stack in linear memory, which
    // runs out (and wraps below address 0) long before wasmtime's 1 MiB call
    // stack does: the trap is an out-of-bounds access, not Trap::StackOverflow.
    hostile_plugin_is_contained(
        "stack-overflow",
        None,
        &[
            "stack overflow",
            "call stack",
            "out of bounds memory access",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_a_quarantined_plugin_puts_it_back_to_loaded() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install("crashy", "panic-publisher");
    let server = start_with_publishers(&db, &dir, &["crashy"], |b| b).await;
    report_samples(&server, &unique("sandbox")).await;
    let before = server
        .wait_plugin("crashy", Duration::from_secs(60), "quarantined", |p| {
            p["state"] == "quarantined"
        })
        .await;

    let resp = server
        .post_json("/api/v2/plugins/crashy/reload", &json!({}))
        .await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(
        body["outcome"] == "replaced" || body["outcome"] == "loaded",
        "{body:#}"
    );
    assert_eq!(body["error"], Value::Null, "{body:#}");
    let plugin = &body["plugin"];
    assert_eq!(plugin["name"], "crashy", "{body:#}");
    assert_eq!(plugin["state"], "loaded", "{body:#}");
    assert_eq!(plugin["last_error"], Value::Null, "{body:#}");
    assert_eq!(plugin["traps"], 0, "{body:#}");
    assert_eq!(plugin["sha256"], before["sha256"], "{body:#}");

    let (status, ready) = status_json(server.get("/api/v2/ready").await).await;
    assert_eq!(status, 200, "{ready:#}");
    assert_eq!(
        ready["checks"]["plugins"]["detail"]["quarantined"], 0,
        "{ready:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_host_outside_the_allow_list_is_denied_and_counted() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install_with_manifest(
        "forbidden",
        "forbidden-host",
        "[capabilities]\nallowed_hosts = [\"http://127.0.0.1:1\"]\n",
    );
    let server = start_with_publishers(&db, &dir, &["forbidden"], |b| b).await;
    report_samples(&server, &unique("sandbox")).await;

    let publisher = server
        .wait_publisher(
            "forbidden",
            Duration::from_secs(30),
            "a delivery error",
            |p| p["last_error"].is_string(),
        )
        .await;
    let error = text_of(&publisher["last_error"]);
    assert!(
        error.starts_with("permanent:") && error.contains("denied"),
        "last_error does not report the denial: {publisher:#}"
    );
    assert!(error.contains("203.0.113.7"), "{publisher:#}");
    assert!(
        !error.contains("was allowed"),
        "the request went out: {publisher:#}"
    );
    assert!(publisher["lag"].as_i64().unwrap_or(0) > 0, "{publisher:#}");

    let plugin = server.plugin("forbidden").await.expect("listed");
    assert!(
        plugin["denied_requests"].as_u64().unwrap_or(0) >= 1,
        "{plugin:#}"
    );
    assert_eq!(
        plugin["state"], "loaded",
        "an error result is not a trap: {plugin:#}"
    );
    assert_eq!(plugin["traps"], 0, "{plugin:#}");
    assert_eq!(
        plugin["allowed_hosts"],
        json!(["http://127.0.0.1:1"]),
        "{plugin:#}"
    );

    let export = server.export().await;
    assert!(
        expo_value(
            &export,
            "vigil_plugin_denied_requests_total",
            &[("plugin", "forbidden")]
        ) >= 1.0
    );
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("outbound request denied"),
        "the denial is not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_read_host_files_and_its_error_is_not_a_trap() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install("reader", "file-reader");
    let server = start_with_publishers(&db, &dir, &["reader"], |b| b).await;
    report_samples(&server, &unique("sandbox")).await;

    let publisher = server
        .wait_publisher("reader", Duration::from_secs(30), "a delivery error", |p| {
            p["last_error"].is_string()
        })
        .await;
    let error = text_of(&publisher["last_error"]);
    assert!(
        !error.contains("SANDBOX ESCAPE"),
        "the plugin read a host file: {publisher:#}"
    );
    assert!(
        error.starts_with("permanent:") && error.contains("reading /etc/passwd failed"),
        "{publisher:#}"
    );
    assert_eq!(publisher["delivered"], 0, "{publisher:#}");
    assert!(publisher["lag"].as_i64().unwrap_or(0) > 0, "{publisher:#}");

    let plugin = server.plugin("reader").await.expect("listed");
    assert_eq!(plugin["state"], "loaded", "{plugin:#}");
    assert_eq!(plugin["traps"], 0, "{plugin:#}");
    assert!(plugin["errors"].as_u64().unwrap_or(0) >= 1, "{plugin:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_result_traps_without_exhausting_host_memory() {
    // A generous cap: the plugin builds about 256 MiB of rejection reasons and
    // returns them. What happens: wasmtime refuses to copy that much out of the
    // guest ("too much data is being copied between the host and the guest"),
    // the call traps, and after five such traps the plugin is quarantined.
    let (hostile, peak) = hostile_plugin_is_contained(
        "oversized-result",
        Some("[capabilities]\nmemory_mb = 256\ncall_timeout_ms = 30000\n"),
        &["too much data is being copied between the host and the guest"],
    )
    .await;
    eprintln!(
        "oversized-result: server peak RSS {} MiB; plugin {hostile:#}",
        peak >> 20
    );
    assert!(
        peak < 1024 * 1024 * 1024,
        "the server's peak RSS reached {} MiB",
        peak >> 20
    );
}

// ---------------------------------------------------------------------------
// Bad files, manifests and configurations
// ---------------------------------------------------------------------------

async fn failed_with(server: &TestServer, name: &str) -> String {
    let p = server
        .wait_plugin(name, Duration::from_secs(30), "listed as failed", |p| {
            p["state"] == "failed"
        })
        .await;
    assert_eq!(p["kind"], Value::Null, "{p:#}");
    assert_eq!(p["sha256"], Value::Null, "{p:#}");
    let error = text_of(&p["last_error"]);
    assert!(!error.is_empty(), "no last_error: {p:#}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_components_are_listed_as_failed_with_the_reason() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    dir.write_wasm("garbage", &noise);
    let noop = std::fs::read(plugins::plugin_wasm("noop-publisher")).expect("read");
    dir.write_wasm("truncated", &noop[..noop.len() / 2]);
    dir.install("good", "noop-publisher");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;

    let garbage = failed_with(&server, "garbage").await;
    assert!(
        garbage.contains("not a WebAssembly"),
        "garbage.wasm: {garbage:?}"
    );
    let truncated = failed_with(&server, "truncated").await;
    assert!(
        truncated.contains("not a valid WebAssembly component"),
        "truncated.wasm: {truncated:?}"
    );
    let good = server.plugin("good").await.expect("listed");
    assert_eq!(good["state"], "loaded", "{good:#}");

    // A file added while running is picked up and rejected the same way.
    dir.write_wasm("later", b"this is not wasm at all");
    let later = failed_with(&server, "later").await;
    assert!(later.contains("not a WebAssembly"), "later.wasm: {later:?}");

    let (status, ready) = status_json(server.get("/api/v2/ready").await).await;
    assert_eq!(status, 200, "{ready:#}");
    assert_eq!(ready["checks"]["plugins"]["ok"], false, "{ready:#}");
    assert_eq!(
        ready["checks"]["plugins"]["detail"]["failed"], 3,
        "{ready:#}"
    );
    assert_eq!(
        ready["checks"]["plugins"]["detail"]["loaded"], 1,
        "{ready:#}"
    );

    // A forced reload of a bad file answers 422 with the reason.
    let resp = server
        .post_json("/api/v2/plugins/garbage/reload", &json!({}))
        .await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(body["outcome"], "rejected", "{body:#}");
    assert!(
        text_of(&body["error"]).contains("not a WebAssembly"),
        "{body:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_and_configurations_fail_naming_the_key() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    // Unknown key in [capabilities].
    dir.install_with_manifest(
        "typo",
        "noop-publisher",
        "[capabilities]\nallowed_host = [\"http://127.0.0.1:9200\"]\n",
    );
    // Unknown top-level table.
    dir.install_with_manifest("extra", "noop-publisher", "[settings]\nx = 1\n");
    // A ${ENV} reference to a variable that is not set.
    dir.install_with_manifest(
        "noenv",
        "webhook-publisher",
        "[capabilities]\nallowed_hosts = [\"http://127.0.0.1:9\"]\n[config]\nurl = \"http://127.0.0.1:9/x\"\nbearer_token = \"${VIGIL_TEST_NEVER_SET_7F3A}\"\n",
    );
    // The webhook without its required url.
    dir.install_with_manifest(
        "nourl",
        "webhook-publisher",
        "[config]\ntimeout_ms = 1000\n",
    );
    // A config key the plugin does not know.
    dir.install_with_manifest(
        "unknownkey",
        "webhook-publisher",
        "[config]\nurl = \"http://127.0.0.1:9/x\"\nurll = \"http://127.0.0.1:9/y\"\n",
    );
    // Out-of-range capability.
    dir.install_with_manifest(
        "zeromem",
        "noop-publisher",
        "[capabilities]\nmemory_mb = 0\n",
    );
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;

    let typo = failed_with(&server, "typo").await;
    assert!(
        typo.contains("typo.toml") && typo.contains("allowed_host"),
        "typo: {typo:?}"
    );
    let extra = failed_with(&server, "extra").await;
    assert!(
        extra.contains("extra.toml") && extra.contains("settings"),
        "extra: {extra:?}"
    );
    let noenv = failed_with(&server, "noenv").await;
    assert!(
        noenv.contains("config.bearer_token") && noenv.contains("VIGIL_TEST_NEVER_SET_7F3A"),
        "noenv: {noenv:?}"
    );
    let nourl = failed_with(&server, "nourl").await;
    assert!(nourl.contains("config.url"), "nourl: {nourl:?}");
    let unknownkey = failed_with(&server, "unknownkey").await;
    assert!(
        unknownkey.contains("config.urll"),
        "unknownkey: {unknownkey:?}"
    );
    let zeromem = failed_with(&server, "zeromem").await;
    assert!(
        zeromem.contains("capabilities.memory_mb"),
        "zeromem: {zeromem:?}"
    );

    // None of them got a delivery loop.
    let publishers = server.publishers().await;
    assert!(publishers.is_empty(), "{publishers:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_the_manifest_of_a_failed_plugin_loads_it() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    // Rejected by the manifest parser (unknown key) ...
    dir.install_with_manifest("typo", "noop-publisher", "[capabilities]\nmemory = 16\n");
    // ... and by the plugin's config schema (missing url).
    dir.install_with_manifest(
        "nourl",
        "webhook-publisher",
        "[config]\ntimeout_ms = 1000\n",
    );
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    failed_with(&server, "typo").await;
    let nourl = failed_with(&server, "nourl").await;
    assert!(nourl.contains("config.url"), "nourl: {nourl:?}");

    dir.write_manifest("typo", "[capabilities]\nmemory_mb = 16\n");
    let fixed = server
        .wait_plugin("typo", Duration::from_secs(30), "loaded once fixed", |p| {
            p["state"] == "loaded"
        })
        .await;
    assert_eq!(fixed["memory_limit_mb"], 16, "{fixed:#}");

    // Only the manifest changes; the .wasm stays byte for byte the same.
    dir.write_manifest("nourl", "[config]\nurl = \"http://127.0.0.1:9/x\"\n");
    let fixed = server
        .wait_plugin("nourl", Duration::from_secs(30), "loaded once fixed", |p| {
            p["state"] == "loaded"
        })
        .await;
    assert_eq!(fixed["last_error"], Value::Null, "{fixed:#}");
    assert_eq!(fixed["kind"], "publisher", "{fixed:#}");
    assert_eq!(
        fixed["config"],
        json!({"url": "http://127.0.0.1:9/x"}),
        "{fixed:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_the_environment_are_redacted_and_never_logged() {
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install_with_manifest(
        "hook",
        "webhook-publisher",
        &format!(
            "[capabilities]\nallowed_hosts = [\"{}\"]\n[config]\nurl = \"{}\"\nbearer_token = \"${{VIGIL_TEST_SECRET}}\"\n",
            receiver.origin(),
            receiver.url("/ingest")
        ),
    );
    let server = start_with_publishers(&db, &dir, &["hook"], |b| {
        b.env("VIGIL_TEST_SECRET", &secret)
    })
    .await;
    report_samples(&server, &unique("sandbox")).await;
    server
        .wait_publisher(
            "hook",
            Duration::from_secs(30),
            "everything delivered",
            |p| p["delivered"] == SAMPLES && p["lag"] == 0,
        )
        .await;
    // The plugin got the secret: the receiver saw it.
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );

    let resp = server.get("/api/v2/plugins").await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200);
    let hook = body["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "hook"))
        .cloned()
        .expect("hook listed");
    assert_eq!(hook["config"]["bearer_token"], "***", "{hook:#}");
    assert_eq!(hook["config"]["url"], receiver.url("/ingest"), "{hook:#}");

    let reload = server
        .post_json("/api/v2/plugins/hook/reload", &json!({}))
        .await;
    let (status, reload) = status_json(reload).await;
    assert_eq!(status, 200, "{reload:#}");
    assert_eq!(
        reload["plugin"]["config"]["bearer_token"], "***",
        "{reload:#}"
    );

    let mut bodies = vec![body.to_string(), reload.to_string()];
    for path in [
        "/api/v2/publishers",
        "/api/metrics/prometheus",
        "/api/v2/ready",
        "/api/v2/openapi.json",
    ] {
        bodies.push(server.get(path).await.text().await.expect("body"));
    }
    for b in &bodies {
        assert!(
            !b.contains(&secret),
            "the secret leaked into a response: {b}"
        );
    }
    let logs = server.logs();
    assert!(!logs.is_empty());
    for line in &logs {
        assert!(
            !line.contains(&secret),
            "the secret leaked into the logs: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_route_rejects_bad_names_and_unknown_plugins() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install("noop", "noop-publisher");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    for bad in ["Bad!", "UPPER", "dot.ted", "a%20b"] {
        let resp = server
            .post_json(&format!("/api/v2/plugins/{bad}/reload"), &json!({}))
            .await;
        expect_error(resp, 400, "invalid_request").await;
    }
    let resp = server
        .post_json("/api/v2/plugins/nosuchplugin/reload", &json!({}))
        .await;
    expect_error(resp, 404, "not_found").await;

    // A plugin that is running and unchanged reloads fine.
    let resp = server
        .post_json("/api/v2/plugins/noop/reload", &json!({}))
        .await;
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["plugin"]["state"], "loaded", "{body:#}");
}
