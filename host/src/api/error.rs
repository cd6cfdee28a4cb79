//! The one API error type: every failure answers `{"error":{"code","message","details"?}}`.
//! Client errors are not logged; internal ones are logged once, here. Also the
//! middleware that gives the same shape to the errors axum and tower answer
//! themselves (extractor rejections, 405, body limits), so no error is ever
//! plain text or empty.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::ingest::IngestError;
use crate::metrics::model::{ItemError, ReportError};
use crate::store::StoreError;

/// At most this many `details` entries are returned; `details_total` says how many there were.
pub const MAX_DETAILS: usize = 100;
/// Longest `field` or `reason` of one detail, in bytes (longer ones are cut, marked with `…`).
pub const MAX_DETAIL_TEXT: usize = 512;

#[derive(Debug)]
pub enum AppError {
    MalformedJson(String),
    InvalidReport(Vec<ItemError>),
    InvalidRequest(String),
    InvalidQuery(String),
    PayloadTooLarge(String),
    RequestTimeout(String),
    UnknownComponent(String),
    Unauthorized,
    Forbidden(&'static str),
    NotFound(String),
    /// `409`: a code (e.g. `invalid_transition`) and a message naming the current state.
    Conflict(&'static str, String),
    /// `400` with one `details` entry per bad field of a request body.
    InvalidBody(Vec<ItemError>),
    Unavailable(String),
    /// `422`: a well-formed request that could not be carried out (an
    /// expression that fails to evaluate).
    Unprocessable(String),
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
    /// The first [`MAX_DETAILS`] problems, each pointing at an item and field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<ItemError>>,
    /// How many problems there were in all (only when `details` was cut).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_total: Option<usize>,
}

/// Cuts a text to at most `max` bytes on a character boundary, marking the cut.
pub fn clip_text(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// Keeps the first [`MAX_DETAILS`] details, each clipped; returns them and the total.
fn cap_details(mut items: Vec<ItemError>) -> (Vec<ItemError>, Option<usize>) {
    let total = items.len();
    items.truncate(MAX_DETAILS);
    for item in &mut items {
        clip_text(&mut item.field, MAX_DETAIL_TEXT);
        clip_text(&mut item.reason, MAX_DETAIL_TEXT);
    }
    (items, (total > MAX_DETAILS).then_some(total))
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
            AppError::RequestTimeout(m) => {
                (StatusCode::REQUEST_TIMEOUT, "request_timeout", m, None)
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
            AppError::Unprocessable(m) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "evaluation_failed", m, None)
            }
            AppError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", m, None)
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, mut message, details) = self.parts();
        clip_text(&mut message, 4 * MAX_DETAIL_TEXT);
        let (details, details_total) = match details {
            Some(items) => {
                let (items, total) = cap_details(items);
                (Some(items), total)
            }
            None => (None, None),
        };
        (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message,
                    details,
                    details_total,
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
            ReportError::UnknownRuntimeId(id) => AppError::NotFound(format!(
                "no component has runtime_id {id}; register it (POST /api/worker/pool/register or /api/runtime/register) or name it by component_name"
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

/// The error code for a status axum or tower answered on their own.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        503 => "unavailable",
        504 => "timeout",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// Gives every error answer the documented JSON shape: an error status whose
/// body is not JSON (an extractor's plain-text rejection, axum's empty `405`,
/// a body-limit `413`) is rewritten to `{"error":{"code","message"}}`, keeping
/// its status and headers such as `Allow` and `Retry-After`.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let mut message = match (status.as_u16(), text.is_empty()) {
        (405, _) => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            format!("{method} is not allowed on {path}; allowed: {allowed}")
        }
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    clip_text(&mut message, 4 * MAX_DETAIL_TEXT);
    let body = ErrorBody {
        error: ErrorDetail {
            code: code_for(status),
            message,
            details: None,
            details_total: None,
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
