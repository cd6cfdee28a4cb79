//! `/api/v2/alert-rules` (create, list, read, update, delete), `/api/v2/alerts`
//! (pending and firing alerts, from the evaluator's stored state, so every
//! replica answers the same) and `/api/v2/query` (a PromQL instant query over
//! the stored samples, answered as Prometheus's `/api/v1/query` answers, with
//! the evaluator's own code). What a rule may say lives in `alerts::rules`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::AppError;
use super::AppState;
use crate::alerts::rules::{self, RuleError, RuleSpec};
use crate::alerts::state::{AlertState, RuleState};
use crate::alerts::{promql, rfc3339};
use crate::metrics::model::parse_time_str;
use crate::store::{ChannelRow, RuleRow};

/// A sample value as Prometheus's HTTP API writes it
/// (`strconv.FormatFloat(v, 'f', -1, 64)`: no exponent).
fn api_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl From<RuleError> for AppError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Malformed(m) => AppError::MalformedJson(m),
            RuleError::Invalid(items) => AppError::InvalidBody(items),
        }
    }
}

fn check_path_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(AppError::NotFound(format!(
            "no alert rule `{}`",
            id.escape_debug()
        )));
    }
    Ok(())
}

fn spec_of(row: &RuleRow) -> Result<RuleSpec, AppError> {
    serde_json::from_str(&row.spec)
        .map_err(|e| AppError::Internal(format!("stored rule `{}` cannot be read: {e}", row.name)))
}

async fn rule_or_404(state: &AppState, id: &str) -> Result<RuleRow, AppError> {
    check_path_id(id)?;
    state
        .store
        .get_rule(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no alert rule `{id}`")))
}

fn lookup(channels: &[ChannelRow]) -> impl Fn(&str) -> Option<String> + '_ {
    move |r: &str| {
        channels
            .iter()
            .find(|c| c.id == r || c.name == r)
            .map(|c| c.id.clone())
    }
}

/// A rule with what its last evaluation found.
fn rule_json(row: &RuleRow, spec: &RuleSpec, state: Option<&RuleState>) -> Value {
    let mut v = rules::to_json(&row.id, spec, row.created_ms, row.updated_ms);
    let count =
        |s: AlertState| state.map_or(0, |st| st.alerts.values().filter(|a| a.state == s).count());
    v["health"] = json!(match state {
        Some(s) if s.last_error.is_some() => "err",
        Some(s) if s.last_eval_ms.is_some() => "ok",
        _ => "unknown",
    });
    v["last_error"] = json!(state.and_then(|s| s.last_error.clone()));
    v["last_evaluation"] = json!(state.and_then(|s| s.last_eval_ms).map(rfc3339));
    v["evaluation_ms"] = json!(state.map(|s| s.last_duration_ms));
    v["alerts"] =
        json!({"pending": count(AlertState::Pending), "firing": count(AlertState::Firing)});
    v
}

/// Every rule's state: as this replica's evaluator holds it, else as stored.
async fn states(state: &AppState) -> Result<Vec<(String, RuleState)>, AppError> {
    let mut live = state.alerts.live_states().await.unwrap_or_default();
    let mut out: Vec<(String, RuleState)> = state
        .store
        .list_rule_states()
        .await?
        .into_iter()
        .filter_map(|(id, s)| match live.remove(&id) {
            Some(l) => Some((id, l)),
            None => Some((id, serde_json::from_str(&s).ok()?)),
        })
        .collect();
    out.extend(live);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[utoipa::path(get, path = "/api/v2/alert-rules", tag = "alerting",
    responses((status = 200, description = "`{rules: [...]}` by name: each rule as written (durations as \
        Prometheus writes them) with `id`, `health` (ok, err, unknown), `last_error`, `last_evaluation`, \
        `evaluation_ms` and `alerts` (pending and firing counts)", body = Object)),
    security(("bearer" = [])))]
pub async fn list_rules(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let rows = state.store.list_rules().await?;
    let saved = states(&state).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let s = saved.iter().find(|(id, _)| *id == row.id).map(|(_, s)| s);
        out.push(rule_json(row, &spec_of(row)?, s));
    }
    Ok(Json(json!({"rules": out})))
}

#[utoipa::path(post, path = "/api/v2/alert-rules", tag = "alerting",
    request_body(content = Object, description = "`name` and `expr` (PromQL) required; `for`, \
        `keep_firing_for` (default 0s), `labels`, `annotations` (templated: {{ $labels.x }}, {{ $value }}), \
        `interval` (default 15s), `channels` (names or ids), `group_by`, `group_wait` (30s), \
        `group_interval` (5m), `repeat_interval` (4h), `no_data` (ok, keep_state, alerting), \
        `on_error` (keep_state, alerting, ok), `enabled` (true)."),
    responses(
        (status = 201, description = "Created", body = Object),
        (status = 400, description = "Invalid body; each problem named by field, a bad expression with \
            the parser's message and position; nothing stored", body = super::error::ErrorBody),
        (status = 409, description = "A rule with that name exists", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_rule(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let channels = state.store.list_channels().await?;
    let spec = rules::parse(&body, None, &lookup(&channels))?;
    let now = now_ms();
    let row = RuleRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: spec.name.clone(),
        spec: serde_json::to_string(&spec).map_err(|e| AppError::Internal(e.to_string()))?,
        created_ms: now,
        updated_ms: now,
    };
    if !state.store.insert_rule(&row).await? {
        return Err(AppError::Conflict(
            "already_exists",
            format!("an alert rule named `{}` exists", row.name),
        ));
    }
    state.alerts.rules_changed();
    tracing::info!(rule = %row.name, "alert rule created");
    Ok((StatusCode::CREATED, Json(rule_json(&row, &spec, None))))
}

#[utoipa::path(post, path = "/api/v2/alert-rules/import", tag = "alerting",
    params(("channels" = Option<String>, Query, description = "Comma-separated channel names or ids every imported rule notifies"),
        ("replace" = Option<bool>, Query, description = "Replace rules of the same name instead of answering 409")),
    request_body(content = String, description = "A Prometheus rule file (`groups:` YAML)", content_type = "application/yaml"),
    responses(
        (status = 201, description = "`{created: [...rules], replaced: [...names], skipped: [{group, record, reason}]}`", body = Object),
        (status = 400, description = "Not a rule file, or a bad rule (named by its place, e.g. \
            `groups[0].rules[2].expr`); nothing created", body = super::error::ErrorBody),
        (status = 409, description = "A rule of that name exists (without replace)", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn import_rules(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| AppError::InvalidRequest("the rule file is not UTF-8".into()))?;
    let channels = state.store.list_channels().await?;
    let (mut ids, mut replace) = (Vec::new(), false);
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "channels" => {
                for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    let id = lookup(&channels)(r).ok_or_else(|| {
                        AppError::InvalidQuery(format!(
                            "`channels`: no notification channel named or with id `{}`",
                            r.escape_debug()
                        ))
                    })?;
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            "replace" => {
                replace = match v.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(AppError::InvalidQuery("`replace` is true or false".into())),
                }
            }
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{}`; use channels, replace",
                    other.escape_debug()
                )))
            }
        }
    }
    let imported = crate::alerts::rule_file::parse(text, &ids).map_err(|e| match e {
        RuleError::Malformed(m) => AppError::InvalidRequest(m),
        other => other.into(),
    })?;
    let mut existing = Vec::new();
    for spec in &imported.rules {
        if let Some(row) = state.store.rule_by_name(&spec.name).await? {
            if !replace {
                return Err(AppError::Conflict(
                    "already_exists",
                    format!(
                        "an alert rule named `{}` exists; pass replace=true to replace it",
                        spec.name
                    ),
                ));
            }
            existing.push(row);
        }
    }
    let now = now_ms();
    let (mut created, mut replaced) = (Vec::new(), Vec::new());
    for spec in &imported.rules {
        let text = serde_json::to_string(spec).map_err(|e| AppError::Internal(e.to_string()))?;
        match existing.iter().find(|r| r.name == spec.name) {
            Some(old) => {
                let row = RuleRow {
                    spec: text,
                    updated_ms: now.max(old.updated_ms + 1),
                    ..old.clone()
                };
                state.store.update_rule(&row).await?;
                replaced.push(row.name.clone());
                created.push(rule_json(&row, spec, None));
            }
            None => {
                let row = RuleRow {
                    id: uuid::Uuid::new_v4().to_string(),
                    name: spec.name.clone(),
                    spec: text,
                    created_ms: now,
                    updated_ms: now,
                };
                if !state.store.insert_rule(&row).await? {
                    return Err(AppError::Conflict(
                        "already_exists",
                        format!("an alert rule named `{}` exists", row.name),
                    ));
                }
                created.push(rule_json(&row, spec, None));
            }
        }
    }
    state.alerts.rules_changed();
    tracing::info!(
        rules = created.len(),
        skipped = imported.skipped.len(),
        "rule file imported"
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "created": created,
            "replaced": replaced,
            "skipped": imported.skipped.iter().map(|(g, r, why)| json!({"group": g, "record": r, "reason": why}))
                .collect::<Vec<_>>(),
        })),
    ))
}

#[utoipa::path(post, path = "/api/v2/alert-rules/preview", tag = "alerting",
    request_body(content = Object, description = "`rule` (a rule body as for create; `channels` are \
        ignored), `start` and `end` (RFC 3339 or unix seconds, at most 100,000 steps apart), `step` \
        (default: the rule's interval)."),
    responses(
        (status = 200, description = "`evaluations`, `alerts` (each `labels` and `transitions`: pending, \
            firing, resolved, inactive with times), `notifications` (when each would have been sent, \
            its status and alert count), `notifications_total`, `errors`. Nothing is sent or stored.", body = Object),
        (status = 400, description = "Invalid rule, range or step", body = super::error::ErrorBody),
        (status = 422, description = "The history could not be read", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview_rule(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    use crate::metrics::model::ItemError;
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| AppError::MalformedJson(e.to_string()))?;
    let bad = |field: &str, reason: String| {
        AppError::InvalidBody(vec![ItemError {
            index: None,
            field: field.to_string(),
            reason,
        }])
    };
    let Value::Object(mut map) = value else {
        return Err(bad("body", "must be a JSON object".into()));
    };
    for k in map.keys() {
        if !["rule", "start", "end", "step"].contains(&k.as_str()) {
            return Err(bad(k, "unknown field; use rule, start, end, step".into()));
        }
    }
    let Some(Value::Object(mut rule)) = map.remove("rule") else {
        return Err(bad("rule", "required: a rule body".into()));
    };
    rule.remove("channels");
    let spec = rules::parse_object(rule, None, &|_| None).map_err(|e| match e {
        RuleError::Malformed(m) => AppError::MalformedJson(m),
        RuleError::Invalid(items) => AppError::InvalidBody(
            items
                .into_iter()
                .map(|mut i| {
                    i.field = format!("rule.{}", i.field);
                    i
                })
                .collect(),
        ),
    })?;
    let time = |key: &str| -> Result<i64, AppError> {
        match map.get(key) {
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| (f * 1_000.0).round() as i64)
                .ok_or_else(|| bad(key, "not a time".into())),
            Some(Value::String(s)) => parse_time_str(s).map_err(|e| bad(key, e)),
            _ => Err(bad(key, "required: RFC 3339 or unix seconds".into())),
        }
    };
    let (start, end) = (time("start")?, time("end")?);
    if end < start {
        return Err(bad("end", "must not be before start".into()));
    }
    let step = match map.get("step") {
        None => spec.interval_ms,
        Some(Value::String(s)) => rules::parse_duration(s).map_err(|e| bad("step", e))?,
        Some(_) => return Err(bad("step", "a duration like 15s".into())),
    };
    if step < 1_000 {
        return Err(bad("step", "at least 1s".into()));
    }
    if (end - start) / step + 1 > crate::alerts::preview::MAX_STEPS {
        return Err(bad(
            "step",
            format!(
                "the range holds more than {} steps; widen the step or shorten the range",
                crate::alerts::preview::MAX_STEPS
            ),
        ));
    }
    let preview = state
        .alerts
        .preview(&spec, start, end, step)
        .await
        .map_err(AppError::Unprocessable)?;
    Ok(Json(preview.to_json()))
}

#[utoipa::path(get, path = "/api/v2/alert-rules/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Rule id")),
    responses(
        (status = 200, description = "The rule and its last evaluation", body = Object),
        (status = 404, description = "No such rule", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn read_rule(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = rule_or_404(&state, &id).await?;
    let saved = match state.alerts.live_state(&id).await {
        Some(live) => Some(live),
        None => state
            .store
            .rule_state(&id)
            .await?
            .and_then(|s| serde_json::from_str::<RuleState>(&s).ok()),
    };
    Ok(Json(rule_json(&row, &spec_of(&row)?, saved.as_ref())))
}

#[utoipa::path(patch, path = "/api/v2/alert-rules/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Rule id")),
    request_body(content = Object, description = "Any field of the rule; those left out keep their value."),
    responses(
        (status = 200, description = "The updated rule", body = Object),
        (status = 400, description = "Invalid body; nothing changed", body = super::error::ErrorBody),
        (status = 404, description = "No such rule", body = super::error::ErrorBody),
        (status = 409, description = "Another rule has that name", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_rule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let current = rule_or_404(&state, &id).await?;
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let channels = state.store.list_channels().await?;
    let spec = rules::parse(&body, Some(&spec_of(&current)?), &lookup(&channels))?;
    if spec.name != current.name {
        if let Some(other) = state.store.rule_by_name(&spec.name).await? {
            if other.id != id {
                return Err(AppError::Conflict(
                    "already_exists",
                    format!("an alert rule named `{}` exists", spec.name),
                ));
            }
        }
    }
    let row = RuleRow {
        name: spec.name.clone(),
        spec: serde_json::to_string(&spec).map_err(|e| AppError::Internal(e.to_string()))?,
        // Strictly later than before, so the evaluator sees the edit.
        updated_ms: now_ms().max(current.updated_ms + 1),
        ..current
    };
    if !state.store.update_rule(&row).await? {
        return Err(AppError::NotFound(format!("no alert rule `{id}`")));
    }
    state.alerts.rules_changed();
    Ok(Json(rule_json(&row, &spec, None)))
}

#[utoipa::path(delete, path = "/api/v2/alert-rules/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Rule id")),
    responses(
        (status = 204, description = "Deleted with its alerts; its deliveries stay in the record"),
        (status = 404, description = "No such rule", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_rule(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    check_path_id(&id)?;
    if !state.store.delete_rule(&id).await? {
        return Err(AppError::NotFound(format!("no alert rule `{id}`")));
    }
    state.alerts.rules_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v2/alerts", tag = "alerting",
    params(("state" = Option<String>, Query, description = "pending or firing (default both)"),
        ("rule" = Option<String>, Query, description = "Rule id")),
    responses(
        (status = 200, description = "`{alerts: [...]}`: `rule_id`, `rule`, `labels`, `annotations`, `state`, \
            `active_at` (since when the expression returns it), `fired_at`, `value`, `fingerprint`, \
            `silenced_by` (ids of the silences that hold it)", body = Object),
        (status = 400, description = "Invalid query", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_alerts(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, AppError> {
    let (mut want, mut rule) = (None, None);
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "state" => match v.as_ref() {
                "pending" => want = Some(AlertState::Pending),
                "firing" => want = Some(AlertState::Firing),
                _ => {
                    return Err(AppError::InvalidQuery(
                        "`state` is pending or firing".into(),
                    ))
                }
            },
            "rule" | "rule_id" => rule = Some(v.into_owned()),
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{}`; use state, rule",
                    other.escape_debug()
                )))
            }
        }
    }
    let rows = state.store.list_rules().await?;
    let silences = state.alerts.active_silences(now_ms()).await?;
    let mut out = Vec::new();
    for (id, s) in states(&state).await? {
        let Some(row) = rows.iter().find(|r| r.id == id) else {
            continue;
        };
        if rule.as_ref().is_some_and(|r| *r != id) {
            continue;
        }
        for a in s.alerts.values() {
            if a.state == AlertState::Inactive || want.is_some_and(|w| w != a.state) {
                continue;
            }
            out.push(json!({
                "rule_id": id,
                "rule": row.name,
                "fingerprint": a.fingerprint,
                "labels": a.labels,
                "annotations": a.annotations,
                "state": a.state,
                "active_at": rfc3339(a.active_at_ms),
                "fired_at": a.fired_at_ms.map(rfc3339),
                "value": crate::alerts::template::go_float(a.value),
                "silenced_by": silences
                    .iter()
                    .filter(|x| x.matches(&a.labels))
                    .map(|x| x.id.clone())
                    .collect::<Vec<_>>(),
            }));
        }
    }
    Ok(Json(json!({"alerts": out})))
}

#[utoipa::path(get, path = "/api/v2/query", tag = "alerting",
    params(("query" = String, Query, description = "PromQL expression (the subset alert rules accept)"),
        ("time" = Option<String>, Query, description = "Evaluation time, RFC 3339 or unix seconds (default now)")),
    responses(
        (status = 200, description = "As Prometheus's `/api/v1/query`: `{status: \"success\", data: \
            {resultType: \"vector\"|\"scalar\", result}}`, values as strings", body = Object),
        (status = 400, description = "Missing or invalid expression or time", body = super::error::ErrorBody),
        (status = 422, description = "The expression could not be evaluated", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn instant_query(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, AppError> {
    let (mut text, mut t_ms) = (None, now_ms());
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "query" => text = Some(v.into_owned()),
            "time" => {
                t_ms = match v.parse::<f64>() {
                    Ok(secs) if secs.is_finite() => (secs * 1_000.0).round() as i64,
                    _ => parse_time_str(&v)
                        .map_err(|e| AppError::InvalidQuery(format!("`time`: {e}")))?,
                }
            }
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{}`; use query, time",
                    other.escape_debug()
                )))
            }
        }
    }
    let text = text.ok_or_else(|| AppError::InvalidQuery("`query` is required".into()))?;
    let q = promql::parse(&text).map_err(|e| AppError::InvalidQuery(format!("`query`: {e}")))?;
    let secs = t_ms as f64 / 1_000.0;
    let data = {
        let value = state.alerts.evaluate_value(&q, t_ms).await;
        value.map_err(AppError::Unprocessable)?
    };
    let result = match data {
        promql::Value::Scalar(v) => json!({
            "resultType": "scalar",
            "result": [secs, api_float(v)],
        }),
        promql::Value::Vector(v) => json!({
            "resultType": "vector",
            "result": v.into_iter().map(|e| json!({
                "metric": e.labels,
                "value": [secs, api_float(e.value)],
            })).collect::<Vec<_>>(),
        }),
    };
    Ok(Json(json!({"status": "success", "data": result})))
}
