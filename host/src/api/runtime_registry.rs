//! NoETL's runtime registry routes (`/api/worker/pool/…`, `/api/worker/pools`,
//! `/api/runtime/…`, `/api/metrics/components`), as NoETL v0.2.0 and v1.0.0
//! workers and servers call them. They are views of the one component
//! registry (`/api/v2/components` shows the same components): a registration
//! here is a component there, with its stable numeric `runtime_id`. Does not
//! own storage or the `/api/v2/components` shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{parse_json, AppError, ErrorBody};
use super::AppState;
use crate::metrics::model::{check_component_field, format_ms};
use crate::store::Component;

/// Seconds a worker whose heartbeat was not recognised waits before
/// registering again (NoETL's `heartbeat_retry_after` default).
const HEARTBEAT_RETRY_AFTER_SECONDS: u32 = 3;
/// Longest accepted address, runtime or hostname.
const MAX_FIELD_LEN: usize = 2048;
/// Largest accepted `labels` or `meta`, as JSON text.
const MAX_JSON_FIELD_BYTES: usize = 16 * 1024;

/// A registration as NoETL workers and servers send it. v0.2.0 sends the
/// address as `base_url`, v1.0.0 workers as `uri`; `endpoint` is accepted
/// too. v1.0.0 names the component type `kind`. Unknown fields are ignored,
/// as NoETL does.
#[derive(Deserialize, ToSchema)]
pub struct RuntimeRegistration {
    pub name: Option<String>,
    /// `worker_pool`, `server_api`, `broker`, … (`/api/runtime/register` only;
    /// default `server_api`).
    #[serde(default, alias = "kind")]
    pub component_type: Option<String>,
    /// `cpu`, `gpu`, `python`, `server`, …
    pub runtime: Option<String>,
    pub base_url: Option<String>,
    pub uri: Option<String>,
    pub endpoint: Option<String>,
    /// Default `ready`; kept lower-cased.
    pub status: Option<String>,
    pub capacity: Option<i64>,
    /// Any JSON (v0.2.0 workers send a list, v1.0.0 an object), kept as sent.
    #[schema(value_type = Option<Object>)]
    pub labels: Option<Value>,
    pub pid: Option<i64>,
    pub hostname: Option<String>,
    /// Merged into the stored `runtime` object.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Map<String, Value>>,
}

/// Answer to a registration.
#[derive(Serialize, ToSchema)]
pub struct RuntimeRegistered {
    /// `ok`.
    pub status: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_type: Option<String>,
    pub runtime_id: i64,
}

/// A heartbeat or deregistration body: `{name}` (and, for `/api/runtime/
/// deregister`, `component_type`). Other fields (`registration`) are ignored.
#[derive(Deserialize, ToSchema)]
pub struct RuntimeName {
    pub name: Option<String>,
    #[serde(default, alias = "kind")]
    pub component_type: Option<String>,
}

/// Answer to a heartbeat.
#[derive(Serialize, ToSchema)]
pub struct HeartbeatRecorded {
    /// `ok`.
    pub status: &'static str,
    pub name: String,
    pub runtime_id: i64,
}

/// Answer to a deregistration.
#[derive(Serialize, ToSchema)]
pub struct Deregistered {
    /// `ok`.
    pub status: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_type: Option<String>,
}

/// One worker pool as NoETL lists it.
#[derive(Serialize, ToSchema)]
pub struct WorkerPool {
    pub name: String,
    /// `{type, pid, hostname, …meta}` as registered.
    #[schema(value_type = Option<Object>)]
    pub runtime: Option<Value>,
    /// `ready`, `offline`, … (`offline` once heartbeats stop for `--component-stale-after`).
    pub status: String,
    pub capacity: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub labels: Option<Value>,
    pub last_heartbeat: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Worker pools with the filters applied.
#[derive(Serialize, ToSchema)]
pub struct WorkerPoolList {
    pub items: Vec<WorkerPool>,
    pub runtime: Option<String>,
    pub status: Option<String>,
    pub count: usize,
}

/// One component as NoETL's `/api/metrics/components` lists it.
#[derive(Serialize, ToSchema)]
pub struct RuntimeComponent {
    pub runtime_id: i64,
    pub name: String,
    pub component_type: String,
    pub status: String,
    pub last_heartbeat: String,
}

/// Every registered component.
#[derive(Serialize, ToSchema)]
pub struct RuntimeComponentList {
    pub components: Vec<RuntimeComponent>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn check_text_field(field: &str, value: &str) -> Result<(), AppError> {
    if value.len() > MAX_FIELD_LEN {
        return Err(AppError::InvalidRequest(format!(
            "`{field}` is longer than {MAX_FIELD_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(AppError::InvalidRequest(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(())
}

fn trimmed(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// NoETL's status words: lower-case letters, digits and `_`, as the
/// registration gives them (lower-cased).
fn check_status(status: &str) -> Result<String, AppError> {
    let status = status.trim().to_lowercase();
    if status.is_empty()
        || status.len() > 32
        || !status
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(AppError::InvalidRequest(
            "`status` must be 1 to 32 letters, digits or `_` (ready, offline, busy, …)".into(),
        ));
    }
    Ok(status)
}

fn json_field(field: &str, value: &Value) -> Result<String, AppError> {
    let text = serde_json::to_string(value).unwrap_or_default();
    if text.len() > MAX_JSON_FIELD_BYTES {
        return Err(AppError::InvalidRequest(format!(
            "`{field}` is larger than {MAX_JSON_FIELD_BYTES} bytes of JSON"
        )));
    }
    if text.contains("\\u0000") {
        return Err(AppError::InvalidRequest(format!(
            "`{field}` must not contain NUL characters"
        )));
    }
    Ok(text)
}

/// Validates a registration and builds the component it describes.
fn component_of(
    req: RuntimeRegistration,
    component_type: String,
    now: i64,
) -> Result<Component, AppError> {
    let name = trimmed(req.name.as_deref())
        .ok_or_else(|| AppError::InvalidRequest("`name` is required".into()))?;
    check_component_field(&name).map_err(|e| AppError::InvalidRequest(format!("`name` {e}")))?;
    check_component_field(&component_type)
        .map_err(|e| AppError::InvalidRequest(format!("`component_type` {e}")))?;
    let uri = trimmed(req.uri.as_deref())
        .or_else(|| trimmed(req.endpoint.as_deref()))
        .or_else(|| trimmed(req.base_url.as_deref()))
        .ok_or_else(|| {
            AppError::InvalidRequest(
                "an address is required: `base_url`, `uri` or `endpoint` (e.g. `local://host`)"
                    .into(),
            )
        })?;
    check_text_field("uri", &uri)?;
    let runtime = trimmed(req.runtime.as_deref()).map(|r| r.to_lowercase());
    if let Some(r) = &runtime {
        check_text_field("runtime", r)?;
    }
    let hostname = trimmed(req.hostname.as_deref());
    if let Some(h) = &hostname {
        check_text_field("hostname", h)?;
    }
    let status = check_status(req.status.as_deref().unwrap_or("ready"))?;
    if req.capacity.is_some_and(|c| c < 0) {
        return Err(AppError::InvalidRequest(
            "`capacity` must not be negative".into(),
        ));
    }
    if req.pid.is_some_and(|p| p < 0) {
        return Err(AppError::InvalidRequest(
            "`pid` must not be negative".into(),
        ));
    }
    // NoETL's stored runtime object: type, pid, hostname, then the meta fields.
    let mut description = serde_json::Map::new();
    description.insert(
        "type".into(),
        runtime.clone().map(Value::String).unwrap_or(Value::Null),
    );
    description.insert(
        "pid".into(),
        req.pid.map(Value::from).unwrap_or(Value::Null),
    );
    description.insert(
        "hostname".into(),
        hostname.map(Value::String).unwrap_or(Value::Null),
    );
    description.extend(req.meta.unwrap_or_default());
    let runtime_json = json_field("meta", &Value::Object(description))?;
    let labels = match &req.labels {
        None | Some(Value::Null) => None,
        Some(v) => Some(json_field("labels", v)?),
    };
    let mut component = Component::new(name, component_type, now);
    component.capacity = req.capacity;
    component.status = status;
    component.uri = Some(uri);
    component.runtime = Some(runtime_json);
    component.labels = labels;
    Ok(component)
}

async fn store_registration(state: &AppState, component: Component) -> Result<Component, AppError> {
    let stored = state.store.register_component(&component).await?;
    state.components.stored(&stored);
    Ok(stored)
}

fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, AppError> {
    super::metrics::body_or_413(body, state.config.max_body_bytes)
}

#[utoipa::path(post, path = "/api/worker/pool/register", tag = "runtime",
    request_body = RuntimeRegistration,
    responses(
        (status = 200, description = "Registered or updated (an upsert on the name)", body = RuntimeRegistered),
        (status = 400, description = "Missing name, runtime or address, or an invalid field", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register_worker_pool(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RuntimeRegistered>, AppError> {
    let body = read_body(&state, body)?;
    let req: RuntimeRegistration = parse_json(&body)?;
    if trimmed(req.runtime.as_deref()).is_none() {
        return Err(AppError::InvalidRequest(
            "`runtime` is required (e.g. `cpu`)".into(),
        ));
    }
    let component = component_of(req, "worker_pool".into(), now_ms())?;
    let stored = store_registration(&state, component).await?;
    Ok(Json(RuntimeRegistered {
        status: "ok",
        runtime: runtime_type(&stored),
        name: stored.name,
        component_type: None,
        runtime_id: stored.runtime_id,
    }))
}

#[utoipa::path(post, path = "/api/runtime/register", tag = "runtime",
    request_body = RuntimeRegistration,
    responses(
        (status = 200, description = "Registered or updated (an upsert on the name)", body = RuntimeRegistered),
        (status = 400, description = "Missing name or address, or an invalid field", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register_runtime(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RuntimeRegistered>, AppError> {
    let body = read_body(&state, body)?;
    let req: RuntimeRegistration = parse_json(&body)?;
    let component_type =
        trimmed(req.component_type.as_deref()).unwrap_or_else(|| "server_api".into());
    let component = component_of(req, component_type, now_ms())?;
    let stored = store_registration(&state, component).await?;
    Ok(Json(RuntimeRegistered {
        status: "ok",
        runtime: runtime_type(&stored),
        name: stored.name,
        component_type: Some(stored.component_type),
        runtime_id: stored.runtime_id,
    }))
}

/// The `type` of a stored runtime description.
fn runtime_type(c: &Component) -> Option<String> {
    let v: Value = serde_json::from_str(c.runtime.as_deref()?).ok()?;
    v.get("type")?.as_str().map(str::to_string)
}

fn required_name(req: &RuntimeName) -> Result<String, AppError> {
    let name = trimmed(req.name.as_deref())
        .ok_or_else(|| AppError::InvalidRequest("`name` is required".into()))?;
    check_component_field(&name).map_err(|e| AppError::InvalidRequest(format!("`name` {e}")))?;
    Ok(name)
}

/// NoETL's answer to a heartbeat from a worker it does not know: `404`
/// with `detail` (what NoETL workers read) beside Vigil's `error`, and
/// `Retry-After`, after which the worker registers again.
fn unknown_worker(name: &str) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": "not_found",
            "message": format!("`{name}` is not registered; register it at POST /api/worker/pool/register"),
        },
        "detail": {"status": "unknown", "name": name},
    });
    (
        StatusCode::NOT_FOUND,
        [(
            header::RETRY_AFTER,
            HEARTBEAT_RETRY_AFTER_SECONDS.to_string(),
        )],
        Json(body),
    )
        .into_response()
}

#[utoipa::path(post, path = "/api/worker/pool/heartbeat", tag = "runtime",
    request_body = RuntimeName,
    responses(
        (status = 200, description = "Heartbeat recorded; the status is `ready` again", body = HeartbeatRecorded),
        (status = 400, description = "Missing or invalid name", body = ErrorBody),
        (status = 404, description = "Not registered: `detail` is `{status: unknown, name}`, `Retry-After` says when to register again", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn heartbeat_worker_pool(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = read_body(&state, body)?;
    let req: RuntimeName = parse_json(&body)?;
    let name = required_name(&req)?;
    let now = now_ms();
    let Some(stored) = state.store.heartbeat(&name, now).await? else {
        return Ok(unknown_worker(&name));
    };
    state.components.stored(&stored);
    Ok(Json(HeartbeatRecorded {
        status: "ok",
        name: stored.name,
        runtime_id: stored.runtime_id,
    })
    .into_response())
}

async fn deregister(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
    by_type: bool,
) -> Result<Json<Deregistered>, AppError> {
    let body = read_body(state, body)?;
    let req: RuntimeName = parse_json(&body)?;
    let name = required_name(&req)?;
    let component_type = if by_type {
        trimmed(req.component_type.as_deref())
    } else {
        None
    };
    let changed = state
        .store
        .set_component_status(&name, component_type.as_deref(), "offline", now_ms())
        .await?;
    let Some(stored) = changed else {
        return Err(AppError::NotFound(match &component_type {
            Some(t) => format!("no component `{name}` of type `{t}` is registered"),
            None => format!("component `{name}` is not registered"),
        }));
    };
    Ok(Json(Deregistered {
        status: "ok",
        name: stored.name,
        component_type: by_type.then_some(stored.component_type),
    }))
}

#[utoipa::path(delete, path = "/api/worker/pool/deregister", tag = "runtime",
    request_body = RuntimeName,
    responses(
        (status = 200, description = "Marked offline (still listed, with its runtime_id)", body = Deregistered),
        (status = 400, description = "Missing or invalid name", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deregister_worker_pool(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Deregistered>, AppError> {
    deregister(&state, body, false).await
}

#[utoipa::path(post, path = "/api/worker/pool/deregister", tag = "runtime",
    request_body = RuntimeName,
    responses(
        (status = 200, description = "Marked offline (still listed, with its runtime_id)", body = Deregistered),
        (status = 400, description = "Missing or invalid name", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deregister_worker_pool_post(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Deregistered>, AppError> {
    deregister(&state, body, false).await
}

#[utoipa::path(delete, path = "/api/runtime/deregister", tag = "runtime",
    request_body = RuntimeName,
    responses(
        (status = 200, description = "Marked offline", body = Deregistered),
        (status = 400, description = "Missing or invalid name", body = ErrorBody),
        (status = 404, description = "No such component (of that type, when given)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deregister_runtime(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Deregistered>, AppError> {
    deregister(&state, body, true).await
}

/// The NoETL status of a component now: as stored, or `offline` once its
/// heartbeats have stopped for `--component-stale-after` (NoETL's sweeper
/// does the same).
fn view_status(state: &AppState, c: &Component, now: i64) -> String {
    let stale = now - c.last_heartbeat_ms > state.config.component_stale_after.as_millis() as i64;
    if stale {
        "offline".to_string()
    } else {
        c.status.clone()
    }
}

fn parse_json_text(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

#[utoipa::path(get, path = "/api/worker/pools", tag = "runtime",
    params(
        ("runtime" = Option<String>, Query, description = "Only pools of this runtime type (e.g. `cpu`)"),
        ("status" = Option<String>, Query, description = "Only pools with this status (`ready`, `offline`, …)")),
    responses(
        (status = 200, description = "Registered worker pools", body = WorkerPoolList),
        (status = 400, description = "Unknown parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_worker_pools(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<WorkerPoolList>, AppError> {
    let mut runtime = None;
    let mut status = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "runtime" => runtime = Some(value.to_lowercase()),
            "status" => status = Some(value.to_lowercase()),
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{other}`; use runtime, status"
                )))
            }
        }
    }
    let now = now_ms();
    let items: Vec<WorkerPool> = state
        .store
        .list_components()
        .await?
        .into_iter()
        .filter(|c| c.component_type == "worker_pool")
        .filter(|c| runtime.is_none() || runtime_type(c) == runtime)
        .map(|c| WorkerPool {
            status: view_status(&state, &c, now),
            runtime: parse_json_text(c.runtime.as_deref()),
            labels: parse_json_text(c.labels.as_deref()),
            capacity: c.capacity,
            last_heartbeat: format_ms(c.last_heartbeat_ms),
            created_at: format_ms(c.registered_at_ms),
            updated_at: format_ms(c.updated_at_ms.max(c.registered_at_ms)),
            name: c.name,
        })
        .filter(|p| status.as_ref().is_none_or(|s| &p.status == s))
        .collect();
    Ok(Json(WorkerPoolList {
        count: items.len(),
        items,
        runtime,
        status,
    }))
}

#[utoipa::path(get, path = "/api/metrics/components", tag = "runtime",
    responses((status = 200, description = "Every registered component, by type and name", body = RuntimeComponentList)),
    security(("bearer" = [])))]
pub async fn list_components(
    State(state): State<AppState>,
) -> Result<Json<RuntimeComponentList>, AppError> {
    let now = now_ms();
    let mut components: Vec<RuntimeComponent> = state
        .store
        .list_components()
        .await?
        .into_iter()
        .map(|c| RuntimeComponent {
            runtime_id: c.runtime_id,
            status: view_status(&state, &c, now),
            last_heartbeat: format_ms(c.last_heartbeat_ms),
            name: c.name,
            component_type: c.component_type,
        })
        .collect();
    components.sort_by(|a, b| {
        (a.component_type.as_str(), a.name.as_str())
            .cmp(&(b.component_type.as_str(), b.name.as_str()))
    });
    Ok(Json(RuntimeComponentList { components }))
}
