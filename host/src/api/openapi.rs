//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

use super::{
    alert_rules, alerting, components, error, events, executions, health, metric_query, metrics,
    plugins, publishers, retention, runtime_registry, silences, streams,
};

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
        metric_query::query,
        metric_query::query_v2,
        metrics::prometheus,
        metrics::self_report,
        metrics::delete_series,
        events::ingest,
        events::list,
        components::list,
        components::register,
        components::heartbeat,
        runtime_registry::register_worker_pool,
        runtime_registry::heartbeat_worker_pool,
        runtime_registry::deregister_worker_pool,
        runtime_registry::deregister_worker_pool_post,
        runtime_registry::list_worker_pools,
        runtime_registry::register_runtime,
        runtime_registry::deregister_runtime,
        runtime_registry::list_components,
        retention::set_metric_ttl,
        retention::extend_component_ttl,
        retention::cleanup,
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
        alerting::list_channels,
        alerting::create_channel,
        alerting::read_channel,
        alerting::update_channel,
        alerting::delete_channel,
        alerting::test_channel,
        alerting::list_deliveries,
        alert_rules::list_rules,
        alert_rules::create_rule,
        alert_rules::preview_rule,
        alert_rules::import_rules,
        alert_rules::read_rule,
        alert_rules::update_rule,
        alert_rules::delete_rule,
        alert_rules::list_alerts,
        alert_rules::instant_query,
        silences::list,
        silences::create,
        silences::read,
        silences::expire,
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
    let mut doc = ApiDoc::openapi();
    document_common_errors(&mut doc);
    doc
}

/// Adds the answers every operation can give besides its own: `400` on
/// every operation (NUL in the path or query, undecodable path), `401` and
/// `403` on every secured operation (when tokens are configured), and `408`
/// (body not received within `--body-read-timeout`) and `413` (body over
/// `--max-body-bytes`) on every operation that takes a body.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut op.responses.responses;
            // Every request is checked for NUL characters in its path and
            // query before it is routed (`refuse_nul`), and path parameters
            // must decode: any operation can answer 400.
            responses.entry("400".into()).or_insert_with(|| {
                error("A NUL character in the path or query, or a path parameter that does not decode")
            });
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                responses
                    .entry("401".into())
                    .or_insert_with(|| error("Missing or unknown bearer token"));
                responses
                    .entry("403".into())
                    .or_insert_with(|| error("The token lacks the scope this operation needs"));
            }
            if op.request_body.is_some() {
                responses.entry("408".into()).or_insert_with(|| {
                    error("The request body did not arrive within --body-read-timeout")
                });
                responses
                    .entry("413".into())
                    .or_insert_with(|| error("The request body exceeds --max-body-bytes"));
            }
        }
    }
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
    fn every_operation_documents_the_400_of_a_nul_in_its_query() {
        let doc = openapi_document();
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.put, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                assert!(
                    op.responses.responses.contains_key("400"),
                    "{path} does not document 400"
                );
            }
        }
    }

    #[test]
    fn every_secured_operation_documents_401_and_403() {
        let doc = openapi_document();
        let public = crate::api::auth::PUBLIC;
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.delete].into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                assert_eq!(
                    secured,
                    !public.contains(&path.as_str()),
                    "{path}: documented security does not match the auth middleware"
                );
                if secured {
                    for code in ["401", "403"] {
                        assert!(
                            op.responses.responses.contains_key(code),
                            "{path} does not document {code}"
                        );
                    }
                }
            }
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
