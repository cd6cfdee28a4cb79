//! The one API error type: every failure answers `{"error":{"code","message","details"?}}`.
//! Client errors are not logged; internal ones are logged once, here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::ingest::IngestError;
use crate::metrics::model::{ItemError, ReportError};
use crate::store::StoreError;

#[derive(Debug)]
pub enum AppError {
    MalformedJson(String),
    InvalidReport(Vec<ItemError>),
    InvalidRequest(String),
    InvalidQuery(String),
    PayloadTooLarge(String),
    UnknownComponent(String),
    Unauthorized,
    Forbidden(&'static str),
    NotFound(String),
    /// `409`: a code (e.g. `invalid_transition`) and a message naming the current state.
    Conflict(&'static str, String),
    /// `400` with one `details` entry per bad field of a request body.
    InvalidBody(Vec<ItemError>),
    Unavailable(String),
    Internal(String),
}

/// Error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<ItemError>>,
}

impl AppError {
    fn parts(self) -> (StatusCode, &'static str, String, Option<Vec<ItemError>>) {
        match self {
            AppError::MalformedJson(m) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("request body is not valid JSON: {m}"),
                None,
            ),
            AppError::InvalidReport(items) => (
                StatusCode::BAD_REQUEST,
                "invalid_report",
                format!(
                    "{} invalid item(s); nothing was stored",
                    items.len()
                ),
                Some(items),
            ),
            AppError::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m, None),
            AppError::InvalidQuery(m) => (StatusCode::BAD_REQUEST, "invalid_query", m, None),
            AppError::PayloadTooLarge(m) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m, None)
            }
            AppError::UnknownComponent(name) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_component",
                format!(
                    "component `{name}` is not registered and --strict-components is set; register it at POST /api/v2/components"
                ),
                None,
            ),
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown bearer token".into(),
                None,
            ),
            AppError::Forbidden(scope) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token lacks the `{scope}` scope"),
                None,
            ),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m, None),
            AppError::Conflict(code, m) => (StatusCode::CONFLICT, code, m, None),
            AppError::InvalidBody(items) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("{} invalid field(s); nothing was changed", items.len()),
                Some(items),
            ),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m, None),
            AppError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", m, None)
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message, details) = self.parts();
        (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message,
                    details,
                },
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl From<ReportError> for AppError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::MalformedJson(m) => AppError::MalformedJson(m),
            ReportError::Invalid(items) => AppError::InvalidReport(items),
            ReportError::TooManyItems { count, limit } => AppError::PayloadTooLarge(format!(
                "{count} metrics in one report; the limit is {limit}"
            )),
        }
    }
}

impl From<IngestError> for AppError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Conflict(items) => AppError::InvalidReport(items),
            IngestError::Store(e) => AppError::Internal(e.to_string()),
            IngestError::ShuttingDown => {
                AppError::Unavailable("the server is shutting down".into())
            }
        }
    }
}

/// Parses a JSON body into `T`, with our error format.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            AppError::MalformedJson(e.to_string())
        } else {
            AppError::InvalidRequest(e.to_string())
        }
    })
}
