//! The wasmtime engines plugins run on: component model, pooling allocator,
//! epoch interruption (a ticker thread advances the epoch), a linker providing
//! WASI, `wasi:http` and the `vigil:plugin/host` interface, and compiled
//! components cached on disk by content hash and the engine's compatibility
//! hash. Two tiers: a component not in the cache is first compiled by Winch
//! (a baseline compiler, several times faster to compile) so it serves at once,
//! while Cranelift compiles the optimised version in the background.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::sandbox::PluginState;

/// How often the epoch advances; call deadlines are checked at this grain.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Largest memory any plugin may be granted (the pooling slot size).
pub const MAX_PLUGIN_MEMORY: usize = 1024 * 1024 * 1024;

/// A failure to set up or compile.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// Which compiler produced a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Winch: compiled fast, runs slower; replaced by `Optimized` in the background.
    Baseline,
    /// Cranelift: the steady state.
    Optimized,
}

struct EngineTier {
    engine: Engine,
    linker: Linker<PluginState>,
}

/// The shared engines and linkers.
pub struct PluginEngine {
    optimized: EngineTier,
    baseline: Option<EngineTier>,
    cache_dir: Option<PathBuf>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// A compiled component and where it came from.
pub struct Compiled {
    pub component: Component,
    pub sha256: String,
    pub cache_hit: bool,
    pub tier: Tier,
}

fn engine_tier(strategy: wasmtime::Strategy, pooling: bool) -> Result<EngineTier, EngineError> {
    let mut config = Config::new();
    config
        .strategy(strategy)
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(1024 * 1024)
        .async_stack_size(2 * 1024 * 1024);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(1024)
            .total_memories(256)
            .total_tables(512)
            .total_stacks(256)
            .max_memories_per_component(8)
            .max_memory_size(MAX_PLUGIN_MEMORY);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    let engine = Engine::new(&config)
        .map_err(|e| EngineError(format!("creating the wasmtime engine: {e:#}")))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| EngineError(format!("linking WASI: {e:#}")))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| EngineError(format!("linking wasi:http: {e:#}")))?;
    bindings::host::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |s| s)
        .map_err(|e| EngineError(format!("linking vigil:plugin/host: {e:#}")))?;
    Ok(EngineTier { engine, linker })
}

impl PluginEngine {
    /// Builds the engines; `cache_dir` holds compiled artefacts (None: no
    /// cache). `tiered` adds the Winch baseline tier for fast first loads.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, EngineError> {
        Self::with_tiers(cache_dir, true)
    }

    /// [`PluginEngine::new`] choosing whether to use the baseline tier.
    pub fn with_tiers(cache_dir: Option<PathBuf>, tiered: bool) -> Result<Self, EngineError> {
        let optimized = engine_tier(wasmtime::Strategy::Cranelift, true)?;
        // Baseline instances are short-lived: on-demand allocation keeps the
        // second engine from reserving another pool.
        let baseline = if tiered {
            Some(engine_tier(wasmtime::Strategy::Winch, false)?)
        } else {
            None
        };
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError(format!("creating the plugin cache {}: {e}", dir.display()))
            })?;
        }
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let engines: Vec<Engine> = std::iter::once(optimized.engine.clone())
            .chain(baseline.as_ref().map(|b| b.engine.clone()))
            .collect();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| EngineError(format!("starting the epoch ticker: {e}")))?;
        Ok(PluginEngine {
            optimized,
            baseline,
            cache_dir,
            stop_ticker,
        })
    }

    fn tier(&self, tier: Tier) -> &EngineTier {
        match (tier, &self.baseline) {
            (Tier::Baseline, Some(b)) => b,
            _ => &self.optimized,
        }
    }

    /// The engine that runs components of `tier`.
    pub fn engine(&self, tier: Tier) -> &Engine {
        &self.tier(tier).engine
    }

    /// The linker for components of `tier`.
    pub fn linker(&self, tier: Tier) -> &Linker<PluginState> {
        &self.tier(tier).linker
    }

    fn engine_hash(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.optimized
            .engine
            .precompile_compatibility_hash()
            .hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// The fastest way to a serving component: the optimised artefact from
    /// the cache, else a baseline compile (else an optimised compile when
    /// there is no baseline tier).
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, EngineError> {
        if let Some(hit) = self.cached(bytes) {
            return Ok(hit);
        }
        match &self.baseline {
            Some(b) => {
                check_header(bytes)?;
                let component = Component::new(&b.engine, bytes).map_err(|e| {
                    EngineError(format!("not a valid WebAssembly component: {e:#}"))
                })?;
                Ok(Compiled {
                    component,
                    sha256: hex::encode(Sha256::digest(bytes)),
                    cache_hit: false,
                    tier: Tier::Baseline,
                })
            }
            None => self.compile_optimized(bytes),
        }
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_hash())))
    }

    fn cached(&self, bytes: &[u8]) -> Option<Compiled> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let path = self.cache_path(&sha256)?;
        if !path.exists() {
            return None;
        }
        match load_cached(&self.optimized.engine, &path) {
            Ok(component) => Some(Compiled {
                component,
                sha256,
                cache_hit: true,
                tier: Tier::Optimized,
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Compiles with Cranelift (or loads from the cache) and caches the result.
    pub fn compile_optimized(&self, bytes: &[u8]) -> Result<Compiled, EngineError> {
        if let Some(hit) = self.cached(bytes) {
            return Ok(hit);
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let cached = self.cache_path(&sha256);
        check_header(bytes)?;
        let component = Component::new(&self.optimized.engine, bytes)
            .map_err(|e| EngineError(format!("not a valid WebAssembly component: {e:#}")))?;
        if let Some(path) = cached {
            // Writing the cache is off the reload's critical path.
            let artefact = component.clone();
            std::thread::spawn(move || {
                if let Err(e) = store_cached(&artefact, &path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not write the plugin cache");
                }
            });
        }
        Ok(Compiled {
            component,
            sha256,
            cache_hit: false,
            tier: Tier::Optimized,
        })
    }
}

fn check_header(bytes: &[u8]) -> Result<(), EngineError> {
    if bytes.starts_with(b"\0asm") {
        Ok(())
    } else {
        Err(EngineError(
            "not a WebAssembly file (no `\\0asm` header)".into(),
        ))
    }
}

fn store_cached(component: &Component, path: &Path) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| format!("{e:#}"))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> Result<Component, String> {
    // SAFETY: the file lives in Vigil's own cache directory, was written by
    // `store_cached` from `Component::serialize` of this wasmtime version, and
    // its name carries the engine's compatibility hash, so it is a trusted
    // artefact for this engine; wasmtime additionally checks its header.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}
