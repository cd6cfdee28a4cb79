//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

use super::{components, error, health, metrics};

#[derive(OpenApi)]
#[openapi(
    info(title = "Vigil", description = "Telemetry host: metrics ingest, query, export, components."),
    paths(
        health::health,
        health::ready,
        health::own_metrics,
        serve,
        metrics::report,
        metrics::report_v2,
        metrics::query,
        metrics::query_v2,
        metrics::prometheus,
        metrics::self_report,
        metrics::delete_series,
        components::list,
        components::register,
        components::heartbeat,
    ),
    components(schemas(error::ErrorBody, crate::metrics::model::MetricReport)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of every route.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/api/v2/openapi.json", tag = "health",
    responses((status = 200, description = "This document")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
