//! Bearer-token scopes. `GET`/`HEAD` need `read`, `POST`/`PUT`/`PATCH` need
//! `write`, `DELETE` needs `admin`; `admin` may do everything. Health,
//! readiness and the OpenAPI document stay public. With no token configured
//! nothing is checked (the server then only listens on loopback).

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::AppState;
use crate::config::Scope;

const PUBLIC: [&str; 3] = ["/api/v2/health", "/api/v2/ready", "/api/v2/openapi.json"];

fn needed_scope(method: &Method) -> Scope {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Scope::Read,
        Method::DELETE => Scope::Admin,
        _ => Scope::Write,
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Write => "write",
        Scope::Admin => "admin",
    }
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require_scope(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.config.auth_enabled() || PUBLIC.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return AppError::Unauthorized.into_response();
    };
    let Some(token) = state
        .config
        .tokens
        .iter()
        .find(|t| same_secret(t.secret.as_bytes(), presented.as_bytes()))
    else {
        return AppError::Unauthorized.into_response();
    };
    let needed = needed_scope(req.method());
    if !token.allows(needed) {
        return AppError::Forbidden(scope_name(needed)).into_response();
    }
    next.run(req).await
}
