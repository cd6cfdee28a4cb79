//! Plugin runtime benchmarks (issue: WebAssembly plugin runtime):
//! - crossing the boundary: a 1,000-sample batch (4 labels each) handed to the
//!   no-op publisher, per sample;
//! - instantiation with the pooling allocator;
//! - reload: file written to plugin serving, on a cache miss and a cache hit;
//! - end to end: stored samples delivered through the no-op publisher, and
//!   the same loop compiled natively.
//!
//! `cargo bench -p vigil-host --bench plugins` (builds `plugins/` for
//! wasm32-wasip2 first if needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_host::bus::{build_batch, DeliveryManager, DeliverySettings};
use vigil_host::metrics::model::MetricKind;
use vigil_host::plugins::bindings::types::Batch;
use vigil_host::plugins::{PluginEngine, PluginRegistry};
use vigil_host::store::{self, LogSample, NewSeries, SampleRow, SeriesRef, WriteBatch};

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

fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write plugin");
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).expect("rename plugin");
}

async fn wait_for_sha(registry: &PluginRegistry, name: &str, sha: &str) -> Duration {
    let started = Instant::now();
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(registry.clone().watch(stop_rx.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sources = vec![
        (
            "webhook-publisher (release)",
            std::fs::read(wasm("webhook-publisher", "release")).expect("webhook"),
        ),
        (
            "large-publisher fixture (release)",
            std::fs::read(wasm("large-publisher", "release")).expect("large publisher"),
        ),
    ];
    if let Ok(debug) = std::fs::read(wasm("webhook-publisher", "debug")) {
        sources.push(("webhook-publisher (debug build)", debug));
    }
    std::fs::write(
        plugin_dir.join("swap.toml"),
        "[config]\nurl = \"http://127.0.0.1:9/x\"\n",
    )
    .expect("manifest");
    let uncached = PluginEngine::with_tiers(None, false).expect("engine");
    let baseline_only = PluginEngine::with_tiers(None, true).expect("engine");
    for (label, bytes) in sources {
        let t = Instant::now();
        uncached.compile(&bytes).expect("compile");
        let compile_only = t.elapsed();
        let t = Instant::now();
        baseline_only.compile(&bytes).expect("compile");
        let winch_only = t.elapsed();
        let mut miss = Vec::new();
        let mut hit = Vec::new();
        let mut optimized = Vec::new();
        for round in 0..5 {
            let fresh = with_custom_section(&bytes, &format!("{label}-{round}"), 0);
            let sha = vigil_host::plugins::sha256_hex(&fresh);
            let written = Instant::now();
            install(&plugin_dir, "swap", &fresh);
            miss.push(wait_for_sha(&registry, "swap", &sha).await);
            while registry
                .get("swap")
                .is_some_and(|p| p.tier != vigil_host::plugins::Tier::Optimized)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            optimized.push(written.elapsed());
            // Back to a version compiled before: a cache hit.
            let again = with_custom_section(&bytes, &format!("{label}-0"), 0);
            let sha_again = vigil_host::plugins::sha256_hex(&again);
            if round > 0 {
                install(&plugin_dir, "swap", &again);
                hit.push(wait_for_sha(&registry, "swap", &sha_again).await);
            }
        }
        miss.sort();
        hit.sort();
        optimized.sort();
        println!(
            "reload {label}, {:.2} MB: cache miss median {:.0} ms to serving (baseline tier), {:.0} ms to the optimised tier \
             (compiling alone: Winch {:.0} ms, Cranelift {:.0} ms); cache hit median {:.0} ms (file written to serving, incl. the watcher's 25 ms settle)",
            bytes.len() as f64 / 1e6,
            miss[miss.len() / 2].as_secs_f64() * 1e3,
            optimized[optimized.len() / 2].as_secs_f64() * 1e3,
            winch_only.as_secs_f64() * 1e3,
            compile_only.as_secs_f64() * 1e3,
            hit[hit.len() / 2].as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_file(plugin_dir.join("swap.wasm"));
    let _ = stop_tx.send(true);
    let _ = watcher.await;

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
    let _ = std::fs::remove_dir_all(&work);
}
