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

pub(super) const PUBLIC: [&str; 3] = ["/api/v2/health", "/api/v2/ready", "/api/v2/openapi.json"];

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

/// The credentials of a `Bearer` authorization value; the scheme is
/// case-insensitive (RFC 7235), spaces around the token are ignored.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub async fn require_scope(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.config.auth_enabled() || PUBLIC.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
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

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret ",
            "bEaReR s3cret",
        ] {
            assert_eq!(bearer_credentials(value), Some("s3cret"), "{value}");
        }
        for value in [
            "Basic s3cret",
            "Bearer",
            "Bearer ",
            "Bearers3cret",
            "s3cret",
        ] {
            assert_eq!(bearer_credentials(value), None, "{value}");
        }
    }
}
