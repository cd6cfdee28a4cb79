//! A 200 on ingest means committed: acknowledged samples survive SIGKILL and
//! SIGTERM, over SQLite and PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_tests::*;

const WRITERS: usize = 8;
const ITEMS_PER_REPORT: usize = 10;

/// What the writers sent: per writer, the values of acknowledged reports and of
/// reports whose outcome is unknown (connection died).
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<usize, Vec<f64>>,
    unknown: BTreeMap<usize, Vec<f64>>,
}

/// Starts `WRITERS` tasks that each send reports of `ITEMS_PER_REPORT` gauge
/// samples with increasing values until a request fails (or `max_reports`).
/// Component `<prefix>-<writer>`, series `durable_value{writer}`.
fn start_writers(
    server: &TestServer,
    prefix: &str,
    max_reports: usize,
) -> (
    Arc<AtomicUsize>,
    Arc<Mutex<Ledger>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let acked = Arc::new(AtomicUsize::new(0));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let url = server.url("/api/v2/metrics/report");
    let handles = (0..WRITERS)
        .map(|w| {
            let (acked, ledger, url) = (acked.clone(), ledger.clone(), url.clone());
            let comp = format!("{prefix}-{w}");
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client");
                for r in 0..max_reports {
                    let vals: Vec<f64> = (0..ITEMS_PER_REPORT)
                        .map(|i| (r * ITEMS_PER_REPORT + i) as f64)
                        .collect();
                    let body = report(
                        &comp,
                        vals.iter().map(|v| {
                            gauge("durable_value", *v)
                                .label("writer", &w.to_string())
                                .help("h")
                        }),
                    );
                    let result = client.post(&url).json(&body).send().await;
                    let ok = match result {
                        Ok(resp) if resp.status() == 200 => {
                            let json: Value = resp.json().await.unwrap_or(Value::Null);
                            assert_eq!(json["accepted"], ITEMS_PER_REPORT, "{json}");
                            true
                        }
                        Ok(resp) if resp.status().is_server_error() => false,
                        Ok(resp) => panic!(
                            "unexpected {} for a good report: {:?}",
                            resp.status(),
                            resp.text().await
                        ),
                        Err(_) => false,
                    };
                    let mut l = ledger.lock().expect("ledger");
                    if ok {
                        l.acked.entry(w).or_default().extend(vals);
                        drop(l);
                        acked.fetch_add(1, Ordering::SeqCst);
                    } else {
                        l.unknown.entry(w).or_default().extend(vals);
                        return;
                    }
                }
            })
        })
        .collect();
    (acked, ledger, handles)
}

/// After a restart: every acknowledged value is stored exactly once, nothing
/// that was never sent is stored, and the export shows each series' last
/// stored value.
async fn check_ledger(server: &TestServer, prefix: &str, ledger: &Ledger) {
    let stored = server
        .query_all(&[("metric_name", "durable_value"), ("limit", "10000")])
        .await;
    let mut total_acked = 0;
    let text = server.export().await;
    for w in 0..WRITERS {
        let comp = format!("{prefix}-{w}");
        let mine: Vec<&Value> = stored
            .iter()
            .filter(|s| s["component_name"] == comp.as_str())
            .collect();
        let vals: Vec<f64> = mine
            .iter()
            .map(|s| s["metric_value"].as_f64().expect("value"))
            .collect();
        let set: BTreeSet<u64> = vals.iter().map(|v| *v as u64).collect();
        assert_eq!(set.len(), vals.len(), "writer {w}: duplicated samples");
        let acked = ledger.acked.get(&w).cloned().unwrap_or_default();
        let unknown = ledger.unknown.get(&w).cloned().unwrap_or_default();
        total_acked += acked.len();
        for v in &acked {
            assert!(
                set.contains(&(*v as u64)),
                "writer {w}: acknowledged value {v} lost ({} of {} stored)",
                set.len(),
                acked.len()
            );
        }
        for v in &vals {
            assert!(
                acked.contains(v) || unknown.contains(v),
                "writer {w}: stored value {v} was never sent"
            );
        }
        // A report is atomic: the unknown one is stored whole or not at all.
        let unknown_stored = unknown
            .iter()
            .filter(|v| set.contains(&(**v as u64)))
            .count();
        assert!(
            unknown_stored == 0 || unknown_stored == unknown.len(),
            "writer {w}: a report was half stored"
        );
        if let Some(last) = mine.iter().max_by_key(|s| s["seq"].as_i64().expect("seq")) {
            let exported = expo_value(&text, "durable_value", &[("component", &comp)]);
            assert_eq!(
                Some(exported),
                last["metric_value"].as_f64(),
                "writer {w}: export is not the last stored value"
            );
        }
    }
    assert!(
        stored.len() >= total_acked,
        "stored {} < acknowledged {total_acked}",
        stored.len()
    );
}

async fn acknowledged_samples_survive_sigkill(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let mut server = TestServer::start(&db).await;
    let prefix = unique("crash");
    let (acked, ledger, handles) = start_writers(&server, &prefix, 10_000);
    poll_until(Duration::from_secs(120), "200 acknowledged reports", || {
        let n = acked.load(Ordering::SeqCst);
        async move { (n >= 200).then_some(()) }
    })
    .await;
    server.kill();
    for h in handles {
        h.await.expect("writer task");
    }
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let total: usize = ledger.acked.values().map(Vec::len).sum();
    assert!(total >= 200 * ITEMS_PER_REPORT);
    server.restart().await;
    check_ledger(&server, &prefix, &ledger).await;
}

async fn sigterm_exits_zero_and_keeps_acknowledged_samples(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let mut server = TestServer::start(&db).await;
    let prefix = unique("term");
    let (acked, ledger, handles) = start_writers(&server, &prefix, 10_000);
    poll_until(Duration::from_secs(120), "50 acknowledged reports", || {
        let n = acked.load(Ordering::SeqCst);
        async move { (n >= 50).then_some(()) }
    })
    .await;
    let status = server.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must exit 0: {status}\n{}",
        server.logs().join("\n")
    );
    for h in handles {
        h.await.expect("writer task");
    }
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    server.restart().await;
    check_ledger(&server, &prefix, &ledger).await;
}

backend_tests!(
    acknowledged_samples_survive_sigkill,
    sigterm_exits_zero_and_keeps_acknowledged_samples
);
