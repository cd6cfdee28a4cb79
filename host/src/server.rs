//! Start-up and shutdown: opens the store, rebuilds in-memory state, binds the
//! listeners, runs background work (retention, self-report) and stops cleanly
//! on SIGTERM/SIGINT: stop accepting, finish in-flight requests and pending
//! writes, then return.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::bus::{DeliveryManager, DeliverySettings, LiveHub, LogHead};
use crate::components::ComponentDirectory;
use crate::config::Config;
use crate::executions::debug_fields::DebugFieldProviders;
use crate::metrics::index::SeriesIndex;
use crate::metrics::ingest::{rebuild_index, spawn_writer};
use crate::plugins::{PluginEngine, PluginRegistry};
use crate::store::{self, redact_url};
use crate::telemetry::{SelfMetrics, SystemSampler};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("opening {url}: {source}")]
    Store {
        url: String,
        source: store::StoreError,
    },
    #[error("plugins: {0}")]
    Plugins(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn ensure_sqlite_dir(url: &str) -> Result<(), StartError> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| StartError::DataDir {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Runs the server until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    ensure_sqlite_dir(&config.database_url)?;
    let url = redact_url(&config.database_url);
    let store = store::open(&config.database_url)
        .await
        .map_err(|source| StartError::Store {
            url: url.clone(),
            source,
        })?;
    let now = chrono::Utc::now().timestamp_millis();
    let index = Arc::new(SeriesIndex::with_counter_names(config.counter_names));
    // One process writes a SQLite database, so every commit passes through
    // this writer and the alert evaluator may hold recent samples in memory.
    if store.backend() == "sqlite" {
        index.recent.enable();
    }
    let rebuilt = rebuild_index(store.as_ref(), &index, now)
        .await
        .map_err(|source| StartError::Store {
            url: url.clone(),
            source,
        })?;
    let components = Arc::new(ComponentDirectory::load(store.as_ref()).await.map_err(
        |source| StartError::Store {
            url: url.clone(),
            source,
        },
    )?);
    tracing::info!(database = %url, backend = store.backend(), series = rebuilt, "store opened");

    let engine = Arc::new(
        PluginEngine::new(Some(config.data_dir.join("plugin-cache")))
            .map_err(|e| StartError::Plugins(e.0))?,
    );
    let plugins = Arc::new(PluginRegistry::new(engine, config.plugin_dir.clone()));
    let delivery = Arc::new(DeliveryManager::new(
        store.clone(),
        plugins.clone(),
        DeliverySettings::default(),
    ));
    plugins.set_serving_hook(delivery.clone());
    plugins.load_all().await.map_err(|e| {
        StartError::Plugins(format!(
            "reading plugin directory {}: {e}",
            config.plugin_dir.display()
        ))
    })?;

    let metrics = Arc::new(SelfMetrics::new());
    let head = Arc::new(LogHead::new(store.max_seq().await.map_err(|source| {
        StartError::Store {
            url: url.clone(),
            source,
        }
    })?));
    let (ingest, writer) = spawn_writer(
        store.clone(),
        index.clone(),
        metrics.clone(),
        components.clone(),
        head.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let live = LiveHub::new(
        config.stream_buffer,
        config.stream_slow_after,
        stop_rx.clone(),
    );
    let debug_fields = Arc::new(DebugFieldProviders::new(config.debug_fields_budget));
    let config = Arc::new(config);
    let notifiers: Arc<crate::alerts::channels::ChannelNotifiers> = Arc::default();
    let alerts = crate::alerts::engine::AlertEngine::new(
        store.clone(),
        index.clone(),
        plugins.clone(),
        notifiers.clone(),
        metrics.clone(),
        head.clone(),
        format!("http://{}", config.listen),
    );
    let state = AppState {
        config: config.clone(),
        store,
        index,
        ingest,
        metrics,
        components,
        sampler: Arc::new(SystemSampler::default()),
        plugins: plugins.clone(),
        delivery: delivery.clone(),
        head: head.clone(),
        live: live.clone(),
        debug_fields,
        notifiers,
        alerts: alerts.clone(),
    };

    let api_listener = bind(config.listen).await?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(api = %api_addr, metrics = %metrics_addr, auth = config.auth_enabled(), "listening");

    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: no new connections, finishing in-flight work");
        let _ = stop_tx.send(true);
    });

    let watcher = tokio::spawn(plugins.clone().watch(stop_rx.clone()));
    let deliveries = tokio::spawn(delivery.clone().run(stop_rx.clone()));
    let mut background: Vec<JoinHandle<()>> = vec![
        tokio::spawn(retention_loop(state.clone(), stop_rx.clone())),
        tokio::spawn(live.run(state.store.clone(), head.clone(), stop_rx.clone())),
        tokio::spawn(alerts.clone().run(stop_rx.clone())),
        tokio::spawn(alerts.run_sender(stop_rx.clone())),
    ];
    if state.store.backend() == "postgres" {
        // Replicas wake each other's live followers (the log stays the truth).
        background.extend(crate::bus::pg_notify::spawn(
            config.database_url.clone(),
            head.clone(),
            stop_rx.clone(),
        ));
    }
    if !config.self_report_interval.is_zero() {
        background.push(tokio::spawn(self_report_loop(
            state.clone(),
            stop_rx.clone(),
        )));
    }

    let mut servers = Vec::new();
    servers.push(tokio::spawn(api::connections::serve(
        api_listener,
        api::app(state.clone()),
        config.connections,
        stop_rx.clone(),
    )));
    if let Some(listener) = metrics_listener {
        servers.push(tokio::spawn(api::connections::serve(
            listener,
            api::metrics_app(state.clone()),
            config.connections,
            stop_rx.clone(),
        )));
    }
    drop(state);
    for server in servers {
        let _ = server.await;
    }
    for task in background {
        let _ = task.await;
    }
    let _ = watcher.await;
    let _ = deliveries.await;
    for plugin in plugins.running() {
        plugin.drain().await;
    }
    // Every ingest handle is gone now: the writer drains its queue and stops.
    let _ = writer.await;
    tracing::info!("stopped");
    Ok(())
}

/// Deletes samples and events older than the retention (by sample timestamp
/// and event receive time) in bounded batches: once at start, then every
/// retention/10 (between 1 s and 60 s).
async fn retention_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let every =
        (state.config.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let stopping = || *stop.borrow();
        match crate::retention::run(
            state.store.as_ref(),
            state.config.retention,
            chrono::Utc::now().timestamp_millis(),
            &stopping,
        )
        .await
        {
            Ok(removed) => {
                for (part, n) in [("samples", removed.samples), ("events", removed.events)] {
                    if n > 0 {
                        tracing::info!(deleted = n, part, "retention removed old log items");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention delete failed; retrying next round"),
        }
        let ttl = state.config.series_ttl.as_millis() as i64;
        if ttl > 0 {
            // Series gone from the export for a whole TTL more leave memory too.
            state
                .index
                .remove_stale(chrono::Utc::now().timestamp_millis() - 2 * ttl);
        }
    }
}

/// Reports the host's own CPU, memory and RSS on a timer.
async fn self_report_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.self_report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let report = api::self_report_for(&state, &state.config.self_report_component).await;
        if let Err(e) = state.ingest.submit(report).await {
            tracing::warn!(error = %e, "timed self-report failed");
        }
    }
}
