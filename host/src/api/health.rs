//! Liveness, readiness and the host's own metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::metrics::index::ExpositionFormat;
use crate::telemetry::render_host_metrics;

/// Liveness answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// One readiness check.
#[derive(Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Extra numbers (e.g. plugins loaded, failed, quarantined).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
    /// Whether a failure makes the whole answer 503.
    pub critical: bool,
}

/// Readiness answer with per-check detail.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, Check>,
    /// Every dependency (the database, each plugin, each publisher) with
    /// `ok` and, when failing, its `reason`: what `vigil_dependency_up` shows.
    #[schema(value_type = Vec<Object>)]
    pub dependencies: Vec<crate::telemetry::operations::Dependency>,
}

#[utoipa::path(get, path = "/api/v2/health", tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/api/v2/ready", tag = "health",
    responses(
        (status = 200, description = "Every check passes", body = Readiness),
        (status = 503, description = "A check fails", body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "{} did not answer within 2s",
            state.store.backend()
        )),
    };
    let database = Check {
        ok: database.is_none(),
        error: database,
        detail: None,
        critical: true,
    };
    let (loaded, failed, quarantined) = state.plugins.counts();
    let plugins = Check {
        ok: failed == 0 && quarantined == 0,
        error: (failed + quarantined > 0).then(|| {
            format!(
                "{failed} plugin(s) failed to load, {quarantined} quarantined; see /api/v2/plugins"
            )
        }),
        detail: Some(
            serde_json::json!({"loaded": loaded, "failed": failed, "quarantined": quarantined}),
        ),
        critical: false,
    };
    // Publishers that cannot deliver make readiness say so, but do not take
    // the replica out of service: ingest still commits, delivery catches up.
    let delivery = match (database.ok, state.delivery.status().await) {
        (true, Ok(publishers)) => {
            let failing: Vec<&str> = publishers
                .iter()
                .filter(|p| p.state == "backing_off")
                .map(|p| p.name.as_str())
                .collect();
            let detail: serde_json::Map<String, serde_json::Value> = publishers
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        serde_json::json!({"state": p.state, "lag": p.lag}),
                    )
                })
                .collect();
            Check {
                ok: failing.is_empty(),
                error: (!failing.is_empty()).then(|| {
                    format!(
                        "delivery failing for {}; see /api/v2/publishers",
                        failing.join(", ")
                    )
                }),
                detail: Some(serde_json::Value::Object(detail)),
                critical: false,
            }
        }
        (_, Err(e)) => Check {
            ok: false,
            error: Some(e.to_string()),
            detail: None,
            critical: false,
        },
        (false, _) => Check {
            ok: false,
            error: Some("the database is unreachable".into()),
            detail: None,
            critical: false,
        },
    };
    let ok = database.ok;
    let dependencies = crate::telemetry::operations::dependencies(
        state.store.as_ref(),
        &state.plugins,
        &state.delivery,
    )
    .await;
    let mut checks = BTreeMap::new();
    checks.insert("database", database);
    checks.insert("plugins", plugins);
    checks.insert("delivery_queues", delivery);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if ok { "ready" } else { "not_ready" },
            checks,
            dependencies,
        }),
    )
}

#[utoipa::path(get, path = "/api/v2/metrics", tag = "health",
    responses((status = 200, description = "The host's own metrics (`vigil_*`, plugins included), Prometheus text or OpenMetrics by Accept", content_type = "text/plain")),
    security(("bearer" = [])))]
pub async fn own_metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    super::metrics::refresh_gauges(&state);
    let format =
        ExpositionFormat::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let mut body = String::with_capacity(16 * 1024);
    render_host_metrics(&mut body, &state.metrics, Some(&state.plugins), format);
    ([(header::CONTENT_TYPE, format.content_type())], body)
}
