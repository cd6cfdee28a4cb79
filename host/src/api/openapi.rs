//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

use super::{components, error, events, executions, health, metrics, plugins, publishers, streams};

#[derive(OpenApi)]
#[openapi(
    info(title = "Vigil", description = "Telemetry host: metrics and events ingest, query, export, components, plugins and delivery."),
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
        events::ingest,
        events::list,
        components::list,
        components::register,
        components::heartbeat,
        plugins::list,
        plugins::reload,
        publishers::list,
        publishers::dead_letters,
        executions::create,
        executions::list,
        executions::read,
        executions::update,
        executions::run_record,
        streams::execution_events,
        streams::source_events,
        streams::project_events,
        streams::all_events,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_in_the_router_is_in_the_openapi_document() {
        let doc = openapi_document();
        for (method, path, _) in crate::api::route_table() {
            let item = doc.paths.paths.get(path).unwrap_or_else(|| {
                panic!("{path} is routed but missing from the OpenAPI document")
            });
            let documented = match method.as_str() {
                "GET" => item.get.is_some(),
                "POST" => item.post.is_some(),
                "DELETE" => item.delete.is_some(),
                "PUT" => item.put.is_some(),
                "PATCH" => item.patch.is_some(),
                other => panic!("unexpected method {other}"),
            };
            assert!(documented, "{method} {path} is routed but not documented");
        }
    }

    #[test]
    fn every_documented_operation_is_routed() {
        let routed: Vec<(String, &str)> = crate::api::route_table()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p))
            .collect();
        for (path, item) in &openapi_document().paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("DELETE", &item.delete),
            ] {
                if op.is_some() {
                    assert!(
                        routed.iter().any(|(m, p)| m == method && p == path),
                        "{method} {path} is documented but not routed"
                    );
                }
            }
        }
    }
}
