//! The HTTP API (axum): the route table, shared state, and the middleware every
//! request passes (request id, tracing span, bearer-token scopes, own metrics).
//! Handlers live in one file per resource. Does not own storage or validation.

mod alert_rules;
mod alerting;
mod auth;
mod components;
pub mod connections;
pub mod error;
mod events;
mod executions;
mod health;
mod metric_query;
mod metrics;
mod openapi;
mod plugins;
mod publishers;
mod retention;
mod runtime_registry;
mod silences;
mod streams;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::bus::{DeliveryManager, LiveHub, LogHead};
use crate::components::ComponentDirectory;
use crate::config::Config;
use crate::executions::debug_fields::DebugFieldProviders;
use crate::metrics::index::SeriesIndex;
use crate::metrics::ingest::IngestHandle;
use crate::plugins::PluginRegistry;
use crate::store::Store;
use crate::telemetry::{SelfMetrics, SystemSampler};

pub use metrics::self_report_for;
pub use openapi::openapi_document;
pub use plugins::status_of as plugin_status;

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub index: Arc<SeriesIndex>,
    pub ingest: IngestHandle,
    pub metrics: Arc<SelfMetrics>,
    pub components: Arc<ComponentDirectory>,
    pub sampler: Arc<SystemSampler>,
    pub plugins: Arc<PluginRegistry>,
    pub delivery: Arc<DeliveryManager>,
    /// Bumped after every commit to the log (issue 13).
    pub head: Arc<LogHead>,
    /// Live event fan-out for the provenance streams.
    pub live: Arc<LiveHub>,
    pub debug_fields: Arc<DebugFieldProviders>,
    /// One configured notifier per notification channel (issue 12).
    pub notifiers: Arc<crate::alerts::channels::ChannelNotifiers>,
    /// The alert evaluator and notification sender (issue 12).
    pub alerts: Arc<crate::alerts::engine::AlertEngine>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every API route: method, path (as in the OpenAPI document) and handler.
pub fn route_table() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/api/v2/health", get(health::health)),
        (Method::GET, "/api/v2/ready", get(health::ready)),
        (Method::GET, "/api/v2/metrics", get(health::own_metrics)),
        (Method::GET, "/api/v2/openapi.json", get(openapi::serve)),
        (Method::POST, "/api/metrics/report", post(metrics::report)),
        (
            Method::POST,
            "/api/v2/metrics/report",
            post(metrics::report_v2),
        ),
        (Method::GET, "/api/metrics/query", get(metric_query::query)),
        (
            Method::GET,
            "/api/v2/metrics/query",
            get(metric_query::query_v2),
        ),
        (
            Method::GET,
            "/api/metrics/prometheus",
            get(metrics::prometheus),
        ),
        (
            Method::POST,
            "/api/metrics/self-report",
            post(metrics::self_report),
        ),
        (
            Method::DELETE,
            "/api/v2/metrics/series",
            delete(metrics::delete_series),
        ),
        (Method::POST, "/api/v2/events", post(events::ingest)),
        (Method::GET, "/api/v2/events", get(events::list)),
        // --- executions and provenance streams (issue 13) ---
        (Method::POST, "/api/v2/executions", post(executions::create)),
        (Method::GET, "/api/v2/executions", get(executions::list)),
        (
            Method::GET,
            "/api/v2/executions/{id}",
            get(executions::read),
        ),
        (
            Method::PATCH,
            "/api/v2/executions/{id}",
            patch(executions::update),
        ),
        (
            Method::POST,
            "/api/v2/executions/{id}/run-record",
            post(executions::run_record),
        ),
        (
            Method::GET,
            "/api/v2/executions/{id}/events",
            get(streams::execution_events),
        ),
        (
            Method::GET,
            "/api/v2/sources/{id}/events",
            get(streams::source_events),
        ),
        (
            Method::GET,
            "/api/v2/projects/{module}/events",
            get(streams::project_events),
        ),
        (
            Method::GET,
            "/api/v2/events/stream",
            get(streams::all_events),
        ),
        // --- end issue 13 ---
        (Method::GET, "/api/v2/components", get(components::list)),
        (
            Method::POST,
            "/api/v2/components",
            post(components::register),
        ),
        (
            Method::POST,
            "/api/v2/components/{name}/heartbeat",
            post(components::heartbeat),
        ),
        // --- NoETL's runtime registry, a view of the components (issue 10) ---
        (
            Method::POST,
            "/api/worker/pool/register",
            post(runtime_registry::register_worker_pool),
        ),
        (
            Method::POST,
            "/api/worker/pool/heartbeat",
            post(runtime_registry::heartbeat_worker_pool),
        ),
        (
            Method::DELETE,
            "/api/worker/pool/deregister",
            delete(runtime_registry::deregister_worker_pool),
        ),
        (
            Method::POST,
            "/api/worker/pool/deregister",
            post(runtime_registry::deregister_worker_pool_post),
        ),
        (
            Method::GET,
            "/api/worker/pools",
            get(runtime_registry::list_worker_pools),
        ),
        (
            Method::POST,
            "/api/runtime/register",
            post(runtime_registry::register_runtime),
        ),
        (
            Method::DELETE,
            "/api/runtime/deregister",
            delete(runtime_registry::deregister_runtime),
        ),
        (
            Method::GET,
            "/api/metrics/components",
            get(runtime_registry::list_components),
        ),
        (
            Method::POST,
            "/api/metrics/ttl/set",
            post(retention::set_metric_ttl),
        ),
        (
            Method::POST,
            "/api/metrics/ttl/extend-component",
            post(retention::extend_component_ttl),
        ),
        (
            Method::POST,
            "/api/metrics/cleanup",
            post(retention::cleanup),
        ),
        // --- end issue 10 ---
        (Method::GET, "/api/v2/plugins", get(plugins::list)),
        (
            Method::POST,
            "/api/v2/plugins/{name}/reload",
            post(plugins::reload),
        ),
        (Method::GET, "/api/v2/publishers", get(publishers::list)),
        // --- alerting (issue 12) ---
        (
            Method::GET,
            "/api/v2/notification-channels",
            get(alerting::list_channels),
        ),
        (
            Method::POST,
            "/api/v2/notification-channels",
            post(alerting::create_channel),
        ),
        (
            Method::GET,
            "/api/v2/notification-channels/{id}",
            get(alerting::read_channel),
        ),
        (
            Method::PATCH,
            "/api/v2/notification-channels/{id}",
            patch(alerting::update_channel),
        ),
        (
            Method::DELETE,
            "/api/v2/notification-channels/{id}",
            delete(alerting::delete_channel),
        ),
        (
            Method::POST,
            "/api/v2/notification-channels/{id}/test",
            post(alerting::test_channel),
        ),
        (
            Method::GET,
            "/api/v2/alert-deliveries",
            get(alerting::list_deliveries),
        ),
        (
            Method::GET,
            "/api/v2/alert-rules",
            get(alert_rules::list_rules),
        ),
        (
            Method::POST,
            "/api/v2/alert-rules",
            post(alert_rules::create_rule),
        ),
        (
            Method::POST,
            "/api/v2/alert-rules/import",
            post(alert_rules::import_rules),
        ),
        (
            Method::POST,
            "/api/v2/alert-rules/preview",
            post(alert_rules::preview_rule),
        ),
        (
            Method::GET,
            "/api/v2/alert-rules/{id}",
            get(alert_rules::read_rule),
        ),
        (
            Method::PATCH,
            "/api/v2/alert-rules/{id}",
            patch(alert_rules::update_rule),
        ),
        (
            Method::DELETE,
            "/api/v2/alert-rules/{id}",
            delete(alert_rules::delete_rule),
        ),
        (Method::GET, "/api/v2/alerts", get(alert_rules::list_alerts)),
        (
            Method::GET,
            "/api/v2/query",
            get(alert_rules::instant_query),
        ),
        (Method::GET, "/api/v2/silences", get(silences::list)),
        (Method::POST, "/api/v2/silences", post(silences::create)),
        (Method::GET, "/api/v2/silences/{id}", get(silences::read)),
        (
            Method::DELETE,
            "/api/v2/silences/{id}",
            delete(silences::expire),
        ),
        // --- end issue 12 ---
        (
            Method::GET,
            "/api/v2/publishers/{name}/dead-letters",
            get(publishers::dead_letters),
        ),
    ]
}

/// The API router with all middleware.
pub fn app(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for (_, path, handler) in route_table() {
        router = router.route(path, handler);
    }
    with_middleware(router.fallback(fallback), state)
}

/// The scrape-port router: `/metrics` only.
pub fn metrics_app(state: AppState) -> Router {
    let router: Router<AppState> = Router::new()
        .route("/metrics", get(metrics::prometheus))
        .fallback(fallback);
    with_middleware(router, state)
}

fn with_middleware(router: Router<AppState>, state: AppState) -> Router {
    router
        // Body extractors enforce --max-body-bytes (axum's own default is 2 MiB).
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), refuse_oversized))
        .layer(middleware::from_fn(refuse_nul))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_scope))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request| {
                        let id = req
                            .headers()
                            .get(&REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

/// The `method` label of the request metrics: the standard methods by name,
/// anything invented by a client as `other`, so clients cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Refuses a request whose path or query string carries a NUL character
/// (raw or percent-encoded): neither backend can store one, and no name or
/// id Vigil knows contains one.
async fn refuse_nul(req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let uri = req.uri();
    let decoded_has_nul = |raw: &str| percent_decoded(raw).contains(&0);
    if decoded_has_nul(uri.path()) {
        return error::AppError::InvalidRequest("the request path contains a NUL character".into())
            .into_response();
    }
    if let Some(query) = uri.query() {
        if decoded_has_nul(query) {
            let name = form_urlencoded::parse(query.as_bytes())
                .find(|(k, v)| k.contains('\0') || v.contains('\0'))
                .map(|(k, _)| k.replace('\0', "\\0"))
                .unwrap_or_default();
            return error::AppError::InvalidQuery(format!(
                "query parameter `{name}` contains a NUL character"
            ))
            .into_response();
        }
    }
    next.run(req).await
}

/// How much of a refused oversized body is read and thrown away, at most,
/// and for how long, before the `413` is sent.
const LINGER_BYTES: u64 = 256 * 1024 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A body whose declared length is over `--max-body-bytes` is refused with
/// `413` before any handler runs, after reading and discarding what the
/// client keeps sending (bounded in bytes and time, as nginx's lingering
/// close does): a client that writes its whole body before reading would
/// otherwise get a broken pipe instead of the answer.
async fn refuse_oversized(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let limit = state.config.max_body_bytes as u64;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit) else {
        return next.run(req).await;
    };
    let mut body = req.into_body();
    let drain = async {
        let mut read = 0u64;
        while read < declared.min(LINGER_BYTES) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    error::AppError::PayloadTooLarge(format!(
        "request body of {declared} bytes exceeds --max-body-bytes ({limit} bytes)"
    ))
    .into_response()
}

/// Percent-decodes bytes (invalid escapes are kept as they are).
fn percent_decoded(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Counts and times every request by route and status.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(req).await;
    state.metrics.observe_request(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn fallback(req: Request) -> error::AppError {
    error::AppError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}
