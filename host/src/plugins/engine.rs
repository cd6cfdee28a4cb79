//! The wasmtime engines plugins run on: component model, pooling allocator,
//! epoch interruption (a ticker thread advances the epoch), a linker providing
//! WASI, `wasi:http` and the `vigil:plugin/host` interface, and compiled
//! components cached on disk by content hash and the engine's compatibility
//! hash.
//!
//! Two tiers. Cranelift's code is the steady state. A component not in the
//! artefact cache is first compiled by Winch (a baseline compiler, several
//! times faster to compile) so it serves at once, while Cranelift compiles the
//! optimised version in the background. Cranelift's incremental cache
//! (`FunctionCache`, in `<cache>/functions/`) keeps every function Cranelift
//! compiled by the hash of its IR, so for a new version of a known plugin,
//! where most functions are unchanged, that background compile takes about a
//! fifth of the time (2 MB fixture: 125–135 ms instead of 550–650 ms).
//!
//! Going straight to Cranelift when its cache knows the code was measured and
//! rejected: on the 2 MB `large-publisher` fixture with every function cached
//! it served about 10 % sooner than Winch, but with 1.6 % of the functions
//! changed it was no faster, and on the 0.3 MB webhook publisher and a
//! 0.9 MB-of-code debug build, Cranelift with all functions cached took 1.4×
//! and 1.7× Winch's time (it still translates and hashes every function).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::sandbox::PluginState;

/// How often the epoch advances; call deadlines are checked at this grain.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Largest memory any plugin may be granted (the pooling slot size).
pub const MAX_PLUGIN_MEMORY: usize = 1024 * 1024 * 1024;
/// Bound of Cranelift's incremental cache, on disk and in memory.
pub const FUNCTION_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;

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
    functions: Option<Arc<FunctionCache>>,
    engine_hash: String,
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

/// Counters of Cranelift's incremental cache since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionCacheStats {
    /// Functions whose compiled code came from the cache.
    pub hits: u64,
    /// Functions Cranelift had to compile.
    pub misses: u64,
    /// Functions held now.
    pub entries: usize,
    /// Bytes they take (as stored).
    pub bytes: u64,
}

fn engine_tier(
    tier: Tier,
    functions: Option<Arc<FunctionCache>>,
) -> Result<EngineTier, EngineError> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(1024 * 1024)
        .async_stack_size(2 * 1024 * 1024);
    // `VIGIL_PLUGIN_PROFILER=perfmap` names the plugins' compiled functions
    // for `perf` (wasmtime writes /tmp/perf-<pid>.map), so a profile of the
    // host splits a plugin's time by its own functions.
    if std::env::var("VIGIL_PLUGIN_PROFILER").is_ok_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    match tier {
        Tier::Optimized => {
            config.strategy(wasmtime::Strategy::Cranelift);
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(256)
                .total_core_instances(1024)
                .total_memories(256)
                .total_tables(512)
                .total_stacks(256)
                .max_memories_per_component(8)
                .max_memory_size(MAX_PLUGIN_MEMORY);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            if let Some(functions) = functions {
                config
                    .enable_incremental_compilation(functions)
                    .map_err(|e| EngineError(format!("enabling the function cache: {e:#}")))?;
            }
        }
        Tier::Baseline => {
            // Baseline instances are short-lived: on-demand allocation keeps
            // the second engine from reserving another pool.
            config
                .strategy(wasmtime::Strategy::Winch)
                // Winch compiles the wasm functions, but the trampolines
                // around them (one per escaping function) are Cranelift's:
                // optimising those took a tenth of the whole compile and buys
                // nothing measurable for code that runs for about a second.
                // Winch itself has no optimisation levels.
                .cranelift_opt_level(wasmtime::OptLevel::None)
                // None of these three is needed to run or to report a trap
                // (trap codes have a table of their own, frames keep their
                // function names; see the tests): native-address to
                // wasm-offset maps only add offsets to backtraces, symbols
                // serve profilers, native unwind tables serve external
                // unwinders (wasmtime walks frame pointers, and host panics
                // never unwind through wasm frames). Together another 6 % of
                // the compile, for code that Cranelift's soon replaces.
                .generate_address_map(false)
                .debug_symbols(false)
                .native_unwind_info(false);
        }
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
    bindings::v0_1_0::host::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |s| s)
        .map_err(|e| EngineError(format!("linking vigil:plugin/host@0.1.0: {e:#}")))?;
    Ok(EngineTier { engine, linker })
}

impl PluginEngine {
    /// Builds the engines; `cache_dir` holds compiled artefacts and
    /// Cranelift's incremental cache (None: no caches). Tiered: new code
    /// first runs on Winch.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, EngineError> {
        Self::with_tiers(cache_dir, true)
    }

    /// [`PluginEngine::new`] choosing whether to use the baseline tier.
    pub fn with_tiers(cache_dir: Option<PathBuf>, tiered: bool) -> Result<Self, EngineError> {
        Self::build(cache_dir, tiered, FUNCTION_CACHE_MAX_BYTES)
    }

    fn build(
        cache_dir: Option<PathBuf>,
        tiered: bool,
        function_cache_max_bytes: u64,
    ) -> Result<Self, EngineError> {
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError(format!("creating the plugin cache {}: {e}", dir.display()))
            })?;
        }
        let functions = cache_dir.as_ref().map(|dir| {
            Arc::new(FunctionCache::new(
                dir.join("functions"),
                function_cache_max_bytes,
            ))
        });
        let optimized = engine_tier(Tier::Optimized, functions.clone())?;
        let baseline = if tiered {
            Some(engine_tier(Tier::Baseline, None)?)
        } else {
            None
        };
        let engine_hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            optimized
                .engine
                .precompile_compatibility_hash()
                .hash(&mut h);
            format!("{:016x}", h.finish())
        };
        if let Some(functions) = &functions {
            functions.load(engine_hash.as_bytes());
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
            functions,
            engine_hash,
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

    /// Counters of Cranelift's incremental cache (None: no cache directory).
    pub fn function_cache_stats(&self) -> Option<FunctionCacheStats> {
        self.functions.as_ref().map(|f| f.stats())
    }

    /// The fastest way to a serving component: the optimised artefact from
    /// the cache, else a baseline compile (else an optimised compile when
    /// there is no baseline tier).
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, EngineError> {
        self.compile_hashed(bytes, hex::encode(Sha256::digest(bytes)))
    }

    /// [`PluginEngine::compile`] for bytes whose hex SHA-256 the caller has
    /// computed already (`sha256` must be exactly that: it names the cache
    /// entry).
    pub fn compile_hashed(&self, bytes: &[u8], sha256: String) -> Result<Compiled, EngineError> {
        let sha256 = match self.cached(sha256) {
            Ok(hit) => return Ok(hit),
            Err(sha256) => sha256,
        };
        check_header(bytes)?;
        let Some(baseline) = &self.baseline else {
            return self.compile_optimized_uncached(bytes, sha256);
        };
        let component = Component::new(&baseline.engine, bytes)
            .map_err(|e| EngineError(format!("not a valid WebAssembly component: {e:#}")))?;
        Ok(Compiled {
            component,
            sha256,
            cache_hit: false,
            tier: Tier::Baseline,
        })
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_hash)))
    }

    /// The cached optimised artefact, or the hash back.
    fn cached(&self, sha256: String) -> Result<Compiled, String> {
        let Some(path) = self.cache_path(&sha256) else {
            return Err(sha256);
        };
        if !path.exists() {
            return Err(sha256);
        }
        match load_cached(&self.optimized.engine, &path) {
            Ok(component) => Ok(Compiled {
                component,
                sha256,
                cache_hit: true,
                tier: Tier::Optimized,
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cache entry");
                let _ = std::fs::remove_file(&path);
                Err(sha256)
            }
        }
    }

    /// Compiles with Cranelift (or loads from the cache) and caches the result.
    pub fn compile_optimized(&self, bytes: &[u8]) -> Result<Compiled, EngineError> {
        match self.cached(hex::encode(Sha256::digest(bytes))) {
            Ok(hit) => Ok(hit),
            Err(sha256) => {
                check_header(bytes)?;
                self.compile_optimized_uncached(bytes, sha256)
            }
        }
    }

    fn compile_optimized_uncached(
        &self,
        bytes: &[u8],
        sha256: String,
    ) -> Result<Compiled, EngineError> {
        let compiled = Component::new(&self.optimized.engine, bytes)
            .map_err(|e| EngineError(format!("not a valid WebAssembly component: {e:#}")));
        if let Some(functions) = &self.functions {
            // What Cranelift added to its cache is saved whether or not the
            // whole component compiled.
            functions.finish_compile();
        }
        let component = compiled?;
        if let Some(path) = self.cache_path(&sha256) {
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

// --- Cranelift's incremental cache -------------------------------------------

/// Segment files start with this, then the engine tag.
const SEGMENT_MAGIC: &[u8; 8] = b"VGLFNC01";
const TAG_LEN: usize = 16;
/// A record holding one compiled function: key = Cranelift's cache key.
const RECORD_FUNCTION: u8 = 1;
/// kind, key length, value length; after key and value, a checksum.
const RECORD_HEADER: usize = 1 + 4 + 4;
const RECORD_CHECKSUM: usize = 8;
const MAX_KEY_LEN: usize = 1024;
/// Larger compiled functions are not kept (one is a few kB typically).
const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;

/// A compiled function as stored: Cranelift's cache key and the blob.
type Record = (Box<[u8]>, Arc<[u8]>);

fn record_len(key: usize, value: usize) -> u64 {
    (RECORD_HEADER + key + value + RECORD_CHECKSUM) as u64
}

fn push_record(out: &mut Vec<u8>, kind: u8, key: &[u8], value: &[u8]) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let sum = Sha256::digest(&out[start..]);
    out.extend_from_slice(&sum[..RECORD_CHECKSUM]);
}

/// What a segment file held.
#[derive(Debug, Default)]
struct ParsedSegment {
    functions: Vec<Record>,
    /// A record failed its checksum or was cut short; nothing after it was read.
    corrupt: bool,
    /// Written by another engine configuration or wasmtime version.
    foreign: bool,
}

fn parse_segment(bytes: &[u8], tag: &[u8; TAG_LEN]) -> ParsedSegment {
    let mut parsed = ParsedSegment::default();
    let header = SEGMENT_MAGIC.len() + TAG_LEN;
    if bytes.len() < header || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        parsed.corrupt = true;
        return parsed;
    }
    if &bytes[SEGMENT_MAGIC.len()..header] != tag {
        parsed.foreign = true;
        return parsed;
    }
    let mut rest = &bytes[header..];
    while !rest.is_empty() {
        let Some(record) = next_record(rest) else {
            parsed.corrupt = true;
            break;
        };
        let (kind, key, value, len) = record;
        // Records of other kinds (a later format's) are skipped.
        if kind == RECORD_FUNCTION {
            parsed.functions.push((key.into(), value.into()));
        }
        rest = &rest[len..];
    }
    parsed
}

/// The record at the start of `bytes` — (kind, key, value, total length) —
/// if it is whole and its checksum matches.
fn next_record(bytes: &[u8]) -> Option<(u8, &[u8], &[u8], usize)> {
    let header = bytes.get(..RECORD_HEADER)?;
    let kind = header[0];
    let key_len = u32::from_le_bytes(header[1..5].try_into().ok()?) as usize;
    let value_len = u32::from_le_bytes(header[5..9].try_into().ok()?) as usize;
    if key_len > MAX_KEY_LEN || value_len > MAX_VALUE_LEN {
        return None;
    }
    let body_end = RECORD_HEADER + key_len + value_len;
    let total = body_end + RECORD_CHECKSUM;
    let record = bytes.get(..total)?;
    let sum = Sha256::digest(&record[..body_end]);
    if sum[..RECORD_CHECKSUM] != record[body_end..] {
        return None;
    }
    Some((
        kind,
        &record[RECORD_HEADER..RECORD_HEADER + key_len],
        &record[RECORD_HEADER + key_len..body_end],
        total,
    ))
}

/// One compiled function held by the cache.
struct CachedFunction {
    value: Arc<[u8]>,
    /// The compile session that last stored or used it.
    used: u64,
}

#[derive(Default)]
struct FunctionCacheState {
    tag: [u8; TAG_LEN],
    functions: HashMap<Box<[u8]>, CachedFunction>,
    /// Record bytes of `functions`.
    bytes: u64,
    /// Advances at the end of every compile session.
    session: u64,
    /// Keys added since they were last saved.
    unsaved: Vec<Box<[u8]>>,
    /// Segment files and their sizes, oldest first.
    segments: Vec<(PathBuf, u64)>,
    hits: u64,
    misses: u64,
}

/// Cranelift's incremental compilation cache ([`wasmtime::CacheStore`]):
/// compiled functions keyed by Cranelift's hash of their IR and the target,
/// held in memory and saved under `dir` as segment files — one per compile
/// that added something, written to a temporary name and renamed, every
/// record checksummed (a damaged or cut-short record is ignored with what
/// follows it). When the files outgrow `max_bytes`, the most recently used
/// half is rewritten into one segment and the rest dropped, from disk and
/// from memory. Segments of another engine configuration or wasmtime version
/// are deleted when loading. Entries are trusted like the artefacts beside
/// them (Cranelift turns them into machine code): the checksums catch damage,
/// the directory's permissions keep others out.
pub(crate) struct FunctionCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<FunctionCacheState>,
    /// Held while writing or compacting segments.
    writer: Mutex<()>,
    /// Saves started and not finished.
    saving: AtomicU64,
}

impl std::fmt::Debug for FunctionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionCache")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let value = {
            let mut state = self.state.lock();
            let session = state.session;
            let found = state.functions.get_mut(key).map(|f| {
                f.used = session;
                f.value.clone()
            });
            match found {
                Some(_) => state.hits += 1,
                None => state.misses += 1,
            }
            found
        }?;
        Some(Cow::Owned(value.to_vec()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        if key.len() > MAX_KEY_LEN || value.len() > MAX_VALUE_LEN {
            return false;
        }
        let mut state = self.state.lock();
        if state.functions.contains_key(key) {
            return true;
        }
        let session = state.session;
        state.bytes += record_len(key.len(), value.len());
        let key: Box<[u8]> = key.into();
        state.unsaved.push(key.clone());
        state.functions.insert(
            key,
            CachedFunction {
                value: value.into(),
                used: session,
            },
        );
        true
    }
}

static SEGMENT_SEQ: AtomicU64 = AtomicU64::new(0);

impl FunctionCache {
    fn new(dir: PathBuf, max_bytes: u64) -> Self {
        FunctionCache {
            dir,
            max_bytes,
            state: Mutex::new(FunctionCacheState::default()),
            writer: Mutex::new(()),
            saving: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> FunctionCacheStats {
        let state = self.state.lock();
        FunctionCacheStats {
            hits: state.hits,
            misses: state.misses,
            entries: state.functions.len(),
            bytes: state.bytes,
        }
    }

    /// Reads the segments of this engine (`tag`) from disk; deletes other
    /// engines' segments, damaged ones (after keeping their good records, to
    /// be saved again) and leftovers of interrupted writes.
    fn load(&self, tag: &[u8]) {
        let mut state = self.state.lock();
        let n = tag.len().min(TAG_LEN);
        state.tag[..n].copy_from_slice(&tag[..n]);
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot create the function cache; it stays in memory");
            return;
        }
        let mut segments = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".seg") {
                    segments.push((name, path));
                } else if name.ends_with(".tmp") && is_stale(&entry) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Names start with the creation time: oldest first.
        segments.sort();
        let tag = state.tag;
        for (age, (_, path)) in segments.into_iter().enumerate() {
            let session = age as u64;
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let parsed = parse_segment(&bytes, &tag);
            if parsed.foreign {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            for (key, value) in parsed.functions {
                let len = record_len(key.len(), value.len());
                let previous = state.functions.insert(
                    key.clone(),
                    CachedFunction {
                        value,
                        used: session,
                    },
                );
                match previous {
                    Some(p) => state.bytes -= record_len(key.len(), p.value.len()),
                    None if parsed.corrupt => state.unsaved.push(key),
                    None => {}
                }
                state.bytes += len;
            }
            if parsed.corrupt {
                tracing::warn!(path = %path.display(), "damaged function cache segment: keeping its intact records, deleting the file");
                let _ = std::fs::remove_file(&path);
            } else {
                state.segments.push((path, bytes.len() as u64));
            }
            state.session = session + 1;
        }
    }

    /// Ends a compile: saves what it added, in the background.
    fn finish_compile(self: &Arc<Self>) {
        let mut state = self.state.lock();
        state.session += 1;
        let keys = std::mem::take(&mut state.unsaved);
        let functions: Vec<Record> = keys
            .into_iter()
            .filter_map(|k| {
                let value = state.functions.get(&k)?.value.clone();
                Some((k, value))
            })
            .collect();
        let tag = state.tag;
        drop(state);
        if functions.is_empty() {
            return;
        }
        let this = self.clone();
        self.saving.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            this.save(&tag, &functions);
            this.saving.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Writes one segment; compacts when the segments outgrow the bound.
    fn save(&self, tag: &[u8; TAG_LEN], functions: &[Record]) {
        let _writing = self.writer.lock();
        match write_segment(&self.dir, tag, functions) {
            Ok(segment) => {
                let total: u64 = {
                    let mut state = self.state.lock();
                    state.segments.push(segment);
                    state.segments.iter().map(|s| s.1).sum()
                };
                if total > self.max_bytes {
                    self.compact(tag);
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not save the function cache");
            }
        }
    }

    /// Keeps the most recently used entries up to half the bound, in one new
    /// segment, and drops everything else.
    fn compact(&self, tag: &[u8; TAG_LEN]) {
        let (functions, old) = {
            let mut state = self.state.lock();
            let mut order: Vec<(u64, u64, &[u8])> = state
                .functions
                .iter()
                .map(|(k, f)| (f.used, record_len(k.len(), f.value.len()), &**k))
                .collect();
            order.sort_by_key(|o| std::cmp::Reverse(o.0));
            let budget = self.max_bytes / 2;
            let mut kept_bytes = 0;
            let mut keep: HashSet<Box<[u8]>> = HashSet::new();
            for (_, len, key) in order {
                if kept_bytes + len > budget {
                    break;
                }
                kept_bytes += len;
                keep.insert(key.into());
            }
            state.functions.retain(|k, _| keep.contains(&**k));
            state.bytes = kept_bytes;
            // Keys not saved yet are saved by their own compile.
            let unsaved: HashSet<&[u8]> = state.unsaved.iter().map(|k| &**k).collect();
            let functions: Vec<Record> = state
                .functions
                .iter()
                .filter(|(k, _)| {
                    let key: &[u8] = k;
                    !unsaved.contains(&key)
                })
                .map(|(k, f)| (k.clone(), f.value.clone()))
                .collect();
            (functions, std::mem::take(&mut state.segments))
        };
        match write_segment(&self.dir, tag, &functions) {
            Ok(segment) => {
                for (path, _) in &old {
                    let _ = std::fs::remove_file(path);
                }
                self.state.lock().segments.insert(0, segment);
                tracing::debug!(dir = %self.dir.display(), functions = functions.len(), "function cache compacted");
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not compact the function cache");
                let mut state = self.state.lock();
                let newer = std::mem::replace(&mut state.segments, old);
                state.segments.extend(newer);
            }
        }
    }
}

/// A temporary file older than this is a leftover of an interrupted write.
fn is_stale(entry: &std::fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(600))
}

fn write_segment(
    dir: &Path,
    tag: &[u8; TAG_LEN],
    functions: &[Record],
) -> std::io::Result<(PathBuf, u64)> {
    let capacity: u64 = functions
        .iter()
        .map(|(k, v)| record_len(k.len(), v.len()))
        .sum::<u64>()
        + (SEGMENT_MAGIC.len() + TAG_LEN) as u64;
    let mut out = Vec::with_capacity(capacity as usize);
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(tag);
    for (key, value) in functions {
        push_record(&mut out, RECORD_FUNCTION, key, value);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!(
        "{nanos:020}-{}-{}",
        std::process::id(),
        SEGMENT_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(format!("{name}.seg"));
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, &path)?;
    Ok((path, out.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// A component (binary) instantiating one core module of `n` functions
    /// `() -> i32`; function `i` returns `first + i`, so components sharing a
    /// range of constants share those functions.
    fn component(first: u64, n: u64) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        section(1, &[1, 0x60, 0, 1, 0x7f], &mut module);
        let mut funcs = Vec::new();
        leb(n, &mut funcs);
        funcs.extend(std::iter::repeat_n(0u8, n as usize));
        section(3, &funcs, &mut module);
        let mut code = Vec::new();
        leb(n, &mut code);
        for i in 0..n {
            // i32.const (first + i) * 7919, mul by itself, end: a body that
            // Cranelift cannot fold into one shared shape across functions.
            let mut body = vec![0]; // no locals
            body.push(0x41);
            leb((first + i) * 7919 % (1 << 20), &mut body);
            body.extend_from_slice(&[0x41, 3, 0x6c, 0x0b]); // i32.const 3, i32.mul, end
            leb(body.len() as u64, &mut code);
            code.extend(body);
        }
        section(10, &code, &mut module);
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        section(1, &module, &mut out);
        section(2, &[1, 0, 0, 0], &mut out); // instantiate module 0, no args
        out
    }

    fn with_custom_section(bytes: &[u8], name: &str) -> Vec<u8> {
        let mut payload = Vec::new();
        leb(name.len() as u64, &mut payload);
        payload.extend_from_slice(name.as_bytes());
        let mut out = bytes.to_vec();
        section(0, &payload, &mut out);
        out
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vigil-engine-test-{name}-{}-{}",
            std::process::id(),
            SEGMENT_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn wait_saved(engine: &PluginEngine) {
        let functions = engine.functions.as_ref().expect("function cache");
        let started = std::time::Instant::now();
        while functions.saving.load(Ordering::SeqCst) > 0 {
            assert!(started.elapsed() < Duration::from_secs(30), "never saved");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn segments(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut found: Vec<(PathBuf, u64)> = std::fs::read_dir(dir.join("functions"))
            .expect("function cache dir")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn the_baseline_tier_still_reports_what_trapped_and_where() {
        let engine = PluginEngine::with_tiers(None, true).expect("engine");
        let engine = engine.engine(Tier::Baseline);
        let module = wasmtime::Module::new(
            engine,
            r#"(module
                (memory 1)
                (func $boom (export "boom") (result i32) unreachable)
                (func $divide (export "divide") (result i32)
                    (i32.div_s (i32.const 1) (i32.const 0)))
                (func $outside (export "outside") (result i32)
                    (i32.load (i32.const 70000))))"#,
        )
        .expect("module");
        let mut store = wasmtime::Store::new(engine, ());
        store.set_epoch_deadline(1_000_000);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
        for (export, trap) in [
            ("boom", wasmtime::Trap::UnreachableCodeReached),
            ("divide", wasmtime::Trap::IntegerDivisionByZero),
            ("outside", wasmtime::Trap::MemoryOutOfBounds),
        ] {
            let f = instance
                .get_typed_func::<(), i32>(&mut store, export)
                .expect("export");
            let error = f.call(&mut store, ()).expect_err("traps");
            assert_eq!(
                error.downcast_ref::<wasmtime::Trap>(),
                Some(&trap),
                "{error:?}"
            );
            let backtrace = error
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .expect("a wasm backtrace");
            let frame = backtrace.frames().first().expect("a frame");
            assert_eq!(frame.func_name(), Some(export), "{backtrace:?}");
        }
    }

    #[test]
    fn a_new_engine_finds_the_functions_an_earlier_one_compiled() {
        let dir = temp_dir("restart");
        let v1 = component(0, 120);
        {
            let engine = PluginEngine::with_tiers(Some(dir.clone()), false).expect("engine");
            let compiled = engine.compile_optimized(&v1).expect("compile");
            assert_eq!(compiled.tier, Tier::Optimized);
            let stats = engine.function_cache_stats().expect("stats");
            assert!(stats.entries >= 120, "{stats:?}");
            wait_saved(&engine);
        }
        assert!(!segments(&dir).is_empty());
        let engine = PluginEngine::with_tiers(Some(dir.clone()), false).expect("engine");
        let loaded = engine.function_cache_stats().expect("stats");
        assert!(loaded.entries >= 120, "{loaded:?}");
        // A new version: 110 functions as before, 10 new ones.
        let v2 = with_custom_section(&component(10, 120), "v2");
        engine.compile_optimized(&v2).expect("compile");
        let stats = engine.function_cache_stats().expect("stats");
        assert!(stats.hits >= 110, "{stats:?}");
        assert!(stats.misses >= 10, "{stats:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_segment_is_cut_at_the_damage_and_replaced() {
        let dir = temp_dir("damaged");
        {
            let engine = PluginEngine::with_tiers(Some(dir.clone()), false).expect("engine");
            engine
                .compile_optimized(&component(0, 60))
                .expect("compile");
            wait_saved(&engine);
        }
        let all = segments(&dir);
        assert_eq!(all.len(), 1);
        let (path, len) = &all[0];
        let mut bytes = std::fs::read(path).expect("segment");
        let middle = (*len / 2) as usize;
        bytes[middle] ^= 0x55;
        std::fs::write(path, &bytes).expect("damage");

        let engine = PluginEngine::with_tiers(Some(dir.clone()), false).expect("engine");
        let stats = engine.function_cache_stats().expect("stats");
        assert!(stats.entries > 0 && stats.entries < 60, "{stats:?}");
        assert!(!path.exists(), "the damaged file is deleted");
        // What was read is saved again with the next compile, and compiling
        // what was lost just works.
        engine
            .compile_optimized(&with_custom_section(&component(0, 60), "again"))
            .expect("compile");
        wait_saved(&engine);
        let after = PluginEngine::with_tiers(Some(dir.clone()), false).expect("engine");
        let stats = after.function_cache_stats().expect("stats");
        assert!(stats.entries >= 60, "{stats:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn segments_are_checked_record_by_record() {
        let tag = *b"0123456789abcdef";
        let value: Arc<[u8]> = Arc::from(vec![7u8; 100]);
        let functions: Vec<Record> = (0u8..3)
            .map(|i| (Box::from(&[i; 32][..]), value.clone()))
            .collect();
        let dir = temp_dir("records");
        std::fs::create_dir_all(&dir).expect("dir");
        let (path, _) = write_segment(&dir, &tag, &functions).expect("write");
        let bytes = std::fs::read(&path).expect("read");

        let whole = parse_segment(&bytes, &tag);
        assert_eq!(whole.functions.len(), 3);
        assert!(!whole.corrupt && !whole.foreign);
        assert_eq!(&*whole.functions[2].1, &*value);

        let cut = parse_segment(&bytes[..bytes.len() - 3], &tag);
        assert_eq!(cut.functions.len(), 2);
        assert!(cut.corrupt);

        let mut flipped = bytes.clone();
        let second_value = SEGMENT_MAGIC.len() + TAG_LEN + record_len(32, 100) as usize + 50;
        flipped[second_value] ^= 1;
        let damaged = parse_segment(&flipped, &tag);
        assert_eq!(damaged.functions.len(), 1);
        assert!(damaged.corrupt);

        let other = parse_segment(&bytes, b"fedcba9876543210");
        assert!(other.foreign && other.functions.is_empty());
        assert!(parse_segment(b"garbage", &tag).corrupt);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let dir = temp_dir("bound");
        let max_bytes = 96 * 1024;
        let engine = PluginEngine::build(Some(dir.clone()), false, max_bytes).expect("engine");
        for version in 0..8 {
            engine
                .compile_optimized(&component(version * 1000, 150))
                .expect("compile");
            wait_saved(&engine);
            let on_disk: u64 = segments(&dir).iter().map(|s| s.1).sum();
            assert!(
                on_disk <= max_bytes,
                "version {version}: {on_disk} bytes on disk"
            );
            let stats = engine.function_cache_stats().expect("stats");
            assert!(stats.bytes <= max_bytes, "version {version}: {stats:?}");
        }
        // Older versions were dropped; the latest survived compaction and
        // compiling it again hits.
        let before = engine.function_cache_stats().expect("stats");
        assert!(before.entries < 8 * 150, "never compacted: {before:?}");
        engine
            .compile_optimized(&with_custom_section(&component(7000, 150), "again"))
            .expect("compile");
        let after = engine.function_cache_stats().expect("stats");
        assert!(after.hits - before.hits >= 150, "{before:?} {after:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn new_code_is_served_by_the_baseline_tier_and_a_compiled_version_from_the_cache() {
        let dir = temp_dir("tiers");
        let engine = PluginEngine::new(Some(dir.clone())).expect("engine");
        let bytes = component(0, 10);
        let first = engine.compile(&bytes).expect("compile");
        assert_eq!((first.tier, first.cache_hit), (Tier::Baseline, false));
        engine.compile_optimized(&bytes).expect("compile");
        let started = std::time::Instant::now();
        loop {
            let again = engine.compile(&bytes).expect("compile");
            if again.cache_hit {
                assert_eq!(again.tier, Tier::Optimized);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never cached");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(engine.compile(b"not wasm").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
