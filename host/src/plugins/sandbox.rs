//! What a plugin instance may touch. Each store gets a WASI context with no
//! preopened directories, no environment, no arguments and no sockets; outbound
//! HTTP goes through `wasi:http` and only to the manifest's `allowed_hosts`
//! (anything else is denied with `HttpRequestDenied`, logged and counted);
//! memory is capped by `StoreLimits`; each call has a deadline enforced by
//! epoch interruption.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::{host, v0_1_0};
use super::manifest::{AllowedHost, Capabilities};

/// Counters a sandbox reports into (shared by every instance of a plugin).
#[derive(Debug, Default)]
pub struct SandboxCounters {
    pub denied_requests: AtomicU64,
    pub allowed_requests: AtomicU64,
}

/// The outbound-HTTP policy: the allow-list of one plugin.
pub struct OutboundPolicy {
    plugin: Arc<str>,
    allowed: Vec<AllowedHost>,
    counters: Arc<SandboxCounters>,
    /// Status of the last response the plugin received (0: none yet); what a
    /// notification's receiver answered, as the host saw it.
    last_status: Arc<AtomicU16>,
}

impl OutboundPolicy {
    fn permits(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(match scheme {
            "http" => 80,
            _ => 443,
        });
        self.allowed.iter().any(|a| a.allows(scheme, host, port))
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                )>,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri().clone();
        if !self.permits(&uri) {
            self.counters
                .denied_requests
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                plugin = %self.plugin,
                target_uri = %format!("{}://{}", uri.scheme_str().unwrap_or("https"), uri.authority().map(|a| a.as_str()).unwrap_or("")),
                "outbound request denied: not in the manifest's allowed_hosts"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        self.counters
            .allowed_requests
            .fetch_add(1, Ordering::Relaxed);
        let last_status = self.last_status.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            last_status.store(response.status().as_u16(), Ordering::Relaxed);
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
            ))
        })
    }
}

/// A memory cap: growth beyond it fails (`memory.grow` returns -1, so a
/// plugin using `try_reserve` can cope); a trap that follows is explained
/// with the cap. Remembers usage.
pub struct MemoryCap {
    max: usize,
    current: Arc<AtomicU64>,
    /// Set when a growth was refused during the current call.
    pub refused: Option<usize>,
}

impl MemoryCap {
    /// Explains a trap that followed an allocation too large for any cap: a
    /// single block of more than `isize::MAX` bytes (2 GiB on wasm32), which
    /// Rust's allocator refuses with a `capacity overflow` panic before it
    /// asks for memory at all.
    pub fn explain_oversized_allocation(&self, logged: &str) -> Option<String> {
        logged.contains("capacity overflow").then(|| {
            format!(
                "memory cap of {} MiB exceeded (the plugin asked for one allocation larger than a 32-bit plugin can address, over 2 GiB)",
                self.max / (1024 * 1024)
            )
        })
    }

    /// Explains a refused growth, if one happened since the last call.
    pub fn take_refusal(&mut self) -> Option<String> {
        self.refused.take().map(|desired| {
            format!(
                "memory cap of {} MiB exceeded (wanted {} MiB)",
                self.max / (1024 * 1024),
                desired.div_ceil(1024 * 1024)
            )
        })
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.refused = Some(desired);
            return Ok(false);
        }
        self.current.store(desired as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}

/// The data of one plugin store.
pub struct PluginState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    policy: OutboundPolicy,
    pub cap: MemoryCap,
    /// When the current call must have returned.
    pub deadline: Option<Instant>,
    /// The plugin's last error-level log line (a panic message, say), kept
    /// to explain a trap that follows it.
    pub last_error_log: Option<String>,
}

impl PluginState {
    /// A fresh sandbox for `plugin` under `caps`.
    pub fn new(
        plugin: Arc<str>,
        caps: &Capabilities,
        counters: Arc<SandboxCounters>,
        memory_in_use: Arc<AtomicU64>,
    ) -> Self {
        let mut builder = WasiCtxBuilder::new();
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let cap = MemoryCap {
            max: caps.memory_mb as usize * 1024 * 1024,
            current: memory_in_use,
            refused: None,
        };
        PluginState {
            policy: OutboundPolicy {
                plugin: plugin.clone(),
                allowed: caps.allowed_hosts.clone(),
                counters,
                last_status: Arc::new(AtomicU16::new(0)),
            },
            plugin,
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            cap,
            deadline: None,
            last_error_log: None,
        }
    }
}

impl PluginState {
    /// Forgets the last response status (before a call).
    pub fn reset_response_status(&self) {
        self.policy.last_status.store(0, Ordering::Relaxed);
    }

    /// Status of the last HTTP response the plugin received since the reset.
    pub fn response_status(&self) -> Option<u16> {
        match self.policy.last_status.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s),
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.policy,
        }
    }
}

/// Longest log message or field kept from a plugin.
const MAX_LOG_TEXT: usize = 4096;

fn clip(s: &str) -> &str {
    if s.len() <= MAX_LOG_TEXT {
        return s;
    }
    let mut end = MAX_LOG_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl v0_1_0::host::Host for PluginState {
    fn log(&mut self, level: v0_1_0::host::Level, message: String, fields: Vec<(String, String)>) {
        use v0_1_0::host::Level as Old;
        let level = match level {
            Old::Trace => host::Level::Trace,
            Old::Debug => host::Level::Debug,
            Old::Info => host::Level::Info,
            Old::Warn => host::Level::Warn,
            Old::Error => host::Level::Error,
        };
        host::Host::log(self, level, message, fields);
    }
}

impl host::Host for PluginState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) {
        let fields: String = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{}={:?} ", clip(k), clip(v)))
            .collect();
        let plugin = &*self.plugin;
        let message = clip(&message);
        match level {
            host::Level::Trace => tracing::trace!(plugin, fields = fields.trim_end(), "{message}"),
            host::Level::Debug => tracing::debug!(plugin, fields = fields.trim_end(), "{message}"),
            host::Level::Info => tracing::info!(plugin, fields = fields.trim_end(), "{message}"),
            host::Level::Warn => tracing::warn!(plugin, fields = fields.trim_end(), "{message}"),
            host::Level::Error => {
                tracing::error!(plugin, fields = fields.trim_end(), "{message}");
                let mut kept = message.replace('\n', " ");
                kept.truncate(kept.len().min(512));
                while !kept.is_char_boundary(kept.len()) {
                    kept.pop();
                }
                self.last_error_log = Some(kept);
            }
        }
    }
}
