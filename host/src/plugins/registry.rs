//! The plugin directory: `<name>.wasm` plus an optional `<name>.toml`.
//! Loaded at start and watched. A new file is compiled, checked against the
//! worlds, configured and started; a replaced file is compiled and checked
//! first and swapped in between calls, while a bad replacement leaves the old
//! version running with the reason recorded; a removed file is drained and
//! stopped. A `.wasm` file that is complete (renamed into place, or closed
//! after writing) starts compiling at once, while the watcher waits for the
//! burst of events to settle; the reload after the settle uses that compile
//! when the file still has the same content.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::engine::{Compiled, EngineError, PluginEngine, Tier};
use super::manifest::PluginManifest;
use super::plugin::{Plugin, PluginCondition};

/// How long the watcher waits for a burst of file events to settle.
const SETTLE: Duration = Duration::from_millis(25);

/// A directory entry's state: the running plugin and the last load problem.
#[derive(Default)]
pub struct PluginSlot {
    pub current: Option<Arc<Plugin>>,
    pub last_load_error: Option<String>,
    /// The file and manifest that last failed to load, so an unchanged bad
    /// plugin is not recompiled on every directory event.
    pub failed: Option<(String, PluginManifest)>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    Loaded,
    Replaced,
    Unchanged,
    Removed,
    /// The new file was bad; `kept_old` says whether a previous version runs on.
    Rejected {
        error: String,
        kept_old: bool,
    },
}

/// What has to happen before a freshly loaded plugin is reported `loaded`
/// (for a publisher: its delivery cursor is fixed at the head of the log, so
/// everything committed after a user sees `loaded` reaches it).
#[async_trait::async_trait]
pub trait ServingHook: Send + Sync {
    async fn before_serving(&self, plugin: &Plugin);
}

/// Every plugin of the directory.
pub struct PluginRegistry {
    engine: Arc<PluginEngine>,
    dir: PathBuf,
    slots: RwLock<BTreeMap<String, PluginSlot>>,
    /// Bumped whenever a running plugin is added, replaced or removed.
    changes: tokio::sync::watch::Sender<u64>,
    serving_hook: std::sync::OnceLock<Arc<dyn ServingHook>>,
    reload_lock: tokio::sync::Mutex<()>,
    /// Compiles started while the directory settles: name → (sha256, compile).
    prefetched: parking_lot::Mutex<HashMap<String, Prefetch>>,
}

type Prefetch = (
    String,
    tokio::task::JoinHandle<Result<Compiled, EngineError>>,
);

/// Whether a directory event can mean new content. Opening or reading a file
/// is not a change: reloading reads the plugin's files, and counting those
/// reads as changes reloaded every plugin again every settle period, forever.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether after the event the (last) path holds a whole file: renamed into
/// place, or closed after writing.
fn leaves_complete_file(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

/// Plugin names are file stems: lower-case letters, digits, `-` and `_`.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn plugin_name_of(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    valid_plugin_name(stem).then(|| stem.to_string())
}

impl PluginRegistry {
    pub fn new(engine: Arc<PluginEngine>, dir: PathBuf) -> Self {
        PluginRegistry {
            engine,
            dir,
            slots: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
            serving_hook: std::sync::OnceLock::new(),
            reload_lock: tokio::sync::Mutex::new(()),
            prefetched: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets what runs before a loaded plugin is reported `loaded` (once).
    pub fn set_serving_hook(&self, hook: Arc<dyn ServingHook>) {
        let _ = self.serving_hook.set(hook);
    }

    /// A receiver that changes whenever a running plugin is added, replaced
    /// (a new file, a reload, a tier change) or removed.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The running plugin of that name.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.slots.read().get(name).and_then(|s| s.current.clone())
    }

    /// Running plugins, by name.
    pub fn running(&self) -> Vec<Arc<Plugin>> {
        self.slots
            .read()
            .values()
            .filter_map(|s| s.current.clone())
            .collect()
    }

    /// A snapshot for status answers: `(name, plugin, last load error)`.
    pub fn snapshot(&self) -> Vec<(String, Option<Arc<Plugin>>, Option<String>)> {
        self.slots
            .read()
            .iter()
            .map(|(n, s)| (n.clone(), s.current.clone(), s.last_load_error.clone()))
            .collect()
    }

    /// Loads every plugin in the directory.
    pub async fn load_all(self: &Arc<Self>) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("wasm"))
            .filter_map(|p| plugin_name_of(&p))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let outcome = self.reload(&name, false).await;
            tracing::info!(plugin = %name, outcome = ?outcome, "plugin loaded at start");
        }
        Ok(())
    }

    /// Loads, replaces or removes `name` from what is on disk now.
    /// `force` re-creates the plugin even when the file did not change
    /// (and so lifts a quarantine).
    pub async fn reload(self: &Arc<Self>, name: &str, force: bool) -> ReloadOutcome {
        let _serial = self.reload_lock.lock().await;
        let prefetched = self.prefetched.lock().remove(name);
        let wasm = self.dir.join(format!("{name}.wasm"));
        let toml = self.dir.join(format!("{name}.toml"));
        let bytes = match tokio::fs::read(&wasm).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let old = self.slots.write().remove(name);
                if let Some(plugin) = old.and_then(|s| s.current) {
                    self.changed();
                    plugin.drain().await;
                    tracing::info!(plugin = %name, "plugin removed and drained");
                    return ReloadOutcome::Removed;
                }
                return ReloadOutcome::Unchanged;
            }
            Err(e) => return self.reject(name, format!("reading {}: {e}", wasm.display()), None),
        };
        let manifest = match tokio::fs::read_to_string(&toml).await {
            Ok(text) => {
                PluginManifest::parse(&text, &format!("{name}.toml"), |k| std::env::var(k).ok())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PluginManifest::default()),
            Err(e) => return self.reject(name, format!("reading {}: {e}", toml.display()), None),
        };
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => return self.reject(name, e.0, None),
        };
        let current = self.get(name);
        let sha = super::sha256_hex(&bytes);
        if !force {
            if let Some(cur) = &current {
                if cur.sha256 == sha && cur.manifest == manifest {
                    // The disk matches what runs again: an earlier rejection is moot.
                    if let Some(slot) = self.slots.write().get_mut(name) {
                        slot.last_load_error = None;
                        slot.failed = None;
                    }
                    return ReloadOutcome::Unchanged;
                }
            }
            let slots = self.slots.read();
            let failed_before = slots.get(name).and_then(|s| s.failed.as_ref()).is_some_and(
                |(failed_sha, failed_manifest)| *failed_sha == sha && *failed_manifest == manifest,
            );
            if failed_before {
                return ReloadOutcome::Unchanged;
            }
        }
        let bytes = Arc::new(bytes);
        let engine = self.engine.clone();
        let source = bytes.clone();
        let hashed = sha.clone();
        let compiled = match prefetched {
            Some((prefetched_sha, compile)) if prefetched_sha == sha => compile.await,
            _ => tokio::task::spawn_blocking(move || engine.compile_hashed(&source, hashed)).await,
        };
        let compiled = match compiled {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return self.reject(name, e.0, Some((sha, manifest))),
            Err(e) => {
                return self.reject(
                    name,
                    format!("compilation crashed: {e}"),
                    Some((sha, manifest)),
                )
            }
        };
        let tier = compiled.tier;
        let loaded = Plugin::load(
            self.engine.clone(),
            name,
            wasm.clone(),
            compiled,
            manifest.clone(),
        )
        .await;
        match loaded {
            Ok(plugin) => {
                if tier == Tier::Baseline {
                    self.tier_up_later(name, bytes, manifest);
                }
                if let Some(hook) = self.serving_hook.get() {
                    hook.before_serving(&plugin).await;
                }
                let plugin = Arc::new(plugin);
                let old = {
                    let mut slots = self.slots.write();
                    let slot = slots.entry(name.to_string()).or_default();
                    slot.last_load_error = None;
                    slot.failed = None;
                    slot.current.replace(plugin.clone())
                };
                self.changed();
                tracing::info!(plugin = %name, kind = plugin.kind.as_str(), version = %plugin.description.version, sha256 = %plugin.sha256, "plugin running");
                match old {
                    Some(old) => {
                        old.drain().await;
                        ReloadOutcome::Replaced
                    }
                    None => ReloadOutcome::Loaded,
                }
            }
            Err(e) => self.reject(name, e, Some((sha, manifest))),
        }
    }

    /// Compiles the optimised tier in the background and swaps it in between
    /// calls, unless the plugin changed or was quarantined meanwhile.
    fn tier_up_later(self: &Arc<Self>, name: &str, bytes: Arc<Vec<u8>>, manifest: PluginManifest) {
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let engine = this.engine.clone();
            let compiled = match tokio::task::spawn_blocking(move || {
                engine.compile_optimized(&bytes)
            })
            .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(plugin = %name, error = %e, "optimised compile failed; staying on the baseline tier");
                    return;
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "optimised compile crashed; staying on the baseline tier");
                    return;
                }
            };
            let _serial = this.reload_lock.lock().await;
            let Some(current) = this.get(&name) else {
                return;
            };
            if current.sha256 != compiled.sha256
                || current.manifest != manifest
                || current.tier != Tier::Baseline
                || current.condition().0 == PluginCondition::Quarantined
            {
                return;
            }
            let loaded = Plugin::load_with(
                this.engine.clone(),
                &name,
                current.file.clone(),
                compiled,
                manifest,
                true,
                Some(current.stats.clone()),
            )
            .await;
            match loaded {
                Ok(optimized) => {
                    let old = this
                        .slots
                        .write()
                        .get_mut(&name)
                        .and_then(|slot| slot.current.replace(Arc::new(optimized)));
                    this.changed();
                    if let Some(old) = old {
                        old.drain().await;
                    }
                    tracing::info!(plugin = %name, "plugin moved to the optimised tier");
                }
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "optimised tier failed to load; staying on the baseline tier");
                }
            }
        });
    }

    fn reject(
        &self,
        name: &str,
        error: String,
        failed: Option<(String, PluginManifest)>,
    ) -> ReloadOutcome {
        let mut slots = self.slots.write();
        let slot = slots.entry(name.to_string()).or_default();
        let kept_old = slot.current.is_some();
        let message = if kept_old {
            format!("new version rejected, previous version keeps running: {error}")
        } else {
            error.clone()
        };
        tracing::warn!(plugin = %name, error = %message, "plugin load failed");
        slot.last_load_error = Some(message);
        slot.failed = failed;
        ReloadOutcome::Rejected { error, kept_old }
    }

    /// Counts for readiness: `(loaded, failed, quarantined)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for (_, plugin, _) in self.snapshot() {
            match plugin.map(|p| p.condition().0) {
                Some(PluginCondition::Quarantined) => counts.2 += 1,
                Some(_) => counts.0 += 1,
                None => counts.1 += 1,
            }
        }
        counts
    }

    /// Starts compiling `path` if it is a plugin's `.wasm` whose content
    /// differs from what runs and from what is being compiled already. Off
    /// the watcher's task, so the settle period is not stretched; a compile
    /// registered after its reload already ran is simply never used.
    fn prefetch(self: &Arc<Self>, path: &Path) {
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            return;
        }
        let Some(name) = plugin_name_of(path) else {
            return;
        };
        let this = self.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let Ok(bytes) = std::fs::read(&path) else {
                return;
            };
            let sha = super::sha256_hex(&bytes);
            if this.get(&name).is_some_and(|p| p.sha256 == sha) {
                return;
            }
            let mut prefetched = this.prefetched.lock();
            if prefetched
                .get(&name)
                .is_some_and(|(pending, _)| *pending == sha)
            {
                return;
            }
            let engine = this.engine.clone();
            let hashed = sha.clone();
            let compile =
                tokio::task::spawn_blocking(move || engine.compile_hashed(&bytes, hashed));
            prefetched.insert(name, (sha, compile));
        });
    }

    /// Watches the directory until `stop` fires; reloads what changes.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        // (path, whether the event leaves a complete file at that path)
        let (tx, mut rx) = mpsc::unbounded_channel::<(PathBuf, bool)>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !changes_content(&event.kind) {
                    return;
                }
                let complete = leaves_complete_file(&event.kind);
                let last = event.paths.len().saturating_sub(1);
                for (i, path) in event.paths.into_iter().enumerate() {
                    let _ = tx.send((path, complete && i == last));
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the plugin directory; hot reload is off");
                return;
            }
        };
        if let Err(e) = watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot watch the plugin directory; hot reload is off");
            return;
        }
        loop {
            let (first, complete) = tokio::select! {
                p = rx.recv() => match p { Some(p) => p, None => return },
                _ = stop.wait_for(|s| *s) => return,
            };
            let mut names = std::collections::BTreeSet::new();
            names.extend(plugin_name_of(&first));
            if complete {
                self.prefetch(&first);
            }
            // Let a burst of events (copy, rename, manifest) settle; compile
            // what is complete meanwhile.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some((p, complete))) => {
                        names.extend(plugin_name_of(&p));
                        if complete {
                            self.prefetch(&p);
                        }
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            for name in names {
                let outcome = self.reload(&name, false).await;
                if outcome != ReloadOutcome::Unchanged {
                    tracing::info!(plugin = %name, outcome = ?outcome, "plugin directory changed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind,
        RenameMode,
    };

    use super::*;

    #[test]
    fn reading_a_plugin_is_not_a_change() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!changes_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ] {
            assert!(changes_content(&kind), "{kind:?}");
        }
    }

    #[test]
    fn a_file_is_complete_once_renamed_into_place_or_closed_after_writing() {
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
        ] {
            assert!(leaves_complete_file(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(!leaves_complete_file(&kind), "{kind:?}");
        }
    }
}
