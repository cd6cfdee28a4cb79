//! Plugin status and reload routes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::metrics::model::format_ms;
use crate::plugins::registry::valid_plugin_name;
use crate::plugins::{Plugin, ReloadOutcome};

/// One plugin as the API shows it. Secrets never appear.
#[derive(Serialize, ToSchema)]
pub struct PluginStatus {
    pub name: String,
    /// publisher, notifier or debug-fields (null when it never loaded).
    pub kind: Option<String>,
    pub world_version: Option<String>,
    pub plugin_version: Option<String>,
    pub description: Option<String>,
    pub sha256: Option<String>,
    /// `baseline` (Winch, just loaded) or `optimized` (Cranelift).
    pub tier: Option<String>,
    /// loaded, failed or quarantined.
    pub state: String,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub loaded_at: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub traps: u64,
    /// Answers that contradicted their call (e.g. rejections of items that
    /// were not in the batch); they count towards quarantine like traps.
    pub invalid_answers: u64,
    pub restarts: u64,
    pub denied_requests: u64,
    /// Mean call latency in milliseconds.
    pub mean_call_ms: f64,
    pub memory_bytes: u64,
    pub allowed_hosts: Vec<String>,
    pub memory_limit_mb: Option<u32>,
    pub call_timeout_ms: Option<u64>,
    /// The manifest's configuration, secrets shown as `***`.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// Every plugin of the directory.
#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginStatus>,
}

/// Answer to a reload.
#[derive(Serialize, ToSchema)]
pub struct ReloadResult {
    /// loaded, replaced, unchanged, removed or rejected.
    pub outcome: String,
    pub error: Option<String>,
    pub plugin: Option<PluginStatus>,
}

pub fn status_of(
    name: &str,
    plugin: Option<&Arc<Plugin>>,
    load_error: Option<String>,
) -> PluginStatus {
    match plugin {
        None => PluginStatus {
            name: name.to_string(),
            kind: None,
            world_version: None,
            plugin_version: None,
            description: None,
            sha256: None,
            tier: None,
            state: "failed".into(),
            last_error: load_error,
            loaded_at: None,
            calls: 0,
            errors: 0,
            traps: 0,
            invalid_answers: 0,
            restarts: 0,
            denied_requests: 0,
            mean_call_ms: 0.0,
            memory_bytes: 0,
            allowed_hosts: Vec::new(),
            memory_limit_mb: None,
            call_timeout_ms: None,
            config: serde_json::json!({}),
        },
        Some(p) => {
            let (condition, call_error, _) = p.condition();
            let calls = p.stats.calls.load(Ordering::Relaxed);
            let nanos = p.stats.call_nanos.load(Ordering::Relaxed);
            PluginStatus {
                name: name.to_string(),
                kind: Some(p.kind.as_str().to_string()),
                world_version: Some(p.world_version.clone()),
                plugin_version: Some(p.description.version.clone()),
                description: Some(p.description.description.clone()),
                sha256: Some(p.sha256.clone()),
                tier: Some(
                    match p.tier {
                        crate::plugins::Tier::Baseline => "baseline",
                        crate::plugins::Tier::Optimized => "optimized",
                    }
                    .to_string(),
                ),
                state: serde_json::to_value(condition)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                last_error: load_error.or(call_error),
                loaded_at: Some(format_ms(p.loaded_at_ms)),
                calls,
                errors: p.stats.errors.load(Ordering::Relaxed),
                traps: p.stats.traps.load(Ordering::Relaxed),
                invalid_answers: p.stats.invalid_answers.load(Ordering::Relaxed),
                restarts: p.stats.restarts.load(Ordering::Relaxed),
                denied_requests: p.stats.sandbox.denied_requests.load(Ordering::Relaxed),
                mean_call_ms: if calls == 0 {
                    0.0
                } else {
                    nanos as f64 / calls as f64 / 1e6
                },
                memory_bytes: p.stats.memory_bytes.load(Ordering::Relaxed),
                allowed_hosts: p
                    .manifest
                    .capabilities
                    .allowed_hosts
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
                memory_limit_mb: Some(p.manifest.capabilities.memory_mb),
                call_timeout_ms: Some(p.manifest.capabilities.call_timeout_ms),
                config: p.manifest.config_redacted(),
            }
        }
    }
}

#[utoipa::path(get, path = "/api/v2/plugins", tag = "plugins",
    responses((status = 200, description = "Every plugin in the plugin directory", body = PluginList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Json<PluginList> {
    let plugins = state
        .plugins
        .snapshot()
        .into_iter()
        .map(|(name, plugin, error)| status_of(&name, plugin.as_ref(), error))
        .collect();
    Json(PluginList { plugins })
}

#[utoipa::path(post, path = "/api/v2/plugins/{name}/reload", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name (file stem)")),
    responses(
        (status = 200, description = "Reloaded from disk (also lifts a quarantine)", body = ReloadResult),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 404, description = "No such plugin file", body = ErrorBody),
        (status = 422, description = "The file on disk was rejected", body = ReloadResult)),
    security(("bearer" = [])))]
pub async fn reload(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(axum::http::StatusCode, Json<ReloadResult>), AppError> {
    if !valid_plugin_name(&name) {
        return Err(AppError::InvalidRequest(format!(
            "`{name}` is not a plugin name (lower-case letters, digits, - and _)"
        )));
    }
    let known = state.plugins.snapshot().iter().any(|(n, _, _)| *n == name);
    let on_disk = state.plugins.dir().join(format!("{name}.wasm")).exists();
    if !known && !on_disk {
        return Err(AppError::NotFound(format!(
            "no plugin `{name}` in the plugin directory"
        )));
    }
    let outcome = state.plugins.reload(&name, true).await;
    let (label, error, status) = match &outcome {
        ReloadOutcome::Loaded => ("loaded", None, axum::http::StatusCode::OK),
        ReloadOutcome::Replaced => ("replaced", None, axum::http::StatusCode::OK),
        ReloadOutcome::Unchanged => ("unchanged", None, axum::http::StatusCode::OK),
        ReloadOutcome::Removed => ("removed", None, axum::http::StatusCode::OK),
        ReloadOutcome::Rejected { error, .. } => (
            "rejected",
            Some(error.clone()),
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        ),
    };
    let plugin = state
        .plugins
        .snapshot()
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, p, e)| status_of(&n, p.as_ref(), e));
    Ok((
        status,
        Json(ReloadResult {
            outcome: label.to_string(),
            error,
            plugin,
        }),
    ))
}
