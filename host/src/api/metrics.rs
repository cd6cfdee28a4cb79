//! Metric routes: NoETL report ingest, query, Prometheus export, self-report
//! and series deletion.

use std::collections::{BTreeMap, HashMap, HashSet};

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
use crate::metrics::index::ExpositionFormat;
use crate::metrics::model::{
    self, check_component_field, format_ms, parse_time_str, MetricKind, PreparedMetric,
    PreparedReport,
};
use crate::store::{SampleQuery, StoredSeries};
use crate::telemetry::render_export;

/// Answer to an accepted report.
#[derive(Serialize, ToSchema)]
pub struct ReportAccepted {
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
    let report = model::parse_report(&body, state.config.max_items_per_request, now_ms())?;
    submit(state, report).await
}

async fn submit(
    state: &AppState,
    report: PreparedReport,
) -> Result<Json<ReportAccepted>, AppError> {
    if state.config.strict_components && !state.components.is_known(&report.component_name) {
        return Err(AppError::UnknownComponent(report.component_name));
    }
    let accepted = state.ingest.submit(report).await?;
    Ok(Json(ReportAccepted { accepted }))
}

#[utoipa::path(post, path = "/api/metrics/report", tag = "metrics",
    request_body = crate::metrics::model::MetricReport,
    responses(
        (status = 200, description = "Every metric committed", body = ReportAccepted),
        (status = 400, description = "Malformed JSON or invalid items; nothing stored", body = ErrorBody),
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
        (status = 413, description = "Body or item count over the limit", body = ErrorBody),
        (status = 422, description = "Unknown component with --strict-components", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn report_v2(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportAccepted>, AppError> {
    ingest(&state, body).await
}

/// One stored sample with its series.
#[derive(Serialize, ToSchema)]
pub struct QueriedSample {
    pub seq: i64,
    pub component_name: String,
    pub component_type: String,
    pub metric_name: String,
    pub metric_type: MetricKind,
    pub metric_value: f64,
    /// RFC 3339.
    pub timestamp: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub help_text: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

/// A page of samples.
#[derive(Serialize, ToSchema)]
pub struct QueryPage {
    pub samples: Vec<QueriedSample>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

enum LabelMatcher {
    Equal(String, String),
    NotEqual(String, String),
}

impl LabelMatcher {
    fn parse(raw: &str) -> Result<Self, AppError> {
        let (name, value, negate) = if let Some((n, v)) = raw.split_once("!=") {
            (n, v, true)
        } else if let Some((n, v)) = raw.split_once('=') {
            (n, v, false)
        } else {
            return Err(AppError::InvalidQuery(format!(
                "label matcher `{raw}` must be NAME=VALUE or NAME!=VALUE"
            )));
        };
        if !model::is_valid_label_name(name) {
            return Err(AppError::InvalidQuery(format!(
                "`{name}` is not a valid label name"
            )));
        }
        let value = value.trim_matches('"').to_string();
        Ok(if negate {
            LabelMatcher::NotEqual(name.into(), value)
        } else {
            LabelMatcher::Equal(name.into(), value)
        })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelMatcher::Equal(n, v) => labels.get(n).map(String::as_str).unwrap_or("") == v,
            LabelMatcher::NotEqual(n, v) => labels.get(n).map(String::as_str).unwrap_or("") != v,
        }
    }
}

struct QueryParams {
    component: Option<String>,
    metric_name: Option<String>,
    matchers: Vec<LabelMatcher>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    limit: u32,
    after_seq: i64,
}

const MAX_QUERY_LIMIT: u32 = 10_000;

fn parse_query(raw: Option<&str>) -> Result<QueryParams, AppError> {
    let mut p = QueryParams {
        component: None,
        metric_name: None,
        matchers: Vec::new(),
        start_ms: None,
        end_ms: None,
        limit: 1000,
        after_seq: 0,
    };
    let time = |key: &str, v: &str| {
        parse_time_str(v).map_err(|e| AppError::InvalidQuery(format!("`{key}`: {e}")))
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "component_name" | "component" => p.component = Some(value.into_owned()),
            "metric_name" => p.metric_name = Some(value.into_owned()),
            "label" => p.matchers.push(LabelMatcher::parse(&value)?),
            "start" => p.start_ms = Some(time("start", &value)?),
            "end" => p.end_ms = Some(time("end", &value)?),
            "limit" => {
                p.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_QUERY_LIMIT).contains(l))
                    .ok_or_else(|| {
                        AppError::InvalidQuery(format!(
                            "`limit` must be a whole number from 1 to {MAX_QUERY_LIMIT}"
                        ))
                    })?
            }
            "cursor" => {
                p.after_seq = value
                    .parse::<i64>()
                    .ok()
                    .filter(|s| *s >= 0)
                    .ok_or_else(|| AppError::InvalidQuery("`cursor` is not a cursor this server issued".into()))?
            }
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{other}`; use component_name, metric_name, label, start, end, limit, cursor"
                )))
            }
        }
    }
    if let (Some(s), Some(e)) = (p.start_ms, p.end_ms) {
        if s >= e {
            return Err(AppError::InvalidQuery(
                "`start` must be before `end`".into(),
            ));
        }
    }
    Ok(p)
}

async fn run_query(state: &AppState, raw: Option<String>) -> Result<Json<QueryPage>, AppError> {
    let p = parse_query(raw.as_deref())?;
    let filtered = p.component.is_some() || p.metric_name.is_some() || !p.matchers.is_empty();
    let mut series: HashMap<i64, StoredSeries> = HashMap::new();
    let mut series_ids = None;
    if filtered {
        let found = state
            .store
            .find_series(p.component.as_deref(), p.metric_name.as_deref(), None)
            .await?;
        for s in found {
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&s.labels).unwrap_or_default();
            if p.matchers.iter().all(|m| m.matches(&labels)) {
                series.insert(s.id, s);
            }
        }
        if series.is_empty() {
            return Ok(Json(QueryPage {
                samples: Vec::new(),
                next_cursor: None,
            }));
        }
        let mut ids: Vec<i64> = series.keys().copied().collect();
        ids.sort_unstable();
        series_ids = Some(ids);
    }
    let rows = state
        .store
        .query_samples(&SampleQuery {
            series_ids,
            start_ms: p.start_ms,
            end_ms: p.end_ms,
            after_seq: p.after_seq,
            limit: p.limit,
        })
        .await?;
    if !filtered {
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.series_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !ids.is_empty() {
            for s in state.store.find_series(None, None, Some(&ids)).await? {
                series.insert(s.id, s);
            }
        }
    }
    let next_cursor = (rows.len() == p.limit as usize)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    let mut labels_cache: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    let samples = rows
        .into_iter()
        .filter_map(|r| {
            let s = series.get(&r.series_id)?;
            let labels = labels_cache
                .entry(r.series_id)
                .or_insert_with(|| serde_json::from_str(&s.labels).unwrap_or_default())
                .clone();
            Some(QueriedSample {
                seq: r.seq,
                component_name: s.component.clone(),
                component_type: s.component_type.clone(),
                metric_name: s.metric_name.clone(),
                metric_type: s.kind,
                metric_value: r.value,
                timestamp: format_ms(r.ts_ms),
                labels,
                help_text: s.help.clone(),
                unit: s.unit.clone(),
            })
        })
        .collect();
    Ok(Json(QueryPage {
        samples,
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/metrics/query", tag = "metrics",
    params(
        ("component_name" = Option<String>, Query, description = "Reporting component"),
        ("metric_name" = Option<String>, Query, description = "Metric name"),
        ("label" = Option<Vec<String>>, Query, description = "Repeatable label matcher NAME=VALUE or NAME!=VALUE"),
        ("start" = Option<String>, Query, description = "Inclusive start, RFC 3339 or unix seconds"),
        ("end" = Option<String>, Query, description = "Exclusive end, RFC 3339 or unix seconds"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 10000 (default 1000)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "Samples in ingest order", body = QueryPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn query(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<QueryPage>, AppError> {
    run_query(&state, raw).await
}

#[utoipa::path(get, path = "/api/v2/metrics/query", tag = "metrics",
    params(
        ("component_name" = Option<String>, Query, description = "Reporting component"),
        ("metric_name" = Option<String>, Query, description = "Metric name"),
        ("label" = Option<Vec<String>>, Query, description = "Repeatable label matcher NAME=VALUE or NAME!=VALUE"),
        ("start" = Option<String>, Query, description = "Inclusive start, RFC 3339 or unix seconds"),
        ("end" = Option<String>, Query, description = "Exclusive end, RFC 3339 or unix seconds"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 10000 (default 1000)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "Samples in ingest order", body = QueryPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn query_v2(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<QueryPage>, AppError> {
    run_query(&state, raw).await
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
    responses((status = 200, description = "Latest value of every live series plus the host's own metrics; OpenMetrics when Accept asks for it", content_type = "text/plain")),
    security(("bearer" = [])))]
pub async fn prometheus(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    refresh_gauges(&state);
    let format =
        ExpositionFormat::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let mut body = render_export(
        &state.index,
        &state.metrics,
        Some(&state.plugins),
        format,
        now_ms(),
        state.config.series_ttl.as_millis() as i64,
    );
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
    ([(header::CONTENT_TYPE, format.content_type())], body)
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
    PreparedReport::new(
        component.to_string(),
        "server".to_string(),
        vec![
            gauge(
                "noetl_system_cpu_usage_percent",
                sample.cpu_percent,
                "CPU usage percentage",
                "percent",
            ),
            gauge(
                "noetl_system_memory_usage_percent",
                sample.memory_percent,
                "Memory usage percentage",
                "percent",
            ),
            gauge(
                "noetl_process_memory_rss_bytes",
                sample.rss_bytes,
                "Resident set size of the host process",
                "bytes",
            ),
        ],
    )
}

#[utoipa::path(post, path = "/api/metrics/self-report", tag = "metrics",
    params(("component_name" = String, Query, description = "Component the host reports as")),
    responses(
        (status = 200, description = "The host's CPU %, memory % and RSS committed", body = ReportAccepted),
        (status = 400, description = "Missing or invalid component_name", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn self_report(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReportAccepted>, AppError> {
    let component = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "component_name")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| AppError::InvalidQuery("`component_name` is required".into()))?;
    check_component_field(&component)
        .map_err(|e| AppError::InvalidQuery(format!("`component_name` {e}")))?;
    let report = self_report_for(&state, &component).await;
    submit(&state, report).await
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
