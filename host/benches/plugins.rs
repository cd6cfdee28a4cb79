//! Plugin runtime benchmarks (issue: WebAssembly plugin runtime):
//! - crossing the boundary: a 1,000-sample batch (4 labels each) handed to the
//!   no-op publisher, per sample;
//! - instantiation with the pooling allocator;
//! - reload: file written to plugin serving and to the optimised tier, each
//!   round on a fresh host (engine, caches, directory, watcher), for (a) a
//!   cache miss whose code was compiled before (only a custom section
//!   differs), (b) a new version of the 2 MB `large-publisher` fixture with
//!   1.6 % of its functions changed (`LARGE_PUBLISHER_VARIANT=edit`), (c)
//!   never-seen code on empty caches (`LARGE_PUBLISHER_VARIANT=fresh` for the
//!   fixture), and going back to the known version (an artefact-cache hit);
//!   plus the 2 MB reload piece by piece;
//! - end to end: stored samples delivered through the no-op publisher, and
//!   the same loop compiled natively; then the same samples through the
//!   first-party `elasticsearch` publisher into a minimal in-process `_bulk`
//!   receiver, through `grafana-cloud` into a remote-write receiver that only
//!   answers 204, and (when `prometheus` is installed) into a real
//!   Prometheus's remote-write receiver; then Prometheus's own ceiling in the
//!   same run: the requests the plugin sent to the 204 sink, replayed by a
//!   native client into a fresh Prometheus (one and four in flight).
//!
//! `cargo bench -p vigil-host --bench plugins` (builds `plugins/` for
//! wasm32-wasip2 first if needed, and the fixture's variants into
//! `target/wasm-variants/`). `VIGIL_BENCH_RELOAD_ROUNDS` (default 5) sets the
//! rounds per reload case; `VIGIL_BENCH_SKIP_RELOAD=1` skips the reload cases.
//! The bench runs on mimalloc, as the `vigil` binary
//! does (the compilers allocate a lot; glibc's malloc made compiles up to 1.8×
//! slower).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_host::bus::{build_batch, DeliveryManager, DeliverySettings};
use vigil_host::metrics::model::MetricKind;
use vigil_host::plugins::bindings::types::Batch;
use vigil_host::plugins::{PluginEngine, PluginRegistry, Tier};
use vigil_host::store::{self, LogSample, NewSeries, SampleRow, SeriesRef, WriteBatch};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasm(name: &str, profile: &str) -> PathBuf {
    repo()
        .join("target/wasm/wasm32-wasip2")
        .join(profile)
        .join(format!("{}.wasm", name.replace('-', "_")))
}

fn build_plugins() {
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release"])
            .current_dir(repo().join("plugins"))
            .status()
            .expect("run cargo for plugins/");
    assert!(status.success(), "building plugins/ failed");
}

fn samples(n: usize, series: usize) -> Vec<LogSample> {
    (0..n)
        .map(|i| LogSample {
            seq: i as i64 + 1,
            series_id: (i % series) as i64 + 1,
            ts_ms: 1_700_000_000_000 + i as i64,
            value: i as f64 * 0.5,
            component: format!("worker-{}", i % 8),
            metric_name: format!("bench_metric_{}", i % 50),
            kind: MetricKind::Gauge,
            labels: format!(
                r#"{{"host":"node-{}","instance":"i-{}","region":"r{}","shard":"{}"}}"#,
                i % 100,
                i % series,
                i % 5,
                i % 16
            ),
        })
        .collect()
}

/// Appends a custom section: a valid component with other bytes (and sha).
fn with_custom_section(bytes: &[u8], tag: &str, padding: usize) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    let name = format!("vigil-bench-{tag}");
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name.as_bytes());
    payload.extend(std::iter::repeat_n(0u8, padding));
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend(payload);
    out
}

/// Writes a plugin file under a temporary name and renames it into place;
/// returns when it was renamed ("file written").
fn install(dir: &Path, name: &str, bytes: &[u8]) -> Instant {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write plugin");
    let written = Instant::now();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).expect("rename plugin");
    written
}

/// Time from `started` until `name` serves the content with that `sha`.
async fn wait_for_sha(
    registry: &PluginRegistry,
    name: &str,
    sha: &str,
    started: Instant,
) -> Duration {
    loop {
        if registry.get(name).is_some_and(|p| p.sha256 == sha) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "plugin never swapped"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn native_noop(batch: &Batch) -> f64 {
    // The no-op publisher's loop, compiled natively over the same columns.
    let c = &batch.samples;
    let text = |id: u32| {
        let (a, z) = (
            c.string_offsets[id as usize] as usize,
            c.string_offsets[id as usize + 1] as usize,
        );
        &c.strings[a..z]
    };
    let mut sum = 0.0;
    for j in 0..c.seqs.len() {
        let mut labels = 0;
        for k in c.label_starts[j]..c.label_starts[j + 1] {
            labels += text(c.label_ids[2 * k as usize]).len()
                + text(c.label_ids[2 * k as usize + 1]).len();
        }
        sum += c.values[j]
            + c.seqs[j] as f64
            + c.timestamps[j] as f64 * 1e-12
            + (text(c.components[j]).len() + text(c.names[j]).len() + labels) as f64
            + f64::from(c.kinds[j]);
    }
    std::hint::black_box(sum)
}

/// The `large-publisher` fixture's variants (see its build.rs), each built into
/// a target directory of its own so the tests' build stays as it is.
fn large_variant(variant: &str) -> Vec<u8> {
    let target = repo().join("target/wasm-variants").join(variant);
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "large-publisher",
                "--target-dir",
            ])
            .arg(&target)
            .env("LARGE_PUBLISHER_VARIANT", variant)
            .current_dir(repo().join("plugins"))
            .status()
            .expect("run cargo for plugins/");
    assert!(status.success(), "building the {variant} variant failed");
    std::fs::read(target.join("wasm32-wasip2/release/large_publisher.wasm")).expect("variant")
}

/// A plugin host of its own — engine, caches, directory, watcher — so that
/// every measured reload starts from caches holding exactly what it says.
struct Host {
    registry: Arc<PluginRegistry>,
    dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Host {
    async fn start(dir: PathBuf) -> Host {
        let _ = std::fs::remove_dir_all(&dir);
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugin dir");
        std::fs::write(
            plugins.join("swap.toml"),
            "[config]\nurl = \"http://127.0.0.1:9/x\"\n",
        )
        .expect("manifest");
        let engine = Arc::new(PluginEngine::new(Some(dir.join("cache"))).expect("engine"));
        let registry = Arc::new(PluginRegistry::new(engine, plugins));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(registry.clone().watch(stop_rx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        Host {
            registry,
            dir,
            stop,
            watcher,
        }
    }

    /// Writes `bytes` as `swap.wasm` (write and rename, as the README says)
    /// and times it to serving and to the optimised tier.
    async fn reload(&self, bytes: &[u8]) -> Reload {
        let sha = vigil_host::plugins::sha256_hex(bytes);
        assert!(
            self.registry.get("swap").is_none_or(|p| p.sha256 != sha),
            "that version is running already"
        );
        let written = install(self.registry.dir(), "swap", bytes);
        let serving = wait_for_sha(&self.registry, "swap", &sha, written).await;
        let plugin = self.registry.get("swap").expect("serving");
        let (tier, cache_hit) = (plugin.tier, plugin.cache_hit);
        loop {
            if self
                .registry
                .get("swap")
                .is_some_and(|p| p.sha256 == sha && p.tier == Tier::Optimized)
            {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(60),
                "never optimised"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let optimized = written.elapsed();
        // Let the artefact reach the cache before anything else is timed.
        let cwasm = |dir: &Path| {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                        .count()
                })
                .unwrap_or(0)
        };
        let before = Instant::now();
        while !cache_hit
            && cwasm(&self.dir.join("cache")) == 0
            && before.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Reload {
            serving,
            optimized,
            tier,
            cache_hit,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.watcher.await;
        drop(self.registry);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Reload {
    serving: Duration,
    optimized: Duration,
    tier: Tier,
    cache_hit: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `min / median / max` of durations, in ms.
fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{:.1} / {:.1} / {:.1} ms",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    )
}

/// One case: on a fresh host each round, optionally load `known` first (and
/// let Cranelift compile it), then time the reload to `target(round)`; then,
/// with a `known` version, time going back to it (an artefact-cache hit).
async fn reload_case(
    work: &Path,
    label: &str,
    known: Option<&[u8]>,
    target: &dyn Fn(usize) -> Vec<u8>,
    rounds: usize,
) {
    let (mut serving, mut optimized, mut hits) = (Vec::new(), Vec::new(), Vec::new());
    let mut tiers = Vec::new();
    for round in 0..rounds {
        let host = Host::start(work.join("reload-host")).await;
        if let Some(known) = known {
            host.reload(&with_custom_section(known, "known", 0)).await;
        }
        let r = host.reload(&target(round)).await;
        serving.push(r.serving);
        optimized.push(r.optimized);
        tiers.push(r.tier);
        if let Some(known) = known {
            let back = host.reload(&with_custom_section(known, "known", 0)).await;
            assert!(back.cache_hit, "going back was not a cache hit");
            hits.push(back.serving);
        }
        host.stop().await;
    }
    let on_winch = tiers.iter().filter(|t| **t == Tier::Baseline).count();
    println!(
        "  {label}: serving {} (min / median / max of {rounds}; served first by {}), optimised tier {}{}",
        spread(serving),
        match on_winch {
            0 => "Cranelift".to_string(),
            n if n == rounds => "Winch".to_string(),
            n => format!("Winch {n} times, Cranelift {} times", rounds - n),
        },
        spread(optimized),
        if hits.is_empty() {
            String::new()
        } else {
            format!("; back to the known version (cache hit) {}", spread(hits))
        }
    );
}

async fn reload_benchmarks(work: &Path) {
    let rounds: usize = std::env::var("VIGIL_BENCH_RELOAD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let large = std::fs::read(wasm("large-publisher", "release")).expect("large publisher");
    let large_edit = large_variant("edit");
    let large_fresh = large_variant("fresh");
    let mut sources = vec![
        (
            "webhook-publisher (release)",
            std::fs::read(wasm("webhook-publisher", "release")).expect("webhook"),
        ),
        ("large-publisher fixture (release)", large.clone()),
    ];
    if let Ok(debug) = std::fs::read(wasm("webhook-publisher", "debug")) {
        sources.push(("webhook-publisher (debug build)", debug));
    }
    // Warm the process (allocator, compile threads) as a running server is.
    let uncached = PluginEngine::with_tiers(None, false).expect("engine");
    let tiered = PluginEngine::with_tiers(None, true).expect("engine");
    tiered.compile(&large).expect("compile");

    // Where the time goes, for the 2 MB fixture, measured piece by piece.
    let file = work.join("large.wasm");
    std::fs::write(&file, &large).expect("write");
    let (mut read, mut sha, mut winch, mut load, mut warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let engine = Arc::new(PluginEngine::with_tiers(None, true).expect("engine"));
    let cached = PluginEngine::new(Some(work.join("pieces-cache"))).expect("engine");
    cached.compile_optimized(&large).expect("compile");
    for round in 0..rounds {
        let t = Instant::now();
        let bytes = tokio::fs::read(&file).await.expect("read");
        read.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(vigil_host::plugins::sha256_hex(&bytes));
        sha.push(t.elapsed());
        let t = Instant::now();
        let compiled = engine.compile(&bytes).expect("compile");
        winch.push(t.elapsed());
        let t = Instant::now();
        let plugin = vigil_host::plugins::Plugin::load(
            engine.clone(),
            "large",
            file.clone(),
            compiled,
            Default::default(),
        )
        .await
        .expect("load");
        load.push(t.elapsed());
        drop(plugin);
        // Same code, other bytes: every function is in Cranelift's cache.
        let other = with_custom_section(&bytes, &format!("pieces-{round}"), 0);
        let t = Instant::now();
        cached.compile_optimized(&other).expect("compile");
        warm.push(t.elapsed());
    }
    println!(
        "reload of the 2 MB fixture, piece by piece (min / median / max): watcher settle 25 ms; \
         read {}; sha256 {}; Winch compile {}; Plugin::load \
         (InstancePre, instantiate, describe, configure) {}; in the background, Cranelift with \
         every function in its incremental cache {}",
        spread(read),
        spread(sha),
        spread(winch),
        spread(load),
        spread(warm)
    );

    for (label, bytes) in &sources {
        let mut winch_alone = Vec::new();
        let mut cranelift_alone = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            tiered.compile(bytes).expect("compile");
            winch_alone.push(t.elapsed());
            let t = Instant::now();
            uncached.compile(bytes).expect("compile");
            cranelift_alone.push(t.elapsed());
        }
        println!(
            "reload {label}, {:.2} MB (compiling alone, no caches: Winch {}, Cranelift {}):",
            bytes.len() as f64 / 1e6,
            spread(winch_alone),
            spread(cranelift_alone)
        );
        reload_case(
            work,
            "(a) cache miss, code compiled before (only a custom section differs)",
            Some(bytes),
            &|round| with_custom_section(bytes, &format!("round-{round}"), 0),
            rounds,
        )
        .await;
        if label.starts_with("large") {
            reload_case(
                work,
                "(b) new version, 42 of 2,650 generated functions changed",
                Some(bytes),
                &|round| with_custom_section(&large_edit, &format!("round-{round}"), 0),
                rounds,
            )
            .await;
            reload_case(
                work,
                "(c) never-seen code (fresh variant, empty caches)",
                None,
                &|round| with_custom_section(&large_fresh, &format!("round-{round}"), 0),
                rounds,
            )
            .await;
        } else {
            reload_case(
                work,
                "(c) never-seen code (empty caches)",
                None,
                &|round| with_custom_section(bytes, &format!("round-{round}"), 0),
                rounds,
            )
            .await;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    build_plugins();
    let work = std::env::temp_dir().join(format!("vigil-bench-plugins-{}", std::process::id()));
    let plugin_dir = work.join("plugins");
    std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
    let engine = Arc::new(PluginEngine::new(Some(work.join("cache"))).expect("engine"));
    let registry = Arc::new(PluginRegistry::new(engine.clone(), plugin_dir.clone()));
    let noop_bytes = std::fs::read(wasm("noop-publisher", "release")).expect("noop wasm");
    install(&plugin_dir, "noop", &noop_bytes);
    registry.load_all().await.expect("load");
    // Measure the steady state: wait for the optimised tier.
    let noop = loop {
        let p = registry.get("noop").expect("noop loaded");
        if p.tier == vigil_host::plugins::Tier::Optimized {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // 1. Boundary crossing.
    let batch_1000 = build_batch(&samples(1000, 1000));
    let batch_1 = build_batch(&samples(1, 1));
    for _ in 0..200 {
        noop.publish(&batch_1000)
            .await
            .expect("call")
            .expect("accepted");
    }
    let calls = 2000;
    let t = Instant::now();
    for _ in 0..calls {
        noop.publish(&batch_1)
            .await
            .expect("call")
            .expect("accepted");
    }
    let per_call_1 = t.elapsed() / calls;
    let t = Instant::now();
    for _ in 0..calls {
        noop.publish(&batch_1000)
            .await
            .expect("call")
            .expect("accepted");
    }
    let per_call_1000 = t.elapsed() / calls;
    let t = Instant::now();
    for _ in 0..calls {
        native_noop(&batch_1000);
    }
    let native_1000 = t.elapsed() / calls;
    let per_sample = (per_call_1000.saturating_sub(per_call_1)).as_nanos() as f64 / 999.0;
    println!(
        "publish, 1,000 samples x 4 labels: {:.1} us per call, {:.1} ns per sample \
         (1-sample call {:.1} us; the guest's loop natively: {:.1} ns per sample)",
        per_call_1000.as_secs_f64() * 1e6,
        per_sample,
        per_call_1.as_secs_f64() * 1e6,
        native_1000.as_nanos() as f64 / 1000.0
    );

    // 2. Instantiation with pooling.
    let mut times = Vec::new();
    for _ in 0..500 {
        times.push(noop.time_instantiation().await.expect("instantiate"));
    }
    times.sort();
    println!(
        "instantiation (pooling): p50 {:.1} us, p99 {:.1} us",
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 99 / 100].as_secs_f64() * 1e6
    );

    // 3. Reload: file written -> plugin serving, through the watcher.
    if std::env::var_os("VIGIL_BENCH_SKIP_RELOAD").is_none() {
        reload_benchmarks(&work).await;
    }

    // 4. End to end: stored samples through the no-op publisher.
    let url = format!("sqlite://{}/bench.db", work.display());
    let store = store::open(&url).await.expect("store");
    let total = 200_000usize;
    let series = 1000;
    let mut first = WriteBatch::default();
    for s in 0..series {
        first.new_series.push(NewSeries {
            component: format!("worker-{}", s % 8),
            metric_name: format!("bench_metric_{}", s % 50),
            kind: MetricKind::Gauge,
            labels: format!(
                r#"{{"host":"node-{s}","instance":"i-{s}","region":"r{}","shard":"{}"}}"#,
                s % 5,
                s % 16
            ),
            help: String::new(),
            unit: String::new(),
        });
    }
    let ids = store.commit(&first).await.expect("series").new_ids;
    // The publisher starts at the head: open its cursor before the samples land.
    store.open_cursor("noop", 0, 0).await.expect("cursor");
    for chunk in 0..(total / 10_000) {
        let mut batch = WriteBatch::default();
        for i in 0..10_000 {
            let n = chunk * 10_000 + i;
            batch.samples.push(SampleRow {
                series: SeriesRef::Known(ids[n % series]),
                ts_ms: 1_700_000_000_000 + n as i64,
                value: n as f64,
            });
        }
        store.commit(&batch).await.expect("samples");
    }
    let head = store.max_seq().await.expect("head");
    let delivery = Arc::new(DeliveryManager::new(
        store.clone(),
        registry.clone(),
        DeliverySettings {
            max_wait: Duration::from_millis(1),
            ..DeliverySettings::default()
        },
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let run = tokio::spawn(delivery.clone().run(stop_rx));
    loop {
        let status = delivery.status().await.expect("status");
        if status
            .iter()
            .any(|p| p.name == "noop" && p.cursor_seq >= head)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wasm_elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let _ = run.await;
    // The same path with the publisher's loop compiled natively.
    let started = Instant::now();
    let mut cursor = 0;
    while cursor < head {
        let items = store.log_after(cursor, 1000).await.expect("log");
        let batch = build_batch(&items.samples);
        native_noop(&batch);
        cursor = items.last_seq().unwrap_or(head);
    }
    let native_elapsed = started.elapsed();
    let wasm_rate = total as f64 / wasm_elapsed.as_secs_f64();
    let native_rate = total as f64 / native_elapsed.as_secs_f64();
    println!(
        "end to end, {total} stored samples through the no-op publisher: {:.0} samples/s \
         (native loop on the same path: {:.0} samples/s; wasm/native = {:.2})",
        wasm_rate,
        native_rate,
        wasm_rate / native_rate
    );

    // 5. The same stored samples through the first-party publishers.
    let es = receiver(ReceiverKind::Bulk).await;
    let recorded: Recorded = Arc::default();
    let null_rw = receiver(ReceiverKind::NoContent(recorded.clone())).await;
    let mut cases = vec![
        (
            "elasticsearch",
            "elasticsearch",
            format!("hosts = [\"http://{es}\"]\nmanage_template = false\n"),
            es.to_string(),
        ),
        (
            "grafana_null",
            "grafana-cloud",
            format!("endpoint = \"http://{null_rw}/api/v1/write\"\n"),
            null_rw.to_string(),
        ),
    ];
    let prometheus = Prometheus::start(&work, "prometheus");
    if let Some(p) = &prometheus {
        cases.push((
            "grafana_prometheus",
            "grafana-cloud",
            format!("endpoint = \"http://{}/api/v1/write\"\n", p.addr),
            p.addr.clone(),
        ));
    } else {
        println!("end to end into Prometheus: skipped (`prometheus` is not installed)");
    }
    for (name, crate_name, config, origin) in cases {
        let elapsed = end_to_end(
            &work, &engine, &store, head, name, crate_name, &config, &origin,
        )
        .await;
        println!(
            "end to end, {total} stored samples through {crate_name} ({name}): {:.0} samples/s \
             ({:.2} x the no-op publisher's rate)",
            total as f64 / elapsed.as_secs_f64(),
            (total as f64 / elapsed.as_secs_f64()) / wasm_rate
        );
    }
    drop(prometheus);
    // 6. Prometheus's own ceiling in the same run: the very requests the
    // plugin sent to the 204 sink, replayed into a fresh Prometheus by a
    // native client, one request in flight as the publisher sends them (with
    // more in flight, requests overtake each other and Prometheus refuses
    // their samples as out of order).
    let bodies = std::mem::take(&mut *recorded.lock());
    let samples_sent = total as f64;
    match Prometheus::start(&work, "prometheus-replay") {
        Some(p) => {
            let elapsed = replay(&p.addr, &bodies).await;
            println!(
                "Prometheus alone, the plugin's {} requests replayed natively, one in flight: \
                 {:.0} samples/s",
                bodies.len(),
                samples_sent / elapsed.as_secs_f64()
            );
        }
        None => println!(
            "Prometheus's own remote-write ceiling: skipped (`prometheus` is not installed)"
        ),
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Sends `bodies` (remote-write requests as a publisher encoded them) to
/// Prometheus at `addr`, one after another; the time it took. Every answer
/// must be a 2xx.
async fn replay(addr: &str, bodies: &[bytes::Bytes]) -> Duration {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/write");
    let started = Instant::now();
    for body in bodies {
        let resp = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .body(body.clone())
            .send()
            .await
            .expect("replay request");
        assert!(
            resp.status().is_success(),
            "Prometheus answered {} to a replayed request",
            resp.status()
        );
    }
    started.elapsed()
}

/// Delivers every stored sample through plugin crate `crate_name` installed
/// as `name` (fresh directory and registry) with `config`; the time until
/// its cursor reached `head`.
#[allow(clippy::too_many_arguments)]
async fn end_to_end(
    work: &Path,
    engine: &Arc<PluginEngine>,
    store: &Arc<dyn store::Store>,
    head: i64,
    name: &str,
    crate_name: &str,
    config: &str,
    origin: &str,
) -> Duration {
    let dir = work.join(format!("plugins-{name}"));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("[capabilities]\nallowed_hosts = [\"http://{origin}\"]\ncall_timeout_ms = 60000\n[config]\n{config}"),
    )
    .expect("manifest");
    let bytes = std::fs::read(wasm(crate_name, "release")).expect("plugin wasm");
    install(&dir, name, &bytes);
    let registry = Arc::new(PluginRegistry::new(engine.clone(), dir));
    registry.load_all().await.expect("load");
    loop {
        match registry.get(name) {
            Some(p) if p.tier == Tier::Optimized => break,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    store.open_cursor(name, 0, 0).await.expect("cursor");
    let delivery = Arc::new(DeliveryManager::new(
        store.clone(),
        registry.clone(),
        DeliverySettings {
            max_wait: Duration::from_millis(1),
            ..DeliverySettings::default()
        },
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let run = tokio::spawn(delivery.clone().run(stop_rx));
    loop {
        let status = delivery.status().await.expect("status");
        let me = status.iter().find(|p| p.name == name);
        if me.is_some_and(|p| p.cursor_seq >= head) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{name} did not finish: {:?}",
            me.map(|p| (p.cursor_seq, p.last_error.clone()))
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    let _ = run.await;
    elapsed
}

/// Request bodies a receiver kept.
type Recorded = Arc<parking_lot::Mutex<Vec<bytes::Bytes>>>;

#[derive(Clone)]
enum ReceiverKind {
    /// `_bulk`: one `201` item per action line.
    Bulk,
    /// `204` to everything (a remote-write sink); keeps the bodies.
    NoContent(Recorded),
}

/// A minimal HTTP receiver on 127.0.0.1; its address.
async fn receiver(kind: ReceiverKind) -> String {
    use axum::body::Bytes;
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let kind = kind.clone();
        async move {
            match kind {
                ReceiverKind::Bulk => {
                    let actions = body
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .count()
                        / 2;
                    let mut out = String::with_capacity(actions * 28 + 40);
                    out.push_str("{\"took\":1,\"errors\":false,\"items\":[");
                    for i in 0..actions {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str("{\"create\":{\"status\":201}}");
                    }
                    out.push_str("]}");
                    ([("content-type", "application/json")], out).into_response()
                }
                ReceiverKind::NoContent(kept) => {
                    kept.lock().push(body);
                    axum::http::StatusCode::NO_CONTENT.into_response()
                }
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr.to_string()
}

/// A real Prometheus with its remote-write receiver, when installed.
struct Prometheus {
    child: std::process::Child,
    addr: String,
}

impl Prometheus {
    fn start(work: &Path, name: &str) -> Option<Prometheus> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(
            dir.join("prometheus.yml"),
            "global:\n  scrape_interval: 1m\n",
        )
        .ok()?;
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Ready once the TSDB is open; a few seconds is plenty on a fresh dir.
        std::thread::sleep(Duration::from_secs(3));
        Some(Prometheus { child, addr })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
