//! One loaded plugin: its compiled, pre-instantiated component, its live
//! instance, and the supervision around every call. A trap or a blown
//! deadline drops the instance (it is never entered again); the next call
//! re-creates it from the `InstancePre` after an exponential backoff; after
//! [`QUARANTINE_AFTER`] consecutive failures the plugin is quarantined until it
//! is reloaded. Nothing a plugin does can take the host down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{debug_fields, notifier, publisher, types, v0_1_0};
use super::engine::{Compiled, PluginEngine, Tier};
use super::manifest::{check_config, PluginManifest};
use super::sandbox::{PluginState, SandboxCounters};

/// Consecutive failures after which a plugin is quarantined.
pub const QUARANTINE_AFTER: u32 = 5;
/// First restart delay after a failure; doubles per consecutive failure.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Most rejections a publish result may carry beyond the batch size.
const MAX_REASON_BYTES: usize = 4096;

/// Which world a plugin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Publisher,
    Notifier,
    DebugFields,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Publisher => "publisher",
            PluginKind::Notifier => "notifier",
            PluginKind::DebugFields => "debug-fields",
        }
    }
}

/// Supervision state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginCondition {
    Loaded,
    Failed,
    Quarantined,
}

/// Why a call did not produce the plugin's answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    #[error("plugin `{0}` is quarantined after repeated failures: {1}")]
    Quarantined(String, String),
    #[error("plugin `{0}` is restarting; next attempt in {1:?}")]
    BackingOff(String, Duration),
    #[error("plugin `{0}` failed: {1}")]
    Fault(String, String),
    #[error("plugin `{0}` is a {1}, not a {2}")]
    WrongKind(String, &'static str, &'static str),
}

#[derive(Clone)]
enum Pre {
    Publisher(publisher::PublisherPre<PluginState>),
    Notifier(notifier::NotifierPre<PluginState>),
    /// A notifier built against `vigil:plugin@0.1.0` (one alert per call).
    NotifierV0_1(v0_1_0::notifier::NotifierPre<PluginState>),
    DebugFields(debug_fields::DebugFieldsPre<PluginState>),
}

enum Live {
    Publisher(publisher::Publisher),
    Notifier(notifier::Notifier),
    NotifierV0_1(v0_1_0::notifier::Notifier),
    DebugFields(debug_fields::DebugFields),
}

struct Instance {
    store: Store<PluginState>,
    live: Live,
}

/// Counters shown in the API and on `/metrics`.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub traps: AtomicU64,
    /// Answers that contradicted the call (a publish report rejecting items
    /// that were not in the batch, or the same item twice): faults, like traps.
    pub invalid_answers: AtomicU64,
    pub restarts: AtomicU64,
    pub call_nanos: AtomicU64,
    pub memory_bytes: Arc<AtomicU64>,
    pub sandbox: Arc<SandboxCounters>,
}

#[derive(Debug)]
struct Health {
    condition: PluginCondition,
    last_error: Option<String>,
    consecutive_failures: u32,
    retry_at: Option<Instant>,
}

/// What `describe` said.
#[derive(Clone, Debug, Serialize)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub description: String,
    pub config_schema: String,
}

/// A loaded plugin.
pub struct Plugin {
    pub name: String,
    pub kind: PluginKind,
    pub description: Description,
    pub sha256: String,
    pub world_version: String,
    pub imports: Vec<String>,
    pub file: PathBuf,
    pub manifest: PluginManifest,
    pub loaded_at_ms: i64,
    pub cache_hit: bool,
    /// Which compiler produced the running code.
    pub tier: Tier,
    /// Shared with the version this one replaced when it only changed tier.
    pub stats: Arc<PluginStats>,
    engine: Arc<PluginEngine>,
    pre: Pre,
    instance: tokio::sync::Mutex<Option<Instance>>,
    health: parking_lot::Mutex<Health>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// The world a component implements, from its exports.
pub fn detect_kind(engine: &wasmtime::Engine, component: &Component) -> Result<PluginKind, String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let has = |n: &str| exports.iter().any(|e| e == n);
    if !has("describe") || !has("configure") {
        return Err(format!(
            "component does not implement a vigil:plugin world (exports: {})",
            if exports.is_empty() {
                "none".to_string()
            } else {
                exports.join(", ")
            }
        ));
    }
    if has("publish") {
        Ok(PluginKind::Publisher)
    } else if has("notify") {
        Ok(PluginKind::Notifier)
    } else if has("fields") && has("backends") {
        Ok(PluginKind::DebugFields)
    } else {
        Err(format!(
            "component exports describe/configure but none of publish, notify, fields (exports: {})",
            exports.join(", ")
        ))
    }
}

/// The component's imports (interface names).
pub fn import_names(engine: &wasmtime::Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .collect()
}

/// The current version of the `vigil:plugin` package (`wit/plugin.wit`).
pub const WORLD_VERSION: &str = "0.2.0";

/// The `vigil:plugin` version a component was built against, from its
/// imports (a plugin that imports nothing of `vigil:plugin` says nothing:
/// its exports decide, see [`Plugin::load`]).
fn world_version(imports: &[String]) -> Option<String> {
    imports.iter().find_map(|i| {
        i.strip_prefix("vigil:plugin/")
            .and_then(|r| r.split_once('@'))
            .map(|(_, v)| v.to_string())
    })
}

fn fault_message(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return match *trap {
            wasmtime::Trap::Interrupt => {
                "call exceeded its time limit (call_timeout_ms) and was interrupted".into()
            }
            wasmtime::Trap::StackOverflow => "stack overflow (call stack exhausted)".into(),
            other => other.to_string(),
        };
    }
    let root = e.root_cause().to_string();
    let first = root.lines().next().unwrap_or("trap").to_string();
    let mut end = first.len().min(1024);
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    first[..end].to_string()
}

impl Plugin {
    /// Loads a compiled component: checks its world, instantiates it in a
    /// sandbox, asks it to describe itself, checks the manifest's config
    /// against its schema and configures it.
    pub async fn load(
        engine: Arc<PluginEngine>,
        name: &str,
        file: PathBuf,
        compiled: Compiled,
        manifest: PluginManifest,
    ) -> Result<Plugin, String> {
        Self::load_with(engine, name, file, compiled, manifest, true, None).await
    }

    /// [`Plugin::load`], optionally without checking and applying the
    /// configuration (`vigil plugin check` inspects plugins that need config),
    /// and optionally carrying over the counters of the version it replaces.
    pub async fn load_with(
        engine: Arc<PluginEngine>,
        name: &str,
        file: PathBuf,
        compiled: Compiled,
        manifest: PluginManifest,
        configure: bool,
        stats: Option<Arc<PluginStats>>,
    ) -> Result<Plugin, String> {
        let Compiled {
            component,
            sha256,
            cache_hit,
            tier,
        } = compiled;
        let kind = detect_kind(engine.engine(tier), &component)?;
        let imports = import_names(engine.engine(tier), &component);
        let instance_pre = engine
            .linker(tier)
            .instantiate_pre(&component)
            .map_err(|e| format!("imports the host does not provide: {e:#}"))?;
        let pre = match kind {
            PluginKind::Publisher => Pre::Publisher(
                publisher::PublisherPre::new(instance_pre)
                    .map_err(|e| format!("does not match the publisher world: {e:#}"))?,
            ),
            // A notifier of either version: the exports say which (0.1.0's
            // `notify` takes one alert, 0.2.0's a group).
            PluginKind::Notifier => match notifier::NotifierPre::new(instance_pre.clone()) {
                Ok(pre) => Pre::Notifier(pre),
                Err(current) => match v0_1_0::notifier::NotifierPre::new(instance_pre) {
                    Ok(pre) => Pre::NotifierV0_1(pre),
                    Err(_) => {
                        return Err(format!(
                            "does not match the notifier world (0.2.0 or 0.1.0): {current:#}"
                        ))
                    }
                },
            },
            PluginKind::DebugFields => Pre::DebugFields(
                debug_fields::DebugFieldsPre::new(instance_pre)
                    .map_err(|e| format!("does not match the debug-fields world: {e:#}"))?,
            ),
        };
        let mut plugin = Plugin {
            name: name.to_string(),
            kind,
            description: Description {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                config_schema: "{}".into(),
            },
            sha256,
            world_version: match (&pre, world_version(&imports)) {
                (Pre::NotifierV0_1(_), _) => "0.1.0".to_string(),
                (Pre::Notifier(_), _) => WORLD_VERSION.to_string(),
                (_, Some(v)) => v,
                (_, None) => WORLD_VERSION.to_string(),
            },
            imports,
            file,
            manifest,
            loaded_at_ms: chrono::Utc::now().timestamp_millis(),
            cache_hit,
            tier,
            stats: stats.unwrap_or_default(),
            engine,
            pre,
            instance: tokio::sync::Mutex::new(None),
            health: parking_lot::Mutex::new(Health {
                condition: PluginCondition::Loaded,
                last_error: None,
                consecutive_failures: 0,
                retry_at: None,
            }),
        };
        let mut instance = plugin.instantiate().await?;
        let info = match plugin.guarded(&mut instance, Op::Describe).await {
            Ok(Answer::Described(d)) => d,
            Ok(_) => return Err("describe answered out of turn".into()),
            Err(e) => return Err(format!("describe failed: {e}")),
        };
        if info.kind != kind {
            return Err(format!(
                "describe() says it is a {}, but it implements the {} world",
                info.kind.as_str(),
                kind.as_str()
            ));
        }
        plugin.description = info.description;
        // A notifier without `[config]` is a template: notification channels
        // configure their own copies of it (`Plugin::with_config`).
        let template = kind == PluginKind::Notifier && plugin.manifest.config.is_empty();
        if configure && !template {
            if let Err(errors) = check_config(
                &plugin.description.config_schema,
                &plugin.manifest.config_json(),
            ) {
                return Err(format!("invalid configuration: {}", errors.join("; ")));
            }
            plugin.configure(&mut instance).await?;
        }
        *plugin.instance.get_mut() = Some(instance);
        Ok(plugin)
    }

    /// A copy of this plugin configured with `config` instead of its
    /// manifest's `[config]` (a notification channel's settings): the same
    /// compiled component, capabilities (`allowed_hosts`, memory, time) and
    /// schema; its own instance and counters. The config is checked against
    /// the plugin's schema first.
    pub async fn with_config(
        &self,
        config: std::collections::BTreeMap<String, super::manifest::ConfigValue>,
    ) -> Result<Plugin, String> {
        let manifest = PluginManifest {
            capabilities: self.manifest.capabilities.clone(),
            delivery: self.manifest.delivery.clone(),
            config,
        };
        if let Err(errors) = check_config(&self.description.config_schema, &manifest.config_json())
        {
            return Err(format!("invalid configuration: {}", errors.join("; ")));
        }
        let mut copy = Plugin {
            name: self.name.clone(),
            kind: self.kind,
            description: self.description.clone(),
            sha256: self.sha256.clone(),
            world_version: self.world_version.clone(),
            imports: self.imports.clone(),
            file: self.file.clone(),
            manifest,
            loaded_at_ms: chrono::Utc::now().timestamp_millis(),
            cache_hit: self.cache_hit,
            tier: self.tier,
            stats: Arc::default(),
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            instance: tokio::sync::Mutex::new(None),
            health: parking_lot::Mutex::new(Health {
                condition: PluginCondition::Loaded,
                last_error: None,
                consecutive_failures: 0,
                retry_at: None,
            }),
        };
        let mut instance = copy.instantiate().await?;
        copy.configure(&mut instance).await?;
        *copy.instance.get_mut() = Some(instance);
        Ok(copy)
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.manifest.capabilities.call_timeout_ms)
    }

    async fn instantiate(&self) -> Result<Instance, String> {
        let state = PluginState::new(
            Arc::from(self.name.as_str()),
            &self.manifest.capabilities,
            self.stats.sandbox.clone(),
            self.stats.memory_bytes.clone(),
        );
        let mut store = Store::new(self.engine.engine(self.tier), state);
        store.limiter(|s| &mut s.cap);
        store.epoch_deadline_callback(|ctx| match ctx.data().deadline {
            Some(deadline) if Instant::now() >= deadline => Ok(UpdateDeadline::Interrupt),
            _ => Ok(UpdateDeadline::Yield(1)),
        });
        store.set_epoch_deadline(1);
        store.data_mut().deadline = Some(Instant::now() + self.call_timeout());
        let live = match &self.pre {
            Pre::Publisher(p) => p.instantiate_async(&mut store).await.map(Live::Publisher),
            Pre::Notifier(p) => p.instantiate_async(&mut store).await.map(Live::Notifier),
            Pre::NotifierV0_1(p) => p
                .instantiate_async(&mut store)
                .await
                .map(Live::NotifierV0_1),
            Pre::DebugFields(p) => p.instantiate_async(&mut store).await.map(Live::DebugFields),
        }
        .map_err(|e| format!("instantiation failed: {}", fault_message(&e)))?;
        Ok(Instance { store, live })
    }

    async fn configure(&self, instance: &mut Instance) -> Result<(), String> {
        let entries: Vec<types::ConfigEntry> = self
            .manifest
            .config
            .iter()
            .map(|(k, v)| types::ConfigEntry {
                key: k.clone(),
                value: v.as_plugin_string(),
            })
            .collect();
        match self.guarded(instance, Op::Configure(&entries)).await {
            Ok(Answer::Configured(Ok(()))) => Ok(()),
            Ok(Answer::Configured(Err(e))) => {
                Err(format!("configure refused the configuration: {e}"))
            }
            Ok(_) => Err("configure answered out of turn".into()),
            Err(e) => Err(format!("configure trapped: {e}")),
        }
    }

    /// Runs one export on an instance under the call deadline; any trap is a fault.
    async fn guarded(&self, instance: &mut Instance, op: Op<'_>) -> Result<Answer, String> {
        let timeout = self.call_timeout();
        instance.store.data_mut().deadline = Some(Instant::now() + timeout);
        instance.store.data_mut().cap.refused = None;
        instance.store.set_epoch_deadline(1);
        // The epoch deadline interrupts guest code; the outer timeout also
        // covers time spent waiting in host calls (outbound HTTP).
        match tokio::time::timeout(timeout + Duration::from_millis(250), run(instance, op)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let mut message = fault_message(&e);
                let data = instance.store.data_mut();
                let logged = data.last_error_log.take();
                let cap = data.cap.take_refusal().or_else(|| {
                    logged
                        .as_deref()
                        .and_then(|l| data.cap.explain_oversized_allocation(l))
                });
                if let Some(cap) = cap {
                    message = format!("{cap}: {message}");
                }
                if let Some(logged) = logged {
                    message.push_str(&format!(" (plugin logged: {logged})"));
                }
                Err(message)
            }
            Err(_) => Err(format!(
                "call exceeded its time limit of {} ms",
                timeout.as_millis()
            )),
        }
    }

    /// Current supervision state and last error.
    pub fn condition(&self) -> (PluginCondition, Option<String>, u32) {
        let h = self.health.lock();
        (h.condition, h.last_error.clone(), h.consecutive_failures)
    }

    fn record_fault(&self, message: &str) {
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        self.record_failure(message);
    }

    /// A failure that counts towards quarantine (a trap, or a lying answer).
    fn record_failure(&self, message: &str) {
        let mut h = self.health.lock();
        h.consecutive_failures += 1;
        h.last_error = Some(message.to_string());
        if h.consecutive_failures >= QUARANTINE_AFTER {
            if h.condition != PluginCondition::Quarantined {
                tracing::error!(plugin = %self.name, failures = h.consecutive_failures, error = message, "plugin quarantined");
            }
            h.condition = PluginCondition::Quarantined;
            h.retry_at = None;
        } else {
            let backoff = BACKOFF_START
                .saturating_mul(1 << (h.consecutive_failures - 1).min(16))
                .min(BACKOFF_MAX);
            h.retry_at = Some(Instant::now() + backoff);
            tracing::warn!(plugin = %self.name, error = message, retry_in_ms = backoff.as_millis() as u64, "plugin instance dropped after a fault");
        }
    }

    fn record_success(&self) {
        let mut h = self.health.lock();
        h.consecutive_failures = 0;
        h.retry_at = None;
        if h.condition != PluginCondition::Quarantined {
            h.condition = PluginCondition::Loaded;
        }
    }

    /// Takes the live instance, re-creating it if a fault dropped it.
    async fn ready_instance<'a>(
        &self,
        slot: &'a mut Option<Instance>,
    ) -> Result<&'a mut Instance, CallError> {
        {
            let h = self.health.lock();
            if h.condition == PluginCondition::Quarantined {
                return Err(CallError::Quarantined(
                    self.name.clone(),
                    h.last_error.clone().unwrap_or_default(),
                ));
            }
            if slot.is_none() {
                if let Some(at) = h.retry_at {
                    let now = Instant::now();
                    if at > now {
                        return Err(CallError::BackingOff(self.name.clone(), at - now));
                    }
                }
            }
        }
        if slot.is_none() {
            self.stats.restarts.fetch_add(1, Ordering::Relaxed);
            let fresh = async {
                let mut inst = self.instantiate().await?;
                self.configure(&mut inst).await?;
                Ok::<_, String>(inst)
            }
            .await;
            match fresh {
                Ok(inst) => *slot = Some(inst),
                Err(e) => {
                    self.record_fault(&e);
                    return Err(CallError::Fault(self.name.clone(), e));
                }
            }
        }
        slot.as_mut()
            .ok_or_else(|| CallError::Fault(self.name.clone(), "no instance".into()))
    }

    async fn call(&self, op: Op<'_>) -> Result<Answer, CallError> {
        let mut slot = self.instance.lock().await;
        let instance = self.ready_instance(&mut slot).await?;
        let started = Instant::now();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = match self.guarded(instance, op).await {
            Ok(answer) => match check_answer(op, &answer) {
                Ok(()) => Ok(answer),
                Err(lie) => Err(Failure::InvalidAnswer(lie)),
            },
            Err(trap) => Err(Failure::Trap(trap)),
        };
        self.stats
            .call_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(v) => {
                self.record_success();
                Ok(v)
            }
            Err(failure) => {
                // Never enter a trapped instance again, nor trust one that
                // contradicted its call; repeated lies quarantine a plugin
                // like repeated traps, and the items are retried.
                *slot = None;
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let message = match failure {
                    Failure::Trap(message) => {
                        self.record_fault(&message);
                        message
                    }
                    Failure::InvalidAnswer(lie) => {
                        let message = format!("invalid answer: {lie}");
                        self.stats.invalid_answers.fetch_add(1, Ordering::Relaxed);
                        self.record_failure(&message);
                        message
                    }
                };
                Err(CallError::Fault(self.name.clone(), message))
            }
        }
    }

    /// Hands a batch to a publisher.
    pub async fn publish(
        &self,
        batch: &types::Batch,
    ) -> Result<Result<types::PublishReport, types::DeliveryError>, CallError> {
        if self.kind != PluginKind::Publisher {
            return Err(CallError::WrongKind(
                self.name.clone(),
                self.kind.as_str(),
                "publisher",
            ));
        }
        let Answer::Published(result) = self.call(Op::Publish(batch)).await? else {
            return Err(CallError::Fault(
                self.name.clone(),
                "publish answered out of turn".into(),
            ));
        };
        match result {
            Ok(mut report) => {
                for r in &mut report.rejected {
                    clip_string(&mut r.reason);
                }
                Ok(Ok(report))
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Ok(Err(e))
            }
        }
    }

    /// Hands a notification (a group of alerts) to a notifier; a 0.1.0
    /// notifier gets its alerts one by one. The outcome carries the status of
    /// the last HTTP response the plugin received, as the host saw it.
    pub async fn notify(&self, notification: &types::Notification) -> Result<Notified, CallError> {
        if self.kind != PluginKind::Notifier {
            return Err(CallError::WrongKind(
                self.name.clone(),
                self.kind.as_str(),
                "notifier",
            ));
        }
        match self.call(Op::Notify(notification)).await? {
            Answer::Notified(mut n) => {
                match &mut n.result {
                    Ok(r) => clip_string(&mut r.detail),
                    Err(types::DeliveryError::Permanent(m)) => clip_string(m),
                    Err(types::DeliveryError::Retryable(r)) => clip_string(&mut r.message),
                }
                Ok(n)
            }
            _ => Err(CallError::Fault(
                self.name.clone(),
                "notify answered out of turn".into(),
            )),
        }
    }

    /// Asks a debug-field provider for an execution's fields.
    pub async fn fields(
        &self,
        execution: &types::ExecutionRecord,
    ) -> Result<Result<Vec<types::DebugField>, String>, CallError> {
        if self.kind != PluginKind::DebugFields {
            return Err(CallError::WrongKind(
                self.name.clone(),
                self.kind.as_str(),
                "debug-fields",
            ));
        }
        match self.call(Op::Fields(execution)).await? {
            Answer::Fields(r) => Ok(r),
            _ => Err(CallError::Fault(
                self.name.clone(),
                "fields answered out of turn".into(),
            )),
        }
    }

    /// Asks a debug-field provider which backends it serves.
    pub async fn backends(&self) -> Result<Vec<String>, CallError> {
        if self.kind != PluginKind::DebugFields {
            return Err(CallError::WrongKind(
                self.name.clone(),
                self.kind.as_str(),
                "debug-fields",
            ));
        }
        match self.call(Op::Backends).await? {
            Answer::Backends(r) => Ok(r),
            _ => Err(CallError::Fault(
                self.name.clone(),
                "backends answered out of turn".into(),
            )),
        }
    }

    /// Creates (and drops) one fresh instance and returns how long
    /// instantiation took; for the instantiation benchmark.
    #[doc(hidden)]
    pub async fn time_instantiation(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let instance = self.instantiate().await?;
        let elapsed = started.elapsed();
        drop(instance);
        Ok(elapsed)
    }

    /// Waits for an in-flight call to finish and drops the instance.
    pub async fn drain(&self) {
        let mut slot = self.instance.lock().await;
        *slot = None;
    }
}

fn clip_string(s: &mut String) {
    if s.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// How a call failed.
enum Failure {
    /// A trap or a blown deadline.
    Trap(String),
    /// An answer that contradicts the call.
    InvalidAnswer(String),
}

/// Checks that an answer fits the call it answers: a publish report may
/// reject only items of its batch, each at most once.
fn check_answer(op: Op<'_>, answer: &Answer) -> Result<(), String> {
    let (Op::Publish(batch), Answer::Published(Ok(report))) = (op, answer) else {
        return Ok(());
    };
    if report.rejected.is_empty() {
        return Ok(());
    }
    let items = batch.samples.seqs.len() + batch.events.len();
    if report.rejected.len() > items {
        return Err(format!(
            "publish returned {} rejections for a batch of {items} items",
            report.rejected.len()
        ));
    }
    let in_batch: std::collections::HashSet<u64> = batch
        .samples
        .seqs
        .iter()
        .copied()
        .chain(batch.events.iter().map(|e| e.seq))
        .collect();
    let mut seen = std::collections::HashSet::with_capacity(report.rejected.len());
    for r in &report.rejected {
        if !in_batch.contains(&r.seq) {
            return Err(format!(
                "publish rejected seq {}, which was not in the batch",
                r.seq
            ));
        }
        if !seen.insert(r.seq) {
            return Err(format!("publish rejected seq {} more than once", r.seq));
        }
    }
    Ok(())
}

/// What a notifier answered, and what its receiver answered it.
#[derive(Clone, Debug)]
pub struct Notified {
    pub result: Result<types::Receipt, types::DeliveryError>,
    /// Status of the last HTTP response the plugin received during the call.
    pub response_status: Option<u16>,
}

/// One call into a plugin's exports.
#[derive(Clone, Copy)]
enum Op<'b> {
    Describe,
    Configure(&'b [types::ConfigEntry]),
    Publish(&'b types::Batch),
    Notify(&'b types::Notification),
    Fields(&'b types::ExecutionRecord),
    Backends,
}

/// What an export answered.
enum Answer {
    Described(Described),
    Configured(Result<(), String>),
    Published(Result<types::PublishReport, types::DeliveryError>),
    Notified(Notified),
    Fields(Result<Vec<types::DebugField>, String>),
    Backends(Vec<String>),
}

async fn run(inst: &mut Instance, op: Op<'_>) -> wasmtime::Result<Answer> {
    let store = &mut inst.store;
    Ok(match (op, &inst.live) {
        (Op::Describe, _) => Answer::Described(describe(inst).await?),
        (Op::Configure(entries), Live::Publisher(p)) => {
            Answer::Configured(p.call_configure(store, entries).await?)
        }
        (Op::Configure(entries), Live::Notifier(p)) => {
            Answer::Configured(p.call_configure(store, entries).await?)
        }
        (Op::Configure(entries), Live::NotifierV0_1(p)) => {
            let entries: Vec<v0_1_0::types::ConfigEntry> = entries
                .iter()
                .map(super::versions::config_entry_v0_1)
                .collect();
            Answer::Configured(p.call_configure(store, &entries).await?)
        }
        (Op::Configure(entries), Live::DebugFields(p)) => {
            Answer::Configured(p.call_configure(store, entries).await?)
        }
        (Op::Publish(batch), Live::Publisher(p)) => {
            Answer::Published(p.call_publish(store, batch).await?)
        }
        (Op::Notify(n), Live::Notifier(p)) => {
            store.data().reset_response_status();
            let result = p.call_notify(&mut *store, n).await?;
            Answer::Notified(Notified {
                result,
                response_status: store.data().response_status(),
            })
        }
        (Op::Notify(n), Live::NotifierV0_1(p)) => {
            // One call per alert; the first failure fails the notification
            // (it is retried whole: deliveries are at-least-once).
            store.data().reset_response_status();
            let mut receipts = Vec::with_capacity(n.alerts.len());
            let mut failed = None;
            for alert in super::versions::alerts_v0_1(n) {
                match p.call_notify(&mut *store, &alert).await? {
                    Ok(r) => receipts.push(super::versions::receipt_from_v0_1(r)),
                    Err(e) => {
                        failed = Some(super::versions::delivery_error_from_v0_1(e));
                        break;
                    }
                }
            }
            Answer::Notified(Notified {
                result: match failed {
                    Some(e) => Err(e),
                    None => Ok(super::versions::join_receipts(receipts)),
                },
                response_status: store.data().response_status(),
            })
        }
        (Op::Fields(e), Live::DebugFields(p)) => Answer::Fields(p.call_fields(store, e).await?),
        (Op::Backends, Live::DebugFields(p)) => Answer::Backends(p.call_backends(store).await?),
        _ => {
            return Err(wasmtime::Error::msg(
                "this plugin does not export that function",
            ))
        }
    })
}

struct Described {
    kind: PluginKind,
    description: Description,
}

async fn describe(inst: &mut Instance) -> wasmtime::Result<Described> {
    let info = match &inst.live {
        Live::Publisher(p) => p.call_describe(&mut inst.store).await?,
        Live::Notifier(p) => p.call_describe(&mut inst.store).await?,
        Live::NotifierV0_1(p) => {
            super::versions::plugin_info_from_v0_1(p.call_describe(&mut inst.store).await?)
        }
        Live::DebugFields(p) => p.call_describe(&mut inst.store).await?,
    };
    let kind = match info.kind {
        types::PluginKind::Publisher => PluginKind::Publisher,
        types::PluginKind::Notifier => PluginKind::Notifier,
        types::PluginKind::DebugFields => PluginKind::DebugFields,
    };
    let mut description = Description {
        name: info.name,
        version: info.version,
        description: info.description,
        config_schema: info.config_schema,
    };
    for s in [
        &mut description.name,
        &mut description.version,
        &mut description.description,
    ] {
        clip_string(s);
    }
    if description.config_schema.len() > 64 * 1024 {
        return Err(wasmtime::Error::msg("config schema larger than 64 KiB"));
    }
    Ok(Described { kind, description })
}
