//! Metric routes: NoETL report ingest, query, Prometheus export, self-report
//! and series deletion.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::metrics::index::{ExportScope, ExpositionFormat};
use crate::metrics::model::{
    self, check_component_field, MetricKind, PreparedMetric, PreparedReport,
};
use crate::telemetry::render_export;

/// Answer to an accepted report: NoETL's (`status`, `runtime_id`,
/// `metrics_inserted`) and Vigil's own `accepted`.
#[derive(Serialize, ToSchema)]
pub struct ReportAccepted {
    /// `ok`.
    pub status: &'static str,
    /// The reporting component's stable numeric id in the registry.
    pub runtime_id: Option<i64>,
    /// Number of metrics committed (NoETL's name).
    pub metrics_inserted: usize,
    /// Number of metrics committed.
    pub accepted: usize,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(super) fn body_or_413(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, AppError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge(format!("request body exceeds {limit} bytes"))
        } else if super::connections::is_body_timeout(&rejection) {
            AppError::RequestTimeout(rejection.body_text())
        } else {
            AppError::InvalidRequest(rejection.body_text())
        }
    })
}

async fn ingest(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportAccepted>, AppError> {
    let body = body_or_413(body, state.config.max_body_bytes)?;
    let limit = state.config.max_items_per_request;
    let name_of = |id| state.components.name_of(id);
    let report = match model::parse_report(&body, limit, now_ms(), &name_of) {
        // Perhaps a component another replica registered: learn the
        // registry from the store, then parse again.
        Err(model::ReportError::UnknownRuntimeId(_)) => {
            for c in &state.store.list_components().await? {
                state.components.stored(c);
            }
            model::parse_report(&body, limit, now_ms(), &name_of)?
        }
        other => other?,
    };
    submit(state, report).await.map(Json)
}

async fn submit(state: &AppState, report: PreparedReport) -> Result<ReportAccepted, AppError> {
    if state.config.strict_components && !state.components.is_known(&report.component_name) {
        return Err(AppError::UnknownComponent(report.component_name));
    }
    let component = report.component_name.clone();
    let accepted = state.ingest.submit(report).await?;
    let runtime_id = state
        .components
        .resolve_runtime_id(state.store.as_ref(), &component)
        .await?;
    Ok(ReportAccepted {
        status: "ok",
        runtime_id,
        metrics_inserted: accepted,
        accepted,
    })
}

#[utoipa::path(post, path = "/api/metrics/report", tag = "metrics",
    request_body = crate::metrics::model::MetricReport,
    responses(
        (status = 200, description = "Every metric committed", body = ReportAccepted),
        (status = 400, description = "Malformed JSON or invalid items; nothing stored", body = ErrorBody),
        (status = 404, description = "No component has the report's runtime_id", body = ErrorBody),
        (status = 413, description = "Body or item count over the limit", body = ErrorBody),
        (status = 422, description = "Unknown component with --strict-components", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportAccepted>, AppError> {
    ingest(&state, body).await
}

#[utoipa::path(post, path = "/api/v2/metrics/report", tag = "metrics",
    request_body = crate::metrics::model::MetricReport,
    responses(
        (status = 200, description = "Every metric committed", body = ReportAccepted),
        (status = 400, description = "Malformed JSON or invalid items; nothing stored", body = ErrorBody),
        (status = 404, description = "No component has the report's runtime_id", body = ErrorBody),
        (status = 413, description = "Body or item count over the limit", body = ErrorBody),
        (status = 422, description = "Unknown component with --strict-components", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report_v2(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportAccepted>, AppError> {
    ingest(&state, body).await
}

/// Refreshes the gauges computed from state rather than counted.
pub fn refresh_gauges(state: &AppState) {
    let now = now_ms();
    state.metrics.set_live_series(
        state
            .index
            .live_series(now, state.config.series_ttl.as_millis() as i64),
    );
    state.metrics.set_components_alive(
        state
            .components
            .alive(now, state.config.component_stale_after),
    );
}

#[utoipa::path(get, path = "/api/metrics/prometheus", tag = "metrics",
    params(
        ("component_name" = Option<String>, Query, description = "Only this component's series (and none of the host's own)"),
        ("runtime_id" = Option<i64>, Query, description = "Only the series of the component with this numeric id (wins over component_name)")),
    responses(
        (status = 200, description = "Latest value of every live series, each with `component` and `component_type`, plus the host's own metrics; OpenMetrics when Accept asks for it", content_type = "text/plain"),
        (status = 400, description = "Unknown or invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn prometheus(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<impl IntoResponse, AppError> {
    let mut component: Option<String> = None;
    let mut runtime_id: Option<i64> = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "component_name" => component = Some(value.into_owned()),
            "runtime_id" => {
                runtime_id = Some(value.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(
                    || {
                        AppError::InvalidQuery(
                            "`runtime_id` must be a positive whole number".into(),
                        )
                    },
                )?)
            }
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{other}`; use component_name, runtime_id"
                )))
            }
        }
    }
    if let Some(id) = runtime_id {
        // NoETL: runtime_id wins; an id nobody has selects nothing.
        component = Some(
            state
                .store
                .list_components()
                .await?
                .into_iter()
                .find(|c| c.runtime_id == id)
                .map(|c| c.name)
                .unwrap_or_else(|| "\0".to_string()),
        );
    }
    refresh_gauges(&state);
    let format =
        ExpositionFormat::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let types = state.components.types();
    let scope = ExportScope {
        component: component.as_deref(),
        component_types: Some(&types),
    };
    let mut body = render_export(
        &state.index,
        &state.metrics,
        Some(&state.plugins),
        format,
        now_ms(),
        state.config.series_ttl.as_millis() as i64,
        &scope,
    );
    if component.is_none() {
        // Operational gauges: executions, queues, dependencies, streams (issue 13).
        let gauges = crate::telemetry::operations::render_gauges(
            state.store.as_ref(),
            &state.plugins,
            &state.delivery,
            &state.live,
            now_ms(),
        )
        .await;
        crate::telemetry::operations::insert_gauges(&mut body, &gauges);
    }
    Ok(([(header::CONTENT_TYPE, format.content_type())], body))
}

/// Builds the self-report of the host's CPU, memory and RSS for a component.
pub async fn self_report_for(state: &AppState, component: &str) -> PreparedReport {
    let sample = state.sampler.sample().await;
    let ts_ms = now_ms();
    let gauge = |name: &str, value: f64, help: &str, unit: &str| PreparedMetric {
        name: name.to_string(),
        kind: MetricKind::Gauge,
        value,
        ts_ms,
        labels: BTreeMap::new(),
        help: help.to_string(),
        unit: unit.to_string(),
        bounds: None,
        labels_key: String::new(),
        fingerprint: 0,
    };
    let gauges = [
        (
            "noetl_system_cpu_usage_percent",
            sample.cpu_percent,
            "CPU usage percentage",
            "percent",
        ),
        (
            "noetl_system_memory_usage_bytes",
            sample.memory_used_bytes,
            "Memory usage in bytes",
            "bytes",
        ),
        (
            "noetl_system_memory_usage_percent",
            sample.memory_percent,
            "Memory usage percentage",
            "percent",
        ),
        (
            "noetl_process_cpu_percent",
            sample.process_cpu_percent,
            "Process CPU usage percentage",
            "percent",
        ),
        (
            "noetl_process_memory_rss_bytes",
            sample.rss_bytes,
            "Process RSS memory in bytes",
            "bytes",
        ),
        (
            "noetl_process_start_time_seconds",
            sample.process_start_time_seconds,
            "Process start time since unix epoch",
            "seconds",
        ),
        (
            "noetl_uptime_seconds",
            sample.uptime_seconds,
            "Component uptime in seconds",
            "seconds",
        ),
    ];
    PreparedReport::new(
        component.to_string(),
        "server".to_string(),
        gauges
            .into_iter()
            .map(|(name, value, help, unit)| gauge(name, value, help, unit))
            .collect(),
    )
}

/// Answer to a self-report, as NoETL's.
#[derive(Serialize, ToSchema)]
pub struct SelfReported {
    /// `ok`.
    pub status: &'static str,
    pub component_name: String,
    pub runtime_id: Option<i64>,
    pub metrics_reported: usize,
}

#[utoipa::path(post, path = "/api/metrics/self-report", tag = "metrics",
    params(("component_name" = Option<String>, Query, description = "Component the host reports as (default: --self-report-component)")),
    responses(
        (status = 200, description = "The host's CPU, memory, RSS, start time and uptime committed", body = SelfReported),
        (status = 400, description = "Invalid component_name", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn self_report(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SelfReported>, AppError> {
    let component = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "component_name")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| state.config.self_report_component.clone());
    check_component_field(&component)
        .map_err(|e| AppError::InvalidQuery(format!("`component_name` {e}")))?;
    let report = self_report_for(&state, &component).await;
    let done = submit(&state, report).await?;
    Ok(Json(SelfReported {
        status: "ok",
        component_name: component,
        runtime_id: done.runtime_id,
        metrics_reported: done.accepted,
    }))
}

/// Answer to a series deletion.
#[derive(Serialize, ToSchema)]
pub struct SeriesDeleted {
    pub deleted_series: u64,
}

#[utoipa::path(delete, path = "/api/v2/metrics/series", tag = "metrics",
    params(("component" = String, Query, description = "Component whose series leave the export")),
    responses(
        (status = 200, description = "Series removed from the export; stored samples stay queryable", body = SeriesDeleted),
        (status = 400, description = "Missing component", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_series(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SeriesDeleted>, AppError> {
    let component = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "component" || k == "component_name")
        .map(|(_, v)| v.into_owned())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| AppError::InvalidQuery("`component` is required".into()))?;
    let deleted = state.store.delete_series_of(&component).await?;
    state.index.remove_component(&component);
    Ok(Json(SeriesDeleted {
        deleted_series: deleted,
    }))
}
