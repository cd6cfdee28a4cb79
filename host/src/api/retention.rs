//! NoETL's retention controls: `POST /api/metrics/ttl/set`,
//! `/ttl/extend-component` (a metric name's or a component's samples kept
//! longer or shorter than `--retention`) and `/cleanup` (retention now).

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::metrics::model::check_component_field;
use crate::store::{RetentionRule, RuleScope};

/// Longest accepted rule, in days (100 years).
const MAX_TTL_DAYS: i64 = 36_500;
const DAY_MS: i64 = 86_400_000;

/// Answer to a retention rule, as NoETL's.
#[derive(Serialize, ToSchema)]
pub struct TtlUpdated {
    /// `ok`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_name: Option<String>,
    /// Stored series the rule applies to now (NoETL counts metric rows).
    pub updated_metrics: usize,
    pub new_ttl_days: i64,
    pub message: String,
}

/// What a cleanup removed.
#[derive(Serialize, ToSchema)]
pub struct CleanupDone {
    /// `ok`.
    pub status: &'static str,
    pub deleted_samples: u64,
    pub deleted_events: u64,
    pub message: String,
}

fn params(raw: Option<String>, name_key: &str) -> Result<(String, i64), AppError> {
    let mut name = None;
    let mut days = 1;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            k if k == name_key => name = Some(value.into_owned()),
            "ttl_days" => {
                days = value
                    .parse::<i64>()
                    .ok()
                    .filter(|d| (1..=MAX_TTL_DAYS).contains(d))
                    .ok_or_else(|| {
                        AppError::InvalidQuery(format!(
                            "`ttl_days` must be a whole number from 1 to {MAX_TTL_DAYS}"
                        ))
                    })?
            }
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{other}`; use {name_key}, ttl_days"
                )))
            }
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AppError::InvalidQuery(format!("`{name_key}` is required")))?;
    check_component_field(&name)
        .map_err(|e| AppError::InvalidQuery(format!("`{name_key}` {e}")))?;
    Ok((name, days))
}

async fn set_rule(
    state: &AppState,
    scope: RuleScope,
    name: String,
    days: i64,
) -> Result<usize, AppError> {
    state
        .store
        .set_retention_rule(&RetentionRule {
            scope,
            name: name.clone(),
            ttl_ms: days * DAY_MS,
        })
        .await?;
    let series = match scope {
        RuleScope::Metric => state.store.find_series(None, Some(&name), None).await?,
        RuleScope::Component => state.store.find_series(Some(&name), None, None).await?,
    };
    Ok(series.len())
}

#[utoipa::path(post, path = "/api/metrics/ttl/set", tag = "metrics",
    params(
        ("metric_name" = String, Query, description = "Metric name whose samples are kept ttl_days"),
        ("ttl_days" = Option<i64>, Query, description = "Days to keep them, 1 to 36500 (default 1)")),
    responses(
        (status = 200, description = "Rule stored; it applies to samples stored now and later", body = TtlUpdated),
        (status = 400, description = "Missing or invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_metric_ttl(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TtlUpdated>, AppError> {
    let (name, days) = params(raw, "metric_name")?;
    let n = set_rule(&state, RuleScope::Metric, name.clone(), days).await?;
    Ok(Json(TtlUpdated {
        status: "ok",
        message: format!("samples of {n} series named '{name}' are kept {days} day(s)"),
        metric_name: Some(name),
        component_name: None,
        updated_metrics: n,
        new_ttl_days: days,
    }))
}

#[utoipa::path(post, path = "/api/metrics/ttl/extend-component", tag = "metrics",
    params(
        ("component_name" = String, Query, description = "Component whose samples are kept ttl_days"),
        ("ttl_days" = Option<i64>, Query, description = "Days to keep them, 1 to 36500 (default 1)")),
    responses(
        (status = 200, description = "Rule stored; a metric name's own rule still wins", body = TtlUpdated),
        (status = 400, description = "Missing or invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn extend_component_ttl(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TtlUpdated>, AppError> {
    let (name, days) = params(raw, "component_name")?;
    let n = set_rule(&state, RuleScope::Component, name.clone(), days).await?;
    Ok(Json(TtlUpdated {
        status: "ok",
        message: format!("samples of {n} series from component '{name}' are kept {days} day(s)"),
        metric_name: None,
        component_name: Some(name),
        updated_metrics: n,
        new_ttl_days: days,
    }))
}

#[utoipa::path(post, path = "/api/metrics/cleanup", tag = "metrics",
    responses(
        (status = 200, description = "Retention ran now; what it removed", body = CleanupDone),
        (status = 400, description = "Unexpected parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cleanup(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CleanupDone>, AppError> {
    if let Some((key, _)) = form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).next() {
        return Err(AppError::InvalidQuery(format!(
            "unknown parameter `{key}`; cleanup takes none"
        )));
    }
    let removed = crate::retention::run(
        state.store.as_ref(),
        state.config.retention,
        chrono::Utc::now().timestamp_millis(),
        &|| false,
    )
    .await?;
    Ok(Json(CleanupDone {
        status: "ok",
        deleted_samples: removed.samples,
        deleted_events: removed.events,
        message: format!(
            "removed {} sample(s) and {} event(s) past their retention",
            removed.samples, removed.events
        ),
    }))
}
