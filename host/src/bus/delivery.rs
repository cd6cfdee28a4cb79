//! One delivery loop per publisher plugin, and the manager that starts them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use super::batch::build_batch;
use crate::metrics::model::format_ms;
use crate::plugins::bindings::types::DeliveryError;
use crate::plugins::{CallError, PluginKind, PluginRegistry};
use crate::store::{DeadLetter, LogSample, Store};

/// Batching and retry settings shared by every publisher.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    pub max_items: u32,
    pub max_bytes: usize,
    pub max_wait: Duration,
    pub poll: Duration,
    pub backoff_start: Duration,
    pub backoff_max: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_items: 1000,
            max_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_millis(500),
            poll: Duration::from_millis(100),
            backoff_start: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct LiveState {
    state: &'static str,
    next_attempt: Option<Instant>,
}

/// A publisher as `GET /api/v2/publishers` shows it.
#[derive(Serialize, ToSchema)]
pub struct PublisherStatus {
    pub name: String,
    /// delivering, idle, backing_off, waiting_for_plugin or removed.
    pub state: String,
    pub cursor_seq: i64,
    /// Samples stored after the cursor.
    pub lag: i64,
    pub delivered: i64,
    pub dead_lettered: i64,
    /// RFC 3339.
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_error_at: Option<String>,
    pub next_attempt_in_ms: Option<u64>,
}

/// Starts and tracks the delivery loops.
pub struct DeliveryManager {
    store: Arc<dyn Store>,
    plugins: Arc<PluginRegistry>,
    settings: DeliverySettings,
    live: Mutex<HashMap<String, LiveState>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A pseudo-random fraction in [0, 1) from the clock, for jitter.
fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0
}

fn sample_item(s: &LogSample) -> String {
    serde_json::json!({
        "seq": s.seq,
        "component": s.component,
        "name": s.metric_name,
        "kind": s.kind.as_str(),
        "value": s.value,
        "timestamp": format_ms(s.ts_ms),
        "labels": serde_json::from_str::<serde_json::Value>(&s.labels).unwrap_or_default(),
    })
    .to_string()
}

impl DeliveryManager {
    pub fn new(
        store: Arc<dyn Store>,
        plugins: Arc<PluginRegistry>,
        settings: DeliverySettings,
    ) -> Self {
        DeliveryManager {
            store,
            plugins,
            settings,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn set_state(&self, name: &str, state: &'static str, next_attempt: Option<Instant>) {
        self.live.lock().insert(
            name.to_string(),
            LiveState {
                state,
                next_attempt,
            },
        );
    }

    /// Starts a loop for every publisher plugin that has none, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut loops: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            loops.retain(|_, h| !h.is_finished());
            for plugin in self.plugins.running() {
                if plugin.kind == PluginKind::Publisher && !loops.contains_key(&plugin.name) {
                    let name = plugin.name.clone();
                    let this = self.clone();
                    let stop = stop.clone();
                    loops.insert(
                        name.clone(),
                        tokio::spawn(async move { this.deliver(name, stop).await }),
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        for (_, handle) in loops {
            let _ = handle.await;
        }
    }

    async fn pause(&self, stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stop.wait_for(|s| *s) => true,
        }
    }

    fn backoff(&self, attempt: u32, retry_after_ms: Option<u64>) -> Duration {
        let base = self
            .settings
            .backoff_start
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.settings.backoff_max);
        // ±20 % jitter so publishers that failed together do not retry together.
        let jittered = base.mul_f64(0.8 + 0.4 * jitter_fraction());
        match retry_after_ms {
            Some(ms) => jittered.max(Duration::from_millis(ms.min(300_000))),
            None => jittered,
        }
    }

    /// The delivery loop of one publisher; ends when the plugin goes away.
    async fn deliver(&self, name: String, mut stop: watch::Receiver<bool>) {
        let head = match self.store.max_seq().await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::error!(publisher = %name, error = %e, "cannot read the log head; retrying");
                return;
            }
        };
        // A new publisher starts at the head of the log; a known one resumes.
        let mut cursor = match self.store.open_cursor(&name, head, now_ms()).await {
            Ok(c) => c.cursor_seq,
            Err(e) => {
                tracing::error!(publisher = %name, error = %e, "cannot open the publisher cursor");
                return;
            }
        };
        tracing::info!(publisher = %name, cursor, "delivery started");
        let mut attempt = 0u32;
        let mut waiting_since: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let Some(plugin) = self
                .plugins
                .get(&name)
                .filter(|p| p.kind == PluginKind::Publisher)
            else {
                self.set_state(&name, "removed", None);
                tracing::info!(publisher = %name, cursor, "publisher gone; cursor kept");
                return;
            };
            let rows = match self.store.log_after(cursor, self.settings.max_items).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(publisher = %name, error = %e, "reading the log failed");
                    if self.pause(&mut stop, self.settings.poll * 10).await {
                        break;
                    }
                    continue;
                }
            };
            if rows.is_empty() {
                self.set_state(&name, "idle", None);
                waiting_since = None;
                if self.pause(&mut stop, self.settings.poll).await {
                    break;
                }
                continue;
            }
            // Wait up to max_wait for a fuller batch.
            if (rows.len() as u32) < self.settings.max_items {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() < self.settings.max_wait {
                    if self.pause(&mut stop, self.settings.poll).await {
                        break;
                    }
                    continue;
                }
            }
            waiting_since = None;
            let mut size = 0usize;
            let take = rows
                .iter()
                .take_while(|r| {
                    size += 64 + r.component.len() + r.metric_name.len() + r.labels.len();
                    size <= self.settings.max_bytes
                })
                .count()
                .max(1);
            let rows = &rows[..take];
            let batch = build_batch(rows);
            self.set_state(&name, "delivering", None);
            let last_seq = rows[rows.len() - 1].seq;
            let failure = match plugin.publish(&batch).await {
                Ok(Ok(report)) => {
                    let by_seq: HashMap<i64, &LogSample> =
                        rows.iter().map(|r| (r.seq, r)).collect();
                    let dead: Vec<DeadLetter> = report
                        .rejected
                        .iter()
                        .filter_map(|r| {
                            let row = by_seq.get(&(r.seq as i64))?;
                            Some(DeadLetter {
                                id: 0,
                                publisher: name.clone(),
                                seq: row.seq,
                                item: sample_item(row),
                                reason: r.reason.clone(),
                                created_ms: 0,
                            })
                        })
                        .collect();
                    let delivered = rows.len() as i64 - dead.len() as i64;
                    match self
                        .store
                        .advance_cursor(&name, last_seq, delivered, &dead, now_ms())
                        .await
                    {
                        Ok(()) => {
                            cursor = last_seq;
                            attempt = 0;
                            None
                        }
                        Err(e) => Some((format!("storing the cursor failed: {e}"), None)),
                    }
                }
                Ok(Err(DeliveryError::Retryable(r))) => {
                    Some((format!("retryable: {}", r.message), r.retry_after_ms))
                }
                Ok(Err(DeliveryError::Permanent(message))) => {
                    // A whole-batch permanent error (bad credentials, bad config)
                    // stops progress until an operator acts; nothing is dropped.
                    attempt = attempt.max(8);
                    Some((format!("permanent: {message}"), None))
                }
                Err(CallError::BackingOff(_, wait)) => Some((
                    "plugin restarting after a fault".to_string(),
                    Some(wait.as_millis() as u64),
                )),
                Err(e) => Some((e.to_string(), None)),
            };
            if let Some((message, retry_after)) = failure {
                let wait = self.backoff(attempt, retry_after);
                attempt = attempt.saturating_add(1);
                let _ = self
                    .store
                    .record_delivery_error(&name, &message, now_ms())
                    .await;
                tracing::warn!(publisher = %name, error = %message, retry_in_ms = wait.as_millis() as u64, "delivery failed");
                self.set_state(&name, "backing_off", Some(Instant::now() + wait));
                if self.pause(&mut stop, wait).await {
                    break;
                }
            }
        }
        tracing::info!(publisher = %name, cursor, "delivery stopped");
    }

    /// Status of every publisher with a cursor.
    pub async fn status(&self) -> Result<Vec<PublisherStatus>, crate::store::StoreError> {
        let head = self.store.max_seq().await?;
        let live = self.live.lock().clone();
        let now = Instant::now();
        Ok(self
            .store
            .list_cursors()
            .await?
            .into_iter()
            .map(|c| {
                let running = self.plugins.get(&c.publisher).is_some();
                let l = live.get(&c.publisher);
                let state = match (running, l) {
                    (false, _) => "removed",
                    (true, Some(l)) => l.state,
                    (true, None) => "waiting_for_plugin",
                };
                PublisherStatus {
                    lag: (head - c.cursor_seq).max(0),
                    state: state.to_string(),
                    cursor_seq: c.cursor_seq,
                    delivered: c.delivered,
                    dead_lettered: c.dead_lettered,
                    last_success_at: c.last_success_ms.map(format_ms),
                    last_error: c.last_error,
                    last_error_at: c.last_error_ms.map(format_ms),
                    next_attempt_in_ms: l
                        .and_then(|l| l.next_attempt)
                        .map(|t| t.saturating_duration_since(now).as_millis() as u64),
                    name: c.publisher,
                }
            })
            .collect())
    }
}
