//! The runtime registry routes: register, heartbeat, list with status.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{parse_json, AppError, ErrorBody};
use super::AppState;
use crate::components::{status_of, ComponentStatus};
use crate::metrics::model::check_component_field;
use crate::store::Component;

/// Registration body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterComponent {
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub capacity: Option<i64>,
}

/// Every registered component.
#[derive(Serialize, ToSchema)]
pub struct ComponentList {
    pub components: Vec<ComponentStatus>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[utoipa::path(post, path = "/api/v2/components", tag = "components",
    request_body = RegisterComponent,
    responses(
        (status = 200, description = "Registered (or updated)", body = ComponentStatus),
        (status = 400, description = "Invalid body", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ComponentStatus>, AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let req: RegisterComponent = parse_json(&body)?;
    check_component_field(&req.name)
        .map_err(|e| AppError::InvalidRequest(format!("`name` {e}")))?;
    check_component_field(&req.component_type)
        .map_err(|e| AppError::InvalidRequest(format!("`type` {e}")))?;
    if req.capabilities.len() > 64
        || req
            .capabilities
            .iter()
            .any(|c| c.is_empty() || c.len() > 100 || c.chars().any(char::is_control))
    {
        return Err(AppError::InvalidRequest(
            "`capabilities` must be at most 64 non-empty strings of at most 100 characters".into(),
        ));
    }
    if req.capacity.is_some_and(|c| c < 0) {
        return Err(AppError::InvalidRequest(
            "`capacity` must not be negative".into(),
        ));
    }
    let now = now_ms();
    let mut component = Component::new(req.name, req.component_type, now);
    component.capabilities = req.capabilities;
    component.capacity = req.capacity;
    let stored = state.store.register_component(&component).await?;
    state.components.stored(&stored);
    Ok(Json(status_of(
        &stored,
        now,
        state.config.component_stale_after,
    )))
}

#[utoipa::path(post, path = "/api/v2/components/{name}/heartbeat", tag = "components",
    params(("name" = String, Path, description = "Component name")),
    responses(
        (status = 200, description = "Heartbeat recorded", body = ComponentStatus),
        (status = 404, description = "Unknown component", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ComponentStatus>, AppError> {
    let now = now_ms();
    let component = state
        .store
        .heartbeat(&name, now)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("component `{name}` is not registered")))?;
    state.components.seen(&name, now);
    Ok(Json(status_of(
        &component,
        now,
        state.config.component_stale_after,
    )))
}

#[utoipa::path(get, path = "/api/v2/components", tag = "components",
    responses((status = 200, description = "Registered components with status", body = ComponentList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ComponentList>, AppError> {
    let now = now_ms();
    let components = state
        .store
        .list_components()
        .await?
        .iter()
        .map(|c| status_of(c, now, state.config.component_stale_after))
        .collect();
    Ok(Json(ComponentList { components }))
}
