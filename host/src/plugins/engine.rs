//! The wasmtime engine every plugin runs on: component model, pooling
//! allocator, epoch interruption (a ticker thread advances the epoch), one
//! linker providing WASI, `wasi:http` and the `vigil:plugin/host` interface,
//! and compiled components cached on disk by content hash and the engine's
//! compatibility hash.

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

/// The shared engine and linker.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
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
}

impl PluginEngine {
    /// Builds the engine; `cache_dir` holds compiled artefacts (None: no cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, EngineError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(1024)
            .total_memories(256)
            .total_tables(512)
            .total_stacks(256)
            .max_memories_per_component(8)
            .max_memory_size(MAX_PLUGIN_MEMORY);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(1024 * 1024)
            .async_stack_size(2 * 1024 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| EngineError(format!("creating the wasmtime engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError(format!("linking WASI: {e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| EngineError(format!("linking wasi:http: {e:#}")))?;
        bindings::host::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(|e| EngineError(format!("linking vigil:plugin/host: {e:#}")))?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError(format!("creating the plugin cache {}: {e}", dir.display()))
            })?;
        }
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| EngineError(format!("starting the epoch ticker: {e}")))?;
        Ok(PluginEngine {
            engine,
            linker,
            cache_dir,
            stop_ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    fn engine_hash(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Compiles a component, or loads it from the cache.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, EngineError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_hash())));
        if let Some(path) = &cached {
            if path.exists() {
                match load_cached(&self.engine, path) {
                    Ok(component) => {
                        return Ok(Compiled {
                            component,
                            sha256,
                            cache_hit: true,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cache entry");
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(EngineError(
                "not a WebAssembly file (no `\\0asm` header)".into(),
            ));
        }
        let component = Component::new(&self.engine, bytes)
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
        })
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
