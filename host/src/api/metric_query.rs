//! Metric queries in two dialects over the same stored samples:
//! `GET /api/metrics/query` answers as NoETL does (`{metrics, count, limit}`,
//! newest first, NoETL's parameters), `GET /api/v2/metrics/query` is Vigil's
//! own cursor-paged listing in ingest order. Does not own storage.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::events::json::{response_text, NonFinite};
use crate::metrics::model::{self, format_ms, parse_time_str, MetricKind};
use crate::store::{SampleQuery, StoredSample, StoredSeries};

/// One stored sample with its series.
#[derive(Serialize, ToSchema)]
pub struct QueriedSample {
    pub seq: i64,
    pub component_name: String,
    pub component_type: String,
    pub metric_name: String,
    pub metric_type: MetricKind,
    /// A gauge may be `NaN` or `±Infinity`: written as Python writes them, or as strings with `json=strict`.
    #[serde(serialize_with = "crate::events::json::serialize_f64")]
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

/// One metric row as NoETL's query answers it.
#[derive(Serialize, ToSchema)]
pub struct NoetlMetric {
    /// The sample's sequence number in the log.
    pub metric_id: i64,
    /// The reporting component's numeric id in the registry.
    pub runtime_id: Option<i64>,
    pub component_name: String,
    pub component_type: String,
    pub metric_name: String,
    pub metric_type: MetricKind,
    /// A gauge may be `NaN` or `±Infinity`: written as Python writes them, or as strings with `json=strict`.
    #[serde(serialize_with = "crate::events::json::serialize_f64")]
    pub metric_value: f64,
    /// Null when the metric has no labels (as NoETL).
    pub labels: Option<BTreeMap<String, String>>,
    pub help_text: Option<String>,
    pub unit: Option<String>,
    /// RFC 3339.
    pub timestamp: String,
    /// Always null: Vigil keeps when a sample was measured, not when it arrived.
    pub created_at: Option<String>,
}

/// NoETL's query answer.
#[derive(Serialize, ToSchema)]
pub struct NoetlQueryAnswer {
    pub metrics: Vec<NoetlMetric>,
    pub count: usize,
    pub limit: u32,
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

/// Which API's parameters a query string uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `component_name, metric_name, metric_type, label, start, end, limit, cursor`.
    Vigil,
    /// NoETL's `runtime_id, component_name, metric_name, metric_type,
    /// start_time, end_time, limit` (and Vigil's `label`).
    Noetl,
}

struct QueryParams {
    component: Option<String>,
    runtime_id: Option<i64>,
    metric_name: Option<String>,
    kind: Option<MetricKind>,
    matchers: Vec<LabelMatcher>,
    start_ms: Option<i64>,
    /// Exclusive.
    end_ms: Option<i64>,
    limit: u32,
    after_seq: i64,
    /// How non-finite gauge values are written.
    style: NonFinite,
}

const MAX_QUERY_LIMIT: u32 = 10_000;

fn parse_query(raw: Option<&str>, dialect: Dialect) -> Result<QueryParams, AppError> {
    let mut p = QueryParams {
        component: None,
        runtime_id: None,
        metric_name: None,
        kind: None,
        matchers: Vec::new(),
        start_ms: None,
        end_ms: None,
        limit: 1000,
        after_seq: 0,
        style: NonFinite::Python,
    };
    let time = |key: &str, v: &str| {
        parse_time_str(v).map_err(|e| AppError::InvalidQuery(format!("`{key}`: {e}")))
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match (key.as_ref(), dialect) {
            ("component_name", _) | ("component", Dialect::Vigil) => {
                p.component = Some(value.into_owned())
            }
            ("metric_name", _) => p.metric_name = Some(value.into_owned()),
            ("metric_type", _) => {
                p.kind = Some(MetricKind::parse(&value).ok_or_else(|| {
                    AppError::InvalidQuery(format!(
                        "`metric_type`: `{value}` is not one of counter, gauge, histogram, summary"
                    ))
                })?)
            }
            ("label", _) => p.matchers.push(LabelMatcher::parse(&value)?),
            ("start", Dialect::Vigil) | ("start_time", Dialect::Noetl) => {
                p.start_ms = Some(time(&key, &value)?)
            }
            ("end", Dialect::Vigil) => p.end_ms = Some(time("end", &value)?),
            // NoETL's end_time is inclusive.
            ("end_time", Dialect::Noetl) => p.end_ms = Some(time("end_time", &value)? + 1),
            ("runtime_id", Dialect::Noetl) => {
                p.runtime_id = Some(value.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(
                    || AppError::InvalidQuery("`runtime_id` must be a positive whole number".into()),
                )?)
            }
            ("limit", _) => {
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
            ("json", _) => {
                p.style = NonFinite::from_param(&value).map_err(AppError::InvalidQuery)?
            }
            ("cursor", Dialect::Vigil) => {
                p.after_seq = value
                    .parse::<i64>()
                    .ok()
                    .filter(|s| *s >= 0)
                    .ok_or_else(|| AppError::InvalidQuery("`cursor` is not a cursor this server issued".into()))?
            }
            (other, Dialect::Vigil) => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{other}`; use component_name, metric_name, metric_type, label, start, end, limit, cursor, json"
                )))
            }
            (other, Dialect::Noetl) => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{other}`; use runtime_id, component_name, metric_name, metric_type, start_time, end_time, limit, label, json"
                )))
            }
        }
    }
    if let (Some(s), Some(e)) = (p.start_ms, p.end_ms) {
        if s >= e {
            return Err(AppError::InvalidQuery(match dialect {
                Dialect::Vigil => "`start` must be before `end`".into(),
                Dialect::Noetl => "`start_time` must not be after `end_time`".into(),
            }));
        }
    }
    Ok(p)
}

/// The samples a query selects and the series they belong to.
struct Found {
    rows: Vec<StoredSample>,
    series: HashMap<i64, StoredSeries>,
}

async fn find(state: &AppState, p: &QueryParams, newest_first: bool) -> Result<Found, AppError> {
    let mut component = p.component.clone();
    if let Some(id) = p.runtime_id {
        let named = state
            .store
            .list_components()
            .await?
            .into_iter()
            .find(|c| c.runtime_id == id)
            .map(|c| c.name);
        match named {
            // NoETL: a runtime_id filter wins over component_name.
            Some(name) => component = Some(name),
            None => {
                return Ok(Found {
                    rows: Vec::new(),
                    series: HashMap::new(),
                })
            }
        }
    }
    let filtered = component.is_some()
        || p.metric_name.is_some()
        || p.kind.is_some()
        || !p.matchers.is_empty();
    let mut series: HashMap<i64, StoredSeries> = HashMap::new();
    let mut series_ids = None;
    if filtered {
        let found = state
            .store
            .find_series(component.as_deref(), p.metric_name.as_deref(), None)
            .await?;
        for s in found {
            if p.kind.is_some_and(|k| k != s.kind) {
                continue;
            }
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&s.labels).unwrap_or_default();
            if p.matchers.iter().all(|m| m.matches(&labels)) {
                series.insert(s.id, s);
            }
        }
        if series.is_empty() {
            return Ok(Found {
                rows: Vec::new(),
                series,
            });
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
            newest_first,
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
    Ok(Found { rows, series })
}

/// A JSON answer with non-finite gauge values in the asked style.
fn json_answer<T: Serialize>(answer: &T, style: NonFinite) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        response_text(answer, style),
    )
        .into_response()
}

/// Decodes each series' labels once.
struct LabelCache(HashMap<i64, BTreeMap<String, String>>);

impl LabelCache {
    fn get(&mut self, s: &StoredSeries) -> BTreeMap<String, String> {
        self.0
            .entry(s.id)
            .or_insert_with(|| serde_json::from_str(&s.labels).unwrap_or_default())
            .clone()
    }
}

async fn run_query(state: &AppState, raw: Option<String>) -> Result<Response, AppError> {
    let p = parse_query(raw.as_deref(), Dialect::Vigil)?;
    let Found { rows, series } = find(state, &p, false).await?;
    let next_cursor = (rows.len() == p.limit as usize)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    let mut labels = LabelCache(HashMap::new());
    let samples = rows
        .into_iter()
        .filter_map(|r| {
            let s = series.get(&r.series_id)?;
            Some(QueriedSample {
                seq: r.seq,
                component_name: s.component.clone(),
                component_type: s.component_type.clone(),
                metric_name: s.metric_name.clone(),
                metric_type: s.kind,
                metric_value: r.value,
                timestamp: format_ms(r.ts_ms),
                labels: labels.get(s),
                help_text: s.help.clone(),
                unit: s.unit.clone(),
            })
        })
        .collect();
    Ok(json_answer(
        &QueryPage {
            samples,
            next_cursor,
        },
        p.style,
    ))
}

#[utoipa::path(get, path = "/api/metrics/query", tag = "metrics",
    params(
        ("runtime_id" = Option<i64>, Query, description = "Reporting component by numeric id (wins over component_name)"),
        ("component_name" = Option<String>, Query, description = "Reporting component"),
        ("metric_name" = Option<String>, Query, description = "Metric name"),
        ("metric_type" = Option<String>, Query, description = "counter, gauge, histogram or summary"),
        ("start_time" = Option<String>, Query, description = "Inclusive start, ISO 8601 / RFC 3339 or unix seconds"),
        ("end_time" = Option<String>, Query, description = "Inclusive end, ISO 8601 / RFC 3339 or unix seconds"),
        ("limit" = Option<u32>, Query, description = "At most this many rows, 1 to 10000 (default 1000)"),
        ("label" = Option<Vec<String>>, Query, description = "Repeatable label matcher NAME=VALUE or NAME!=VALUE"),
        ("json" = Option<String>, Query, description = "`python` (default: a NaN or ±Inf gauge as Python's json writes it) or `strict` (as strings)")),
    responses(
        (status = 200, description = "Matching samples, newest first, as NoETL answers", body = NoetlQueryAnswer),
        (status = 400, description = "Invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn query(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let p = parse_query(raw.as_deref(), Dialect::Noetl)?;
    let Found { rows, series } = find(&state, &p, true).await?;
    let mut runtime_ids: HashMap<String, Option<i64>> = HashMap::new();
    let mut labels = LabelCache(HashMap::new());
    let mut metrics = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(s) = series.get(&r.series_id) else {
            continue;
        };
        let runtime_id = match runtime_ids.get(&s.component) {
            Some(id) => *id,
            None => {
                let id = state
                    .components
                    .resolve_runtime_id(state.store.as_ref(), &s.component)
                    .await?;
                runtime_ids.insert(s.component.clone(), id);
                id
            }
        };
        let l = labels.get(s);
        metrics.push(NoetlMetric {
            metric_id: r.seq,
            runtime_id,
            component_name: s.component.clone(),
            component_type: s.component_type.clone(),
            metric_name: s.metric_name.clone(),
            metric_type: s.kind,
            metric_value: r.value,
            labels: (!l.is_empty()).then_some(l),
            help_text: (!s.help.is_empty()).then(|| s.help.clone()),
            unit: (!s.unit.is_empty()).then(|| s.unit.clone()),
            timestamp: format_ms(r.ts_ms),
            created_at: None,
        });
    }
    Ok(json_answer(
        &NoetlQueryAnswer {
            count: metrics.len(),
            metrics,
            limit: p.limit,
        },
        p.style,
    ))
}

#[utoipa::path(get, path = "/api/v2/metrics/query", tag = "metrics",
    params(
        ("component_name" = Option<String>, Query, description = "Reporting component"),
        ("metric_name" = Option<String>, Query, description = "Metric name"),
        ("metric_type" = Option<String>, Query, description = "counter, gauge, histogram or summary"),
        ("label" = Option<Vec<String>>, Query, description = "Repeatable label matcher NAME=VALUE or NAME!=VALUE"),
        ("start" = Option<String>, Query, description = "Inclusive start, RFC 3339 or unix seconds"),
        ("end" = Option<String>, Query, description = "Exclusive end, RFC 3339 or unix seconds"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 10000 (default 1000)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("json" = Option<String>, Query, description = "`python` (default: a NaN or ±Inf gauge as Python's json writes it) or `strict` (as strings)")),
    responses(
        (status = 200, description = "Samples in ingest order", body = QueryPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn query_v2(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    run_query(&state, raw).await
}
