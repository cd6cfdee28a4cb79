//! Hot reload under a steady stream of reports: publishers are added, replaced
//! (new manifest, other component), given a broken file, removed and re-added
//! while samples keep arriving; the webhook publisher that stays loses and
//! duplicates nothing, and the swapped one resumes from its kept cursor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(30);

fn webhook_manifest(receiver: &WebhookReceiver, path: &str, extra: &str) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{}\"]\n[config]\nurl = \"{}\"\n{extra}",
        receiver.origin(),
        receiver.url(path)
    )
}

/// The publisher's status as first seen, polled every 10 ms from the moment
/// its plugin is installed; asserts nothing had been delivered yet, so that
/// `cursor_seq` is where it started.
async fn first_sighting(server: &TestServer, name: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(p) = server.publisher(name).await {
            assert!(
                p["delivered"] == 0 && p["dead_lettered"] == 0,
                "publisher {name} delivered before it was first seen; its start is unknown: {p:#}"
            );
            return p;
        }
        assert!(Instant::now() < deadline, "publisher {name} never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn requests_to(receiver: &WebhookReceiver, path: &str) -> Vec<ReceivedRequest> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

async fn delivered(server: &TestServer, name: &str) -> i64 {
    server
        .publisher(name)
        .await
        .and_then(|p| p["delivered"].as_i64())
        .unwrap_or(0)
}

/// Waits until publisher `name` has delivered at least `more` samples beyond now.
async fn wait_delivered_more(server: &TestServer, name: &str, more: i64, what: &str) {
    let target = delivered(server, name).await + more;
    server
        .wait_publisher(name, WAIT, what, |p| {
            p["delivered"].as_i64().unwrap_or(0) >= target
        })
        .await;
}

/// Seqs received more than once.
fn duplicates(seqs: &[i64]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for s in seqs {
        *counts.entry(*s).or_insert(0usize) += 1;
    }
    counts.retain(|_, n| *n > 1);
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_added_replaced_and_removed_under_a_steady_stream_without_loss() {
    let receiver = WebhookReceiver::start().await;
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    let component = unique("reload");
    let (stop, acked, reporter) = start_reporter(
        &server,
        &component,
        "reload_value",
        10,
        Duration::from_millis(50),
    );
    let webhook_sha = plugin_sha256("webhook-publisher");
    let noop_sha = plugin_sha256("noop-publisher");

    // --- add the webhook publisher `hook` while samples flow ---------------
    poll_until(WAIT, "the first reports", || {
        let n = acked.load(Ordering::SeqCst);
        async move { (n >= 50).then_some(()) }
    })
    .await;
    dir.install_with_manifest(
        "hook",
        "webhook-publisher",
        &webhook_manifest(&receiver, "/hook", ""),
    );
    let hook_start = first_sighting(&server, "hook").await["cursor_seq"]
        .as_i64()
        .expect("cursor_seq");
    assert!(
        hook_start > 0,
        "a new publisher starts at the head of the log"
    );
    wait_delivered_more(&server, "hook", 100, "hook delivering").await;

    // --- replace `hook` by a new manifest (same wasm) ----------------------
    let before = server.plugin("hook").await.expect("hook listed");
    dir.write_manifest(
        "hook",
        &webhook_manifest(&receiver, "/hook", "timeout_ms = 5000\n"),
    );
    let after = server
        .wait_plugin("hook", WAIT, "the new manifest in effect", |p| {
            p["config"]["timeout_ms"] == 5000
        })
        .await;
    assert_eq!(after["state"], "loaded", "{after:#}");
    assert_eq!(after["sha256"], before["sha256"], "{after:#}");
    assert_eq!(after["last_error"], Value::Null, "{after:#}");
    wait_delivered_more(
        &server,
        "hook",
        100,
        "hook delivering after its replacement",
    )
    .await;

    // --- a second publisher `swap`: webhook → noop → webhook ---------------
    dir.install_with_manifest(
        "swap",
        "webhook-publisher",
        &webhook_manifest(&receiver, "/swap", ""),
    );
    first_sighting(&server, "swap").await;
    poll_until(WAIT, "swap posting to the receiver", || {
        let n = requests_to(&receiver, "/swap").len();
        async move { (n >= 2).then_some(()) }
    })
    .await;

    dir.install("swap", "noop-publisher");
    let noop = server
        .wait_plugin("swap", WAIT, "the noop version in place", |p| {
            p["sha256"] == noop_sha.as_str()
        })
        .await;
    assert_eq!(noop["state"], "loaded", "{noop:#}");
    assert_eq!(noop["last_error"], Value::Null, "{noop:#}");
    let posted_before_noop = requests_to(&receiver, "/swap").len();
    // Several batches go to the noop version; at most the batch that was in
    // flight during the swap still reaches the webhook.
    wait_delivered_more(&server, "swap", 150, "swap delivering through noop").await;
    let posted_during_noop = requests_to(&receiver, "/swap").len();
    assert!(
        posted_during_noop <= posted_before_noop + 1,
        "the replaced webhook version kept posting: {posted_before_noop} → {posted_during_noop}"
    );

    dir.install("swap", "webhook-publisher");
    server
        .wait_plugin("swap", WAIT, "the webhook version back", |p| {
            p["sha256"] == webhook_sha.as_str()
        })
        .await;
    poll_until(WAIT, "swap posting again", || {
        let n = requests_to(&receiver, "/swap").len();
        async move { (n >= posted_during_noop + 2).then_some(()) }
    })
    .await;

    // --- a bad replacement leaves the old version running ------------------
    std::fs::write(
        dir.wasm_path("swap"),
        b"\x00asm garbage that is no component",
    )
    .expect("write garbage");
    let rejected = server
        .wait_plugin("swap", WAIT, "the garbage version rejected", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("new version rejected"))
        })
        .await;
    assert_eq!(rejected["state"], "loaded", "{rejected:#}");
    assert_eq!(rejected["sha256"], webhook_sha.as_str(), "{rejected:#}");
    assert!(
        rejected["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("WebAssembly")),
        "{rejected:#}"
    );
    let posted = requests_to(&receiver, "/swap").len();
    poll_until(WAIT, "swap still posting with the old version", || {
        let n = requests_to(&receiver, "/swap").len();
        async move { (n >= posted + 2).then_some(()) }
    })
    .await;
    let (status, ready) = status_json(server.get("/api/v2/ready").await).await;
    assert_eq!(status, 200, "{ready:#}");
    assert_eq!(
        ready["checks"]["plugins"]["detail"]["loaded"], 2,
        "{ready:#}"
    );

    // Restoring the good file (see also
    // `restoring_the_running_version_after_a_bad_replacement_clears_the_error`).
    dir.install("swap", "webhook-publisher");
    let posted = requests_to(&receiver, "/swap").len();
    poll_until(WAIT, "swap posting after the restore", || {
        let n = requests_to(&receiver, "/swap").len();
        async move { (n > posted).then_some(()) }
    })
    .await;

    // --- remove `swap`: it disappears, its delivery stops ------------------
    dir.remove("swap");
    server
        .wait_publisher("swap", WAIT, "removed", |p| p["state"] == "removed")
        .await;
    poll_until(WAIT, "swap's delivery loop to end", || {
        let gone = server.logs().iter().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            v["fields"]["message"] == "publisher gone; cursor kept"
                && v["fields"]["publisher"] == "swap"
        });
        async move { gone.then_some(()) }
    })
    .await;
    assert!(
        server.plugin("swap").await.is_none(),
        "a removed plugin is still listed: {:#?}",
        server.plugins().await
    );
    let removed = server.publisher("swap").await.expect("cursor kept");
    let kept_cursor = removed["cursor_seq"].as_i64().expect("cursor_seq");
    let posted_at_removal = requests_to(&receiver, "/swap").len();
    wait_delivered_more(&server, "hook", 200, "hook delivering while swap is gone").await;
    let still = server.publisher("swap").await.expect("cursor kept");
    assert_eq!(
        still["cursor_seq"], kept_cursor,
        "a removed publisher advanced: {still:#}"
    );
    assert!(
        still["lag"].as_i64().unwrap_or(0) > removed["lag"].as_i64().unwrap_or(0),
        "samples kept arriving, the removed publisher's lag grows: {removed:#} → {still:#}"
    );
    assert_eq!(
        requests_to(&receiver, "/swap").len(),
        posted_at_removal,
        "a removed publisher posted"
    );

    // --- re-adding resumes from the kept cursor ----------------------------
    dir.install("swap", "webhook-publisher");
    poll_until(WAIT, "swap posting after re-adding", || {
        let n = requests_to(&receiver, "/swap").len();
        async move { (n > posted_at_removal).then_some(()) }
    })
    .await;

    // --- drain and check ----------------------------------------------------
    stop.store(true, Ordering::SeqCst);
    reporter.await.expect("reporter");
    let acked = acked.load(Ordering::SeqCst);
    for name in ["hook", "swap"] {
        server
            .wait_publisher(name, Duration::from_secs(60), "lag 0", |p| p["lag"] == 0)
            .await;
    }
    let stored: Vec<i64> = server
        .query_all(&[("component_name", component.as_str()), ("limit", "10000")])
        .await
        .iter()
        .map(|s| s["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(stored.len(), acked, "every acknowledged sample is stored");

    // hook: every sample stored after its start, exactly once.
    let hook_seqs: Vec<i64> = requests_to(&receiver, "/hook")
        .iter()
        .flat_map(|r| r.seqs())
        .collect();
    let dups = duplicates(&hook_seqs);
    assert!(dups.is_empty(), "hook delivered seqs twice: {dups:?}");
    let expected: BTreeSet<i64> = stored.iter().copied().filter(|s| *s > hook_start).collect();
    let got: BTreeSet<i64> = hook_seqs.iter().copied().collect();
    let missing: Vec<_> = expected.difference(&got).take(20).collect();
    let extra: Vec<_> = got.difference(&expected).take(20).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "hook: {} expected, {} received; missing {missing:?}, unexpected {extra:?}",
        expected.len(),
        got.len()
    );
    let hook = server.publisher("hook").await.expect("hook");
    assert_eq!(hook["delivered"], expected.len(), "{hook:#}");
    assert_eq!(hook["dead_lettered"], 0, "{hook:#}");
    assert_eq!(hook["last_error"], Value::Null, "{hook:#}");

    // swap: never twice, and after re-adding exactly what followed the kept cursor.
    let swap_requests = requests_to(&receiver, "/swap");
    let swap_seqs: Vec<i64> = swap_requests.iter().flat_map(|r| r.seqs()).collect();
    let dups = duplicates(&swap_seqs);
    assert!(dups.is_empty(), "swap delivered seqs twice: {dups:?}");
    let readded: Vec<i64> = swap_requests[posted_at_removal..]
        .iter()
        .flat_map(|r| r.seqs())
        .collect();
    let expected: Vec<i64> = stored
        .iter()
        .copied()
        .filter(|s| *s > kept_cursor)
        .collect();
    assert_eq!(
        readded.first(),
        expected.first(),
        "re-adding did not resume right after the kept cursor {kept_cursor}"
    );
    assert_eq!(
        readded.iter().copied().collect::<BTreeSet<_>>(),
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "swap after re-adding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_the_running_version_after_a_bad_replacement_clears_the_error() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install("swap", "noop-publisher");
    let server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    let good = server
        .wait_plugin("swap", WAIT, "loaded", |p| p["state"] == "loaded")
        .await;
    dir.write_wasm("swap", b"not a component");
    server
        .wait_plugin("swap", WAIT, "the bad version rejected", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("new version rejected"))
        })
        .await;

    // Put the file that is running back: disk and running version agree again.
    dir.install("swap", "noop-publisher");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = server.plugin("swap").await.expect("swap listed");
        assert_eq!(p["sha256"], good["sha256"], "{p:#}");
        assert_eq!(p["state"], "loaded", "{p:#}");
        if p["last_error"].is_null() {
            break;
        }
        if Instant::now() > deadline {
            let resp = server
                .post_json("/api/v2/plugins/swap/reload", &json!({}))
                .await;
            let (status, forced) = status_json(resp).await;
            panic!(
                "10 s after the good file was restored the plugin still reports the rejected \
                 version:\n{p:#}\n(a forced reload then answered {status}: last_error {})",
                forced["plugin"]["last_error"]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plugin first serves from the fast baseline tier, moves to the optimised
/// tier in the background keeping its counters, and after a restart starts
/// optimised straight from the compile cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_serves_from_the_baseline_tier_then_moves_to_the_optimised_one() {
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install("tiered", "noop-publisher");
    let mut server = TestServer::builder(&db)
        .plugin_dir(dir.path())
        .start()
        .await;
    let first = server
        .wait_plugin("tiered", Duration::from_secs(10), "loaded", |p| {
            p["state"] == "loaded"
        })
        .await;
    assert!(
        first["tier"] == "baseline" || first["tier"] == "optimized",
        "{first:#}"
    );
    let optimized = server
        .wait_plugin("tiered", Duration::from_secs(60), "optimised tier", |p| {
            p["tier"] == "optimized"
        })
        .await;
    assert_eq!(optimized["sha256"], first["sha256"]);
    // Counters survive the change of tier.
    server
        .report_ok(&report(&unique("tier"), [gauge("tier_gauge", 1.0)]))
        .await;
    let delivered = server
        .wait_plugin("tiered", Duration::from_secs(20), "a call", |p| {
            p["calls"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    assert_eq!(delivered["tier"], "optimized");
    server.terminate().await;
    server.restart().await;
    let again = server
        .wait_plugin("tiered", Duration::from_secs(10), "loaded", |p| {
            p["state"] == "loaded"
        })
        .await;
    assert_eq!(
        again["tier"], "optimized",
        "a restart should hit the compile cache: {again:#}"
    );
}
