//! One delivery loop per publisher plugin, and the manager that starts them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use super::batch::build_log_batch;
use super::derived::DerivedSeries;
use crate::events::StoredEvent;
use crate::metrics::model::format_ms;
use crate::plugins::bindings::types::{DeliveryError, Rejection};
use crate::plugins::{CallError, PluginKind, PluginRegistry};
use crate::store::{DeadLetter, Lease, LogItems, LogSample, Store};

type ReadAhead = tokio::task::JoinHandle<Result<LogItems, crate::store::StoreError>>;

/// Batching and retry settings shared by every publisher.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    pub max_items: u32,
    pub max_bytes: usize,
    pub max_wait: Duration,
    pub poll: Duration,
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    /// How often a replica without a publisher's lease tries to take it.
    pub lease_retry: Duration,
    /// How often an idle delivery loop checks it still holds its lease
    /// (it always checks right before publishing).
    pub lease_check: Duration,
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
            lease_retry: Duration::from_secs(1),
            lease_check: Duration::from_secs(1),
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
    /// delivering, idle, backing_off, standby (another replica holds the
    /// lease), waiting_for_plugin or removed.
    pub state: String,
    pub cursor_seq: i64,
    /// How far the cursor is behind the head of the log, in sequence numbers.
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

/// How a wait before a retry ended.
enum Waited {
    Elapsed,
    Stopped,
    /// The publisher was replaced (a new file, a reload that lifted a
    /// quarantine): the old failures say nothing about the new one.
    PluginChanged,
}

/// Why a leased delivery run ended.
enum Exit {
    Stopped,
    Gone,
    LeaseLost,
    StoreFailed,
}

/// The highest sequence number to include so the batch stays within
/// `max_bytes` (estimated), or `None` when everything fits. At least one item
/// is always included.
fn byte_cutoff(items: &LogItems, max_bytes: usize) -> Option<i64> {
    let mut sizes: Vec<(i64, usize)> = items
        .samples
        .iter()
        .map(|r| {
            (
                r.seq,
                64 + r.component.len() + r.metric_name.len() + r.labels.len(),
            )
        })
        .chain(items.events.iter().map(|e| {
            let ids = [&e.session_id, &e.workflow_id, &e.task_id, &e.backend]
                .iter()
                .map(|v| v.as_ref().map_or(0, String::len))
                .sum::<usize>();
            (
                e.seq,
                96 + e.event_id.len() + e.event_type.len() + e.body.len() + ids,
            )
        }))
        .collect();
    sizes.sort_unstable_by_key(|(seq, _)| *seq);
    let mut total = 0usize;
    for (i, (seq, size)) in sizes.iter().enumerate() {
        total += size;
        if total > max_bytes {
            return Some(if i == 0 { *seq } else { sizes[i - 1].0 });
        }
    }
    None
}

/// The dead letters for a publish report's rejections (samples or events).
/// A plugin's answer is not trusted: a seq that was not in the batch is
/// ignored, and a seq rejected twice becomes one dead letter.
fn dead_letters(publisher: &str, items: &LogItems, rejected: &[Rejection]) -> Vec<DeadLetter> {
    if rejected.is_empty() {
        return Vec::new();
    }
    let samples: HashMap<i64, &LogSample> = items.samples.iter().map(|r| (r.seq, r)).collect();
    let events: HashMap<i64, &StoredEvent> = items.events.iter().map(|e| (e.seq, e)).collect();
    let mut seen = std::collections::HashSet::new();
    rejected
        .iter()
        .filter_map(|r| {
            let seq = i64::try_from(r.seq).ok()?;
            if !seen.insert(seq) {
                return None;
            }
            let item = match (samples.get(&seq), events.get(&seq)) {
                (Some(s), _) => sample_item(s),
                (None, Some(e)) => e.to_json().to_string(),
                (None, None) => return None,
            };
            Some(DeadLetter {
                id: 0,
                publisher: publisher.to_string(),
                seq,
                item,
                reason: r.reason.clone(),
                created_ms: 0,
            })
        })
        .collect()
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

#[async_trait::async_trait]
impl crate::plugins::ServingHook for DeliveryManager {
    /// A new publisher's cursor is fixed at the head of the log before it is
    /// reported `loaded`: whatever commits after a user sees `loaded` reaches
    /// it. A known publisher keeps its cursor. If the database cannot be
    /// reached now, the delivery loop opens the cursor when it starts.
    async fn before_serving(&self, plugin: &crate::plugins::Plugin) {
        if plugin.kind != PluginKind::Publisher {
            return;
        }
        let opened = async {
            let head = self.store.max_seq().await?;
            self.store.open_cursor(&plugin.name, head, now_ms()).await
        }
        .await;
        if let Err(e) = opened {
            tracing::warn!(publisher = %plugin.name, error = %e, "cannot fix the new publisher's starting point now; it starts where the log stands when delivery begins");
        }
    }
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

    /// Waits `wait` before retrying a failed delivery of `name`, cut short
    /// when the plugin running under that name is no longer `failed_on`.
    async fn pause_for_retry(
        &self,
        stop: &mut watch::Receiver<bool>,
        wait: Duration,
        name: &str,
        failed_on: &Arc<crate::plugins::Plugin>,
    ) -> Waited {
        let mut changes = self.plugins.subscribe_changes();
        // A new version or configuration is a replacement; the same plugin
        // moving from Winch to Cranelift code (it keeps its stats) is not,
        // and must not cut a Retry-After short.
        let replaced = |this: &Self| {
            this.plugins
                .get(name)
                .is_some_and(|p| !Arc::ptr_eq(&p.stats, &failed_on.stats))
        };
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        let mut registry_gone = false;
        loop {
            if replaced(self) {
                return Waited::PluginChanged;
            }
            let stopped = async {
                let _ = stop.wait_for(|s| *s).await;
            };
            let changed = async {
                if registry_gone {
                    std::future::pending::<()>().await;
                }
                registry_gone = changes.changed().await.is_err();
            };
            tokio::select! {
                _ = &mut sleep => return Waited::Elapsed,
                _ = stopped => return Waited::Stopped,
                _ = changed => {}
            }
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
    /// Only the replica holding the publisher's lease delivers; the others
    /// stand by and try to take it over every `lease_retry`.
    async fn deliver(&self, name: String, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if !self.is_publisher(&name) {
                self.set_state(&name, "removed", None);
                return;
            }
            let lease = match self.store.try_lease(&format!("publisher/{name}")).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    self.set_state(&name, "standby", None);
                    if self.pause(&mut stop, self.settings.lease_retry).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(publisher = %name, error = %e, "cannot take the publisher lease; retrying");
                    if self.pause(&mut stop, self.settings.lease_retry).await {
                        return;
                    }
                    continue;
                }
            };
            let mut lease = lease;
            let exit = self.deliver_leased(&name, &mut lease, &mut stop).await;
            lease.release().await;
            match exit {
                Exit::Stopped | Exit::Gone => return,
                Exit::LeaseLost => {
                    tracing::warn!(publisher = %name, "publisher lease lost; standing by");
                    self.set_state(&name, "standby", None);
                }
                Exit::StoreFailed => {
                    if self.pause(&mut stop, self.settings.lease_retry).await {
                        return;
                    }
                }
            }
        }
    }

    fn is_publisher(&self, name: &str) -> bool {
        self.plugins
            .get(name)
            .is_some_and(|p| p.kind == PluginKind::Publisher)
    }

    /// Delivers while this replica holds the lease.
    async fn deliver_leased(
        &self,
        name: &str,
        lease: &mut Box<dyn Lease>,
        stop: &mut watch::Receiver<bool>,
    ) -> Exit {
        let name = name.to_string();
        let head = match self.store.max_seq().await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::error!(publisher = %name, error = %e, "cannot read the log head; retrying");
                return Exit::StoreFailed;
            }
        };
        // A new publisher starts at the head of the log; a known one resumes
        // (from where this or another replica left it).
        let mut cursor = match self.store.open_cursor(&name, head, now_ms()).await {
            Ok(c) => c.cursor_seq,
            Err(e) => {
                tracing::error!(publisher = %name, error = %e, "cannot open the publisher cursor");
                return Exit::StoreFailed;
            }
        };
        tracing::info!(publisher = %name, cursor, "delivery started");
        let mut attempt = 0u32;
        let mut waiting_since: Option<Instant> = None;
        let mut lease_checked = Instant::now();
        // The read of the batch after the one being published, started when
        // that publish starts: (the cursor it reads after, the read).
        let mut read_ahead: Option<(i64, ReadAhead)> = None;
        // Histogram/summary aggregates as of the cursor, for a publisher
        // that takes derived series; dropped while it does not (they would
        // fall behind the cursor).
        let mut derived_state: Option<DerivedSeries> = None;
        let exit = loop {
            if *stop.borrow() {
                break Exit::Stopped;
            }
            if lease_checked.elapsed() >= self.settings.lease_check {
                if !lease.held().await {
                    break Exit::LeaseLost;
                }
                lease_checked = Instant::now();
            }
            let Some(plugin) = self
                .plugins
                .get(&name)
                .filter(|p| p.kind == PluginKind::Publisher)
            else {
                self.set_state(&name, "removed", None);
                tracing::info!(publisher = %name, cursor, "publisher gone; cursor kept");
                break Exit::Gone;
            };
            let ahead = match read_ahead.take() {
                Some((after, read)) if after == cursor => read.await.ok(),
                // The publish failed: the read-ahead is past the cursor.
                Some((_, read)) => {
                    read.abort();
                    None
                }
                None => None,
            };
            let read = match ahead {
                Some(read) => read,
                None => self.store.log_after(cursor, self.settings.max_items).await,
            };
            let mut items = match read {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(publisher = %name, error = %e, "reading the log failed");
                    if self.pause(stop, self.settings.poll * 10).await {
                        break Exit::Stopped;
                    }
                    continue;
                }
            };
            if items.is_empty() {
                self.set_state(&name, "idle", None);
                waiting_since = None;
                if self.pause(stop, self.settings.poll).await {
                    break Exit::Stopped;
                }
                continue;
            }
            // Wait up to max_wait for a fuller batch.
            if (items.len() as u32) < self.settings.max_items {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() < self.settings.max_wait {
                    if self.pause(stop, self.settings.poll).await {
                        break Exit::Stopped;
                    }
                    continue;
                }
            }
            waiting_since = None;
            if let Some(last) = byte_cutoff(&items, self.settings.max_bytes) {
                items.truncate_to(last);
            }
            // Never publish without the lease: another replica may have it now.
            if !lease.held().await {
                break Exit::LeaseLost;
            }
            lease_checked = Instant::now();
            let derived = if plugin.manifest.delivery.derived_series {
                let state = derived_state.get_or_insert_with(DerivedSeries::new);
                if let Err(e) = state.load(&*self.store, &items.samples, cursor).await {
                    tracing::warn!(publisher = %name, error = %e, "reading histogram/summary checkpoints failed");
                    if self.pause(stop, self.settings.poll * 10).await {
                        break Exit::Stopped;
                    }
                    continue;
                }
                Some(state.derive(&items.samples))
            } else {
                derived_state = None;
                None
            };
            let samples = derived.as_ref().map_or(&items.samples, |d| &d.samples);
            let batch = build_log_batch(samples, &items.events);
            self.set_state(&name, "delivering", None);
            let last_seq = items.last_seq().unwrap_or(cursor);
            // Read the next batch while this one is published and its cursor
            // stored; used only if the cursor then stands at `last_seq`.
            let store = self.store.clone();
            let max_items = self.settings.max_items;
            read_ahead = Some((
                last_seq,
                tokio::spawn(async move { store.log_after(last_seq, max_items).await }),
            ));
            let failure = match plugin.publish(&batch).await {
                Ok(Ok(report)) => {
                    let dead = dead_letters(&name, &items, &report.rejected);
                    let delivered = items.len() as i64 - dead.len() as i64;
                    match self
                        .store
                        .advance_cursor(&name, last_seq, delivered, &dead, now_ms())
                        .await
                    {
                        Ok(()) => {
                            cursor = last_seq;
                            attempt = 0;
                            if let (Some(state), Some(derived)) = (derived_state.as_mut(), derived)
                            {
                                state.advance(derived);
                            }
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
                match self.pause_for_retry(stop, wait, &name, &plugin).await {
                    Waited::Elapsed => {}
                    Waited::Stopped => break Exit::Stopped,
                    Waited::PluginChanged => {
                        tracing::info!(publisher = %name, "publisher replaced; retrying now without backoff");
                        attempt = 0;
                    }
                }
            }
        };
        if let Some((_, read)) = read_ahead {
            read.abort();
        }
        tracing::info!(publisher = %name, cursor, "delivery stopped");
        exit
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::MetricKind;

    fn items() -> LogItems {
        let sample = |seq| LogSample {
            seq,
            series_id: 1,
            ts_ms: 0,
            value: 1.0,
            component: "w".into(),
            metric_name: "m".into(),
            kind: MetricKind::Gauge,
            labels: "{}".into(),
        };
        let event = StoredEvent {
            seq: 2,
            event_id: "e".into(),
            event_type: "TaskFailed".into(),
            event_ts: 0.0,
            session_id: None,
            workflow_id: None,
            task_id: Some("t".into()),
            backend: None,
            execution_id: None,
            source_id: None,
            project_module: None,
            body: r#"{"event_type":"TaskFailed"}"#.into(),
            received_ms: 0,
        };
        LogItems {
            samples: vec![sample(1), sample(3)],
            events: vec![event],
        }
    }

    fn rejection(seq: u64) -> Rejection {
        Rejection {
            seq,
            reason: format!("no {seq}"),
        }
    }

    #[test]
    fn rejections_outside_the_batch_or_repeated_are_dropped() {
        let dead = dead_letters(
            "p",
            &items(),
            &[
                rejection(2),
                rejection(9),
                rejection(2),
                rejection(u64::MAX),
                rejection(3),
            ],
        );
        let seqs: Vec<i64> = dead.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert!(dead[0].item.contains("TaskFailed"), "{}", dead[0].item);
        assert!(dead[1].item.contains("\"name\":\"m\""), "{}", dead[1].item);
    }

    #[test]
    fn batches_are_cut_by_bytes_in_sequence_order_keeping_at_least_one() {
        let items = items();
        assert_eq!(byte_cutoff(&items, 1 << 20), None);
        // Each sample is 64 + 1 + 1 + 2 = 68 bytes, the event 96 + 1 + 10 + 27 + 1 = 135.
        assert_eq!(byte_cutoff(&items, 68 + 135), Some(2));
        assert_eq!(byte_cutoff(&items, 100), Some(1));
        assert_eq!(byte_cutoff(&items, 1), Some(1));
    }
}
