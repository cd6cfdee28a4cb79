//! The alert evaluator and the notification sender, two background tasks
//! each under its own lease (one replica evaluates and one sends at a time,
//! as one delivers for each publisher). The evaluator runs every enabled
//! rule on its interval, at once when rules change, and as soon as a commit
//! touches a series one of its selectors matches (event rules: any commit;
//! at most every [`ON_COMMIT_EVERY_MS`] per rule), moves its alerts
//! (`alerts::state`), flushes due notification groups, and commits the new
//! state together with the notifications it queued. The sender attempts
//! queued notifications through their channel's notifier, retrying
//! retryable failures with backoff up to [`MAX_RETRY_AGE_MS`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex, Notify};

use super::catalog::{self, SeriesCatalog};
use super::channels::ChannelNotifiers;
use super::deliveries::{self, Attempt, Outcome};
use super::notification;
use super::promql;
use super::rules::RuleSpec;
use super::silences::{ActiveSilence, Silence};
use super::state::{Evaluation, RuleState};
use crate::metrics::index::SeriesIndex;
use crate::plugins::PluginRegistry;
use crate::store::{ChannelRow, DeliveryRow, EvaluationCommit, RuleRow, Store};
use crate::telemetry::SelfMetrics;

/// How long a notification is retried before it is `failed`.
pub const MAX_RETRY_AGE_MS: i64 = 3_600_000;
/// Longest wait between two attempts of one notification.
const MAX_BACKOFF_MS: i64 = 300_000;
/// The catalog of series is rebuilt when series entered or left the index,
/// at most once per this many times its last rebuild took (so rebuilding a
/// large catalog under churn takes at most a tenth of the evaluator's time,
/// and a small one follows new series at once).
const CATALOG_REBUILD_GAP: u32 = 10;
/// Shortest time between two commit-triggered evaluations of one rule.
pub const ON_COMMIT_EVERY_MS: i64 = 100;
/// How long an expired silence is kept (Alertmanager's default retention).
pub const SILENCE_RETENTION_MS: i64 = 120 * 3_600_000;
/// Longest time a rule's evaluation time and values go unwritten.
pub const PERSIST_EVERY_MS: i64 = 60_000;
/// Longest sleep of the evaluator between passes.
const IDLE: Duration = Duration::from_millis(1_000);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The wait before attempt `n + 1` after `n` failed ones: 1 s, 2 s, 4 s, …
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 20) - 1;
    (1_000i64 << exp).min(MAX_BACKOFF_MS)
}

pub struct AlertEngine {
    store: Arc<dyn Store>,
    index: Arc<SeriesIndex>,
    plugins: Arc<PluginRegistry>,
    notifiers: Arc<ChannelNotifiers>,
    metrics: Arc<SelfMetrics>,
    external_url: String,
    head: Arc<crate::bus::LogHead>,
    rules_changed: Notify,
    queued: Notify,
    catalog: Mutex<Catalog>,
    memory: Mutex<Memory>,
    parsed: parking_lot::Mutex<HashMap<String, Result<Arc<promql::Query>, String>>>,
    /// Each rule's spec as read at its `updated_ms` (a pass would otherwise
    /// parse every stored rule's JSON).
    specs: parking_lot::Mutex<HashMap<String, (i64, Arc<RuleSpec>)>>,
}

impl AlertEngine {
    pub fn new(
        store: Arc<dyn Store>,
        index: Arc<SeriesIndex>,
        plugins: Arc<PluginRegistry>,
        notifiers: Arc<ChannelNotifiers>,
        metrics: Arc<SelfMetrics>,
        head: Arc<crate::bus::LogHead>,
        external_url: String,
    ) -> Arc<Self> {
        Arc::new(AlertEngine {
            store,
            index,
            plugins,
            notifiers,
            metrics,
            head,
            external_url,
            rules_changed: Notify::new(),
            queued: Notify::new(),
            catalog: Mutex::new(Catalog::default()),
            memory: Mutex::new(Memory::default()),
            parsed: parking_lot::Mutex::default(),
            specs: parking_lot::Mutex::default(),
        })
    }

    /// The link notifications carry back to this server.
    pub fn external_url(&self) -> &str {
        &self.external_url
    }

    /// The states this replica's evaluator holds (`None` when another
    /// replica evaluates), fresher than the stored ones.
    pub async fn live_states(&self) -> Option<HashMap<String, RuleState>> {
        let memory = self.memory.lock().await;
        (!memory.states.is_empty()).then(|| memory.states.clone())
    }

    /// One rule's state as this replica's evaluator holds it.
    pub async fn live_state(&self, rule_id: &str) -> Option<RuleState> {
        self.memory.lock().await.states.get(rule_id).cloned()
    }

    /// A rule was created, changed or deleted: evaluate now.
    pub fn rules_changed(&self) {
        self.rules_changed.notify_one();
    }

    /// Evaluates `query` at `t_ms` over the stored samples; the vector's
    /// label sets lose `__name__`, as an alert's labels do in Prometheus.
    pub async fn evaluate(&self, query: &promql::Query, t_ms: i64) -> Evaluation {
        vector_of(self.evaluate_value(query, t_ms).await?)
    }

    /// Evaluates `query` at `t_ms` over the stored samples, as it is.
    pub async fn evaluate_value(
        &self,
        query: &promql::Query,
        t_ms: i64,
    ) -> Result<promql::Value, String> {
        let data = {
            let mut guard = self.catalog.lock().await;
            let cat = guard.fresh(&self.index);
            catalog::fetch(
                &*self.store,
                cat,
                Some(&self.index.recent),
                query,
                t_ms,
                t_ms,
            )
            .await
            .map_err(|e| e.to_string())?
        };
        query.eval(t_ms, &data).map_err(|e| e.to_string())
    }

    /// Evaluates `spec` over stored history (see `alerts::preview`).
    pub async fn preview(
        &self,
        spec: &RuleSpec,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<super::preview::Preview, String> {
        let mut guard = self.catalog.lock().await;
        let cat = guard.fresh(&self.index);
        super::preview::run(&*self.store, cat, spec, start_ms, end_ms, step_ms).await
    }

    /// The evaluator: runs while this replica holds the evaluator lease.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let stopping = *stop.borrow();
            if stopping {
                return;
            }
            let mut lease = match self.store.try_lease("alerting/evaluator").await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the alert evaluator lease; retrying");
                    if pause(&mut stop, Duration::from_secs(5)).await {
                        return;
                    }
                    continue;
                }
            };
            // What another replica evaluated before is in the store.
            self.memory.lock().await.clear();
            // Rules a commit touched within ON_COMMIT_EVERY_MS of their
            // last evaluation: evaluated by the next pass due for them.
            let mut deferred: HashSet<String> = HashSet::new();
            let mut lease_checked = Instant::now();
            let mut commits = self.head.subscribe();
            let mut committed = false;
            let mut silences_pruned: Option<Instant> = None;
            let mut last_pass = Instant::now();
            loop {
                if lease_checked.elapsed() >= Duration::from_secs(1) {
                    if !lease.held().await {
                        tracing::warn!("alert evaluator lease lost; standing by");
                        break;
                    }
                    lease_checked = Instant::now();
                }
                if silences_pruned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    silences_pruned = Some(Instant::now());
                    if let Err(e) = self
                        .store
                        .delete_silences_ended_before(now_ms() - SILENCE_RETENTION_MS)
                        .await
                    {
                        tracing::warn!(error = %e, "deleting expired silences failed");
                    }
                }
                // Commits can arrive hundreds of times a second; a pass reads
                // the rules and silences, so commit wake-ups share one pass
                // per ON_COMMIT_EVERY_MS (no rule reacts faster anyway).
                if committed {
                    let since = last_pass.elapsed();
                    let every = Duration::from_millis(ON_COMMIT_EVERY_MS as u64);
                    if since < every {
                        tokio::time::sleep(every - since).await;
                    }
                }
                last_pass = Instant::now();
                let mut memory = self.memory.lock().await;
                let pass = self.pass(&mut memory, &mut deferred, std::mem::take(&mut committed));
                let wait = match pass.await {
                    Ok(wait) => wait,
                    Err(e) => {
                        tracing::warn!(error = %e, "alert evaluation pass failed; retrying");
                        memory.clear();
                        Duration::from_secs(1)
                    }
                };
                drop(memory);
                let stopped = tokio::select! {
                    _ = tokio::time::sleep(wait) => false,
                    _ = self.rules_changed.notified() => false,
                    changed = commits.changed() => {
                        committed = changed.is_ok();
                        false
                    }
                    _ = stop.wait_for(|s| *s) => true,
                };
                if stopped {
                    self.memory.lock().await.clear();
                    lease.release().await;
                    return;
                }
            }
            self.memory.lock().await.clear();
            lease.release().await;
        }
    }

    /// One pass over every rule, its states committed together at the end;
    /// answers how long to wait for the next.
    async fn pass(
        &self,
        memory: &mut Memory,
        deferred: &mut HashSet<String>,
        committed: bool,
    ) -> Result<Duration, crate::store::StoreError> {
        let Memory { states, persisted } = memory;
        let started = Instant::now();
        let rules = self.store.list_rules().await?;
        let silences = self.active_silences(now_ms()).await?;
        let channels: HashMap<String, ChannelRow> = self
            .store
            .list_channels()
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        if rules.iter().any(|r| !states.contains_key(&r.id)) {
            let saved: HashMap<String, String> =
                self.store.list_rule_states().await?.into_iter().collect();
            for row in &rules {
                if !states.contains_key(&row.id) {
                    let state = saved
                        .get(&row.id)
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or_default();
                    states.insert(row.id.clone(), state);
                }
            }
        }
        // Every rule of a pass is evaluated at one instant (as Prometheus
        // evaluates a group), so rules due together stay due together.
        let now = now_ms();
        let pass = Pass {
            silences: &silences,
            channels: &channels,
            now,
        };
        self.prefill(&rules, now).await;
        let mut next = now + IDLE.as_millis() as i64;
        let mut commits = Vec::new();
        let mut evaluated = 0;
        for row in &rules {
            let Some(spec) = self.spec_of(row) else {
                continue;
            };
            let Some(state) = states.get_mut(&row.id) else {
                continue;
            };
            // A rule a commit touched is evaluated once its last evaluation
            // is ON_COMMIT_EVERY_MS old: at once, or by a pass due then.
            let hit = deferred.remove(&row.id) || (committed && self.touched(&spec, state).await);
            let touched = match state.last_eval_ms {
                Some(last) if hit && now - last < ON_COMMIT_EVERY_MS => {
                    deferred.insert(row.id.clone());
                    next = next.min(last + ON_COMMIT_EVERY_MS);
                    false
                }
                _ => hit,
            };
            let (at, changed, ran) = self.step(row, &spec, state, &pass, touched).await;
            if let Some(at) = at {
                next = next.min(at);
            }
            // A state is written when more than its last evaluation's time,
            // duration and values changed, when it queued notifications,
            // or when its last write is PERSIST_EVERY_MS old; the API reads
            // this replica's states from memory (`live_state`).
            if let Some(deliveries) = changed {
                let digest = state.durable_digest();
                let stale = persisted
                    .get(&row.id)
                    .is_none_or(|(d, at)| *d != digest || now - at >= PERSIST_EVERY_MS);
                if stale || !deliveries.is_empty() {
                    persisted.insert(row.id.clone(), (digest, now));
                    commits.push(EvaluationCommit {
                        rule_id: row.id.clone(),
                        state: serde_json::to_string(state).unwrap_or_default(),
                        deliveries,
                    });
                }
            }
            evaluated += usize::from(ran);
        }
        let sending = commits
            .iter()
            .flat_map(|c| &c.deliveries)
            .any(|d| d.status != "silenced");
        self.store.commit_evaluations(&commits, now).await?;
        if sending {
            self.queued.notify_one();
        }
        states.retain(|id, _| rules.iter().any(|r| &r.id == id));
        self.specs.lock().retain(|id, _| states.contains_key(id));
        persisted.retain(|id, _| states.contains_key(id));
        deferred.retain(|id| states.contains_key(id));
        let count = |s: super::state::AlertState| {
            states
                .values()
                .flat_map(|st| st.alerts.values())
                .filter(|a| a.state == s)
                .count() as i64
        };
        self.metrics.observe_evaluation_pass(
            started.elapsed(),
            evaluated,
            count(super::state::AlertState::Pending),
            count(super::state::AlertState::Firing),
        );
        Ok(Duration::from_millis(
            (next - now_ms()).clamp(20, IDLE.as_millis() as i64) as u64,
        ))
    }

    /// Evaluates `row` at the pass's instant if due and flushes its due
    /// groups; answers when it is next due, the notifications it queued if
    /// its state may have changed (`None`: untouched), and whether it was
    /// evaluated.
    async fn step(
        &self,
        row: &RuleRow,
        spec: &RuleSpec,
        state: &mut RuleState,
        pass: &Pass<'_>,
        touched: bool,
    ) -> (Option<i64>, Option<Vec<DeliveryRow>>, bool) {
        let Pass {
            silences,
            channels: channel_rows,
            now,
        } = *pass;
        if !spec.enabled {
            if *state != RuleState::default() {
                *state = RuleState {
                    rule_updated_ms: row.updated_ms,
                    ..RuleState::default()
                };
                return (None, Some(Vec::new()), false);
            }
            return (None, None, false);
        }
        let edited = state.rule_updated_ms != row.updated_ms;
        // Evaluations fall on multiples of the interval (wall clock), so
        // rules of one interval share their ticks however they started.
        let interval = spec.interval_ms.max(1);
        let due = edited
            || touched
            || state
                .last_eval_ms
                .is_none_or(|last| now.div_euclid(interval) > last.div_euclid(interval));
        let flush_due = state.next_flush_ms().is_some_and(|f| f <= now);
        if !due && !flush_due {
            return (Some(next_due(spec, state, now)), None, false);
        }
        if due {
            let started = Instant::now();
            let result = match &spec.events {
                Some(rule) => super::event_rules::evaluate(&*self.store, rule, now).await,
                None => match self.query_of(&spec.expr) {
                    Ok(q) => self.evaluate(&q, now).await,
                    Err(e) => Err(e),
                },
            };
            self.metrics
                .count_rule_evaluation(if result.is_ok() { "ok" } else { "error" });
            state.observe(spec, result, now);
            state.last_duration_ms = started.elapsed().as_secs_f64() * 1_000.0;
            state.rule_updated_ms = row.updated_ms;
        }
        let channels: Vec<(String, String, bool)> = spec
            .channels
            .iter()
            .filter_map(|id| channel_rows.get(id))
            .filter(|c| c.enabled)
            .map(|c| (c.id.clone(), c.name.clone(), c.send_resolved))
            .collect();
        let silenced = |labels: &std::collections::BTreeMap<String, String>| {
            silences.iter().any(|s| s.matches(labels))
        };
        let due_now = state.flush(spec, &channels, &self.external_url, &row.id, now, &silenced);
        let mut queued = Vec::new();
        for d in &due_now {
            let Some(channel) = channel_rows.get(&d.channel_id) else {
                continue;
            };
            let mut r = deliveries::new_row(
                channel,
                Some(row.id.clone()),
                "notification",
                &d.notification,
                now,
            );
            if d.silenced {
                r.status = "silenced".into();
                r.next_attempt_ms = None;
                self.metrics.count_notification(&channel.name, "silenced");
            }
            queued.push(r);
        }
        (Some(next_due(spec, state, now)), Some(queued), due)
    }

    /// `row`'s spec, parsed once per version of the rule.
    fn spec_of(&self, row: &RuleRow) -> Option<Arc<RuleSpec>> {
        let mut specs = self.specs.lock();
        if let Some((updated, spec)) = specs.get(&row.id) {
            if *updated == row.updated_ms {
                return Some(spec.clone());
            }
        }
        match serde_json::from_str::<RuleSpec>(&row.spec) {
            Ok(spec) => {
                let spec = Arc::new(spec);
                specs.insert(row.id.clone(), (row.updated_ms, spec.clone()));
                Some(spec)
            }
            Err(e) => {
                tracing::warn!(rule = %row.name, error = %e, "stored rule cannot be read; skipped");
                None
            }
        }
    }

    /// `expr` parsed, from a cache of the rules' expressions (parsing is
    /// a good part of a small rule's evaluation).
    fn query_of(&self, expr: &str) -> Result<Arc<promql::Query>, String> {
        let mut parsed = self.parsed.lock();
        if let Some(q) = parsed.get(expr) {
            return q.clone();
        }
        // Expressions of deleted or edited rules go when the cache outgrows
        // any plausible rule set.
        if parsed.len() >= 100_000 {
            parsed.clear();
        }
        let q = promql::parse(expr).map(Arc::new).map_err(|e| e.message);
        parsed.insert(expr.to_string(), q.clone());
        q
    }

    /// Reads, in one go, the windows of every series the metric rules read
    /// that the recent samples do not hold (see `catalog::prefill`): when
    /// the rules or the series changed, or once a minute.
    async fn prefill(&self, rules: &[RuleRow], now: i64) {
        if !self.index.recent.enabled() {
            return;
        }
        let mut guard = self.catalog.lock().await;
        let key = (
            rules
                .iter()
                .map(|r| (r.id.clone(), r.updated_ms))
                .collect::<Vec<_>>(),
            self.index.membership(),
        );
        let fresh = guard
            .prefilled
            .as_ref()
            .is_some_and(|(k, at)| *k == key && at.elapsed() < Duration::from_secs(60));
        if fresh {
            return;
        }
        let queries: Vec<Arc<promql::Query>> = rules
            .iter()
            .filter_map(|r| self.spec_of(r))
            .filter(|s| s.enabled && s.events.is_none())
            .filter_map(|s| self.query_of(&s.expr).ok())
            .collect();
        let cat = guard.fresh(&self.index);
        match catalog::prefill(&*self.store, cat, &self.index.recent, &queries, now).await {
            Ok(n) if n > 0 => {
                tracing::debug!(series = n, "recent samples read for the alert rules")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the alert rules' recent samples failed"),
        }
        guard.prefilled = Some((key, Instant::now()));
    }

    /// Whether a commit since the rule's last evaluation touched what it
    /// reads (any commit, for an event rule).
    async fn touched(&self, spec: &RuleSpec, state: &RuleState) -> bool {
        let Some(last) = state.last_eval_ms else {
            return false;
        };
        if !spec.enabled {
            return false;
        }
        if spec.events.is_some() {
            return true;
        }
        let Ok(q) = self.query_of(&spec.expr) else {
            return false;
        };
        let mut guard = self.catalog.lock().await;
        let cat = guard.fresh(&self.index);
        q.selectors().iter().any(|sel| {
            let ids = cat.select(&sel.matchers);
            // A series new since the catalog was rebuilt is in no id list
            // yet (see CATALOG_REBUILD_GAP).
            self.index
                .updated_since(ids.iter().map(|(id, _)| *id), last)
        })
    }

    /// The silences in force at `now_ms`.
    pub async fn active_silences(
        &self,
        now_ms: i64,
    ) -> Result<Vec<ActiveSilence>, crate::store::StoreError> {
        Ok(self
            .store
            .list_silences()
            .await?
            .iter()
            .filter_map(|b| serde_json::from_str::<Silence>(b).ok())
            .filter(|s| s.state(now_ms) == "active")
            .filter_map(|s| ActiveSilence::new(&s))
            .collect())
    }

    /// The sender: runs while this replica holds the sender lease.
    pub async fn run_sender(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let stopping = *stop.borrow();
            if stopping {
                return;
            }
            let mut lease = match self.store.try_lease("alerting/sender").await {
                Ok(Some(lease)) => lease,
                Ok(None) | Err(_) => {
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                if !lease.held().await {
                    tracing::warn!("notification sender lease lost; standing by");
                    break;
                }
                let sent = match self.send_due().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading queued notifications failed; retrying");
                        0
                    }
                };
                if sent > 0 {
                    continue;
                }
                let stopped = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => false,
                    _ = self.queued.notified() => false,
                    _ = stop.wait_for(|s| *s) => true,
                };
                if stopped {
                    self.memory.lock().await.clear();
                    lease.release().await;
                    return;
                }
            }
            self.memory.lock().await.clear();
            lease.release().await;
        }
    }

    /// Attempts every due notification once, concurrently; answers how many.
    async fn send_due(&self) -> Result<usize, crate::store::StoreError> {
        let due = self.store.due_deliveries(now_ms(), 64).await?;
        let n = due.len();
        let results =
            futures::future::join_all(due.into_iter().map(|row| self.send_one(row))).await;
        for r in results {
            r?;
        }
        Ok(n)
    }

    async fn send_one(
        &self,
        mut row: crate::store::DeliveryRow,
    ) -> Result<(), crate::store::StoreError> {
        let channel = self.store.get_channel(&row.channel_id).await?;
        let permanent = |m: String| Attempt {
            outcome: Outcome::Permanent(m),
            response_status: None,
        };
        let attempt = match &channel {
            None => permanent("the channel was deleted".into()),
            Some(c) if !c.enabled => permanent(format!("channel `{}` is disabled", c.name)),
            Some(c) => match serde_json::from_str(&row.payload)
                .ok()
                .and_then(|v| notification::from_payload(&v))
            {
                Some(n) => deliveries::attempt(&self.notifiers, &self.plugins, c, &n).await,
                None => permanent("the recorded notification cannot be read".into()),
            },
        };
        let now = now_ms();
        let retry_at = match &attempt.outcome {
            Outcome::Retryable { retry_after_ms, .. }
                if now - row.created_ms < MAX_RETRY_AGE_MS =>
            {
                let wait = retry_after_ms
                    .map(|ms| {
                        i64::try_from(ms)
                            .unwrap_or(MAX_BACKOFF_MS)
                            .min(MAX_BACKOFF_MS)
                    })
                    .unwrap_or_else(|| backoff_ms(row.attempts + 1));
                Some(now + wait)
            }
            _ => None,
        };
        deliveries::record(&mut row, &attempt, retry_at, now);
        let name = channel
            .as_ref()
            .map_or(row.channel_id.as_str(), |c| c.name.as_str());
        self.metrics.count_notification(name, &row.status);
        if row.status != "sent" {
            tracing::warn!(channel = %name, status = %row.status, error = ?row.last_error, "notification not delivered");
        }
        self.store.update_delivery(&row).await
    }
}

/// The evaluator's states (while this replica holds the lease), and for
/// each rule the digest and time of its last written state.
#[derive(Default)]
struct Memory {
    states: HashMap<String, RuleState>,
    persisted: HashMap<String, (u64, i64)>,
}

impl Memory {
    fn clear(&mut self) {
        self.states.clear();
        self.persisted.clear();
    }
}

/// What every rule of one pass shares.
struct Pass<'a> {
    silences: &'a [ActiveSilence],
    channels: &'a HashMap<String, ChannelRow>,
    /// The instant the pass evaluates at.
    now: i64,
}

/// The series catalog and when it was last rebuilt, in how long.
#[derive(Default)]
struct Catalog {
    series: SeriesCatalog,
    rebuilt: Option<(Instant, Duration)>,
    /// The rules (id, updated) and index membership of the last prefill.
    prefilled: Option<PrefillKey>,
}

type PrefillKey = ((Vec<(String, i64)>, u64), Instant);

impl Catalog {
    /// The catalog, rebuilt first if the index changed and the last
    /// rebuild is long enough ago.
    fn fresh(&mut self, index: &SeriesIndex) -> &SeriesCatalog {
        let due = self
            .rebuilt
            .is_none_or(|(at, took)| at.elapsed() >= took * CATALOG_REBUILD_GAP);
        if due && !self.series.is_current(index) {
            let started = Instant::now();
            self.series.refresh(index);
            self.rebuilt = Some((started, started.elapsed()));
        }
        &self.series
    }
}

/// When `state`'s rule is next due: its next evaluation or group flush.
fn next_due(spec: &RuleSpec, state: &RuleState, now: i64) -> i64 {
    let interval = spec.interval_ms.max(1);
    let eval = (state.last_eval_ms.unwrap_or(now).div_euclid(interval) + 1) * interval;
    state.next_flush_ms().map_or(eval, |f| f.min(eval))
}

/// An evaluation's vector without `__name__`.
pub fn vector_of(value: promql::Value) -> Evaluation {
    match value {
        promql::Value::Vector(v) => Ok(v
            .into_iter()
            .map(|mut e| {
                e.labels.remove("__name__");
                (e.labels, e.value)
            })
            .collect()),
        promql::Value::Scalar(_) => Err("the expression gives a scalar, not a vector".into()),
    }
}

async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(4), 8_000);
        assert_eq!(backoff_ms(12), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(1_000), MAX_BACKOFF_MS);
    }
}
