//! Herd's HTTP server.
//!
//! Handlers stay thin: they translate HTTP to calls into the layers below and
//! errors into `application/problem+json`. Work that spans several writes
//! lives in service modules (`orders`).

mod auth;
mod billing;
mod body;
mod dto;
mod email;
mod exports;
mod fleet;
mod fleet_upgrades;
mod health;
mod imports;
mod instances;
mod openapi;
mod operations;
mod orders;
mod plans;
mod problem;
mod state;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, Resource, Route, web};

pub use auth::Principal;
pub use health::Probes;
pub use openapi::ApiDoc;
pub use problem::Problem;
pub use state::ApiState;

/// One path and the handler of each method it answers.
struct Endpoint {
    path: &'static str,
    routes: Vec<(Method, Route)>,
}

fn endpoint(path: &'static str, routes: Vec<(Method, Route)>) -> Endpoint {
    Endpoint { path, routes }
}

/// Every endpoint besides health and readiness. The app is built from this
/// table, and a test checks the OpenAPI document against it.
fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint(
            "/openapi.json",
            vec![(Method::GET, web::to(openapi::document))],
        ),
        endpoint("/api/v1/plans", vec![(Method::GET, web::to(plans::list))]),
        endpoint(
            "/api/v1/instances",
            vec![
                (Method::GET, web::to(instances::list)),
                (Method::POST, web::to(instances::create)),
            ],
        ),
        endpoint(
            "/api/v1/instances/{id}",
            vec![
                (Method::GET, web::to(instances::show)),
                (Method::PATCH, web::to(instances::update)),
                (Method::DELETE, web::to(instances::delete)),
            ],
        ),
        endpoint(
            "/api/v1/instances/{id}/exports",
            vec![
                (Method::GET, web::to(exports::list)),
                (Method::POST, web::to(exports::create)),
            ],
        ),
        endpoint(
            "/api/v1/instances/{id}/upgrade",
            vec![(Method::POST, web::to(instances::upgrade))],
        ),
        endpoint(
            "/api/v1/instances/{id}/suspend",
            vec![(Method::POST, web::to(instances::suspend))],
        ),
        endpoint(
            "/api/v1/instances/{id}/resume",
            vec![(Method::POST, web::to(instances::resume))],
        ),
        endpoint(
            "/api/v1/instances/{id}/migrate",
            vec![(Method::POST, web::to(fleet::migrate))],
        ),
        endpoint(
            "/api/v1/clusters/{id}/drain",
            vec![(Method::POST, web::to(fleet::drain))],
        ),
        endpoint(
            "/api/v1/drains/{id}",
            vec![(Method::GET, web::to(fleet::show_drain))],
        ),
        endpoint(
            "/api/v1/instances/{id}/checkout",
            vec![(Method::POST, web::to(billing::create_checkout))],
        ),
        endpoint(
            "/api/v1/billing/portal",
            vec![(Method::POST, web::to(billing::portal))],
        ),
        endpoint(
            "/api/v1/billing/invoices",
            vec![(Method::GET, web::to(billing::invoices))],
        ),
        endpoint(
            "/webhooks/stripe",
            vec![(Method::POST, web::to(billing::webhook))],
        ),
        endpoint(
            "/api/v1/imports",
            vec![(Method::POST, web::to(imports::create))],
        ),
        endpoint(
            "/api/v1/exports/{id}",
            vec![(Method::GET, web::to(exports::show))],
        ),
        endpoint(
            "/api/v1/exports/{id}/download",
            vec![(Method::GET, web::to(exports::download))],
        ),
        endpoint(
            "/api/v1/fleet/upgrades",
            vec![
                (Method::GET, web::to(fleet_upgrades::list)),
                (Method::POST, web::to(fleet_upgrades::create)),
            ],
        ),
        endpoint(
            "/api/v1/fleet/upgrades/{id}",
            vec![(Method::GET, web::to(fleet_upgrades::show))],
        ),
        endpoint(
            "/api/v1/fleet/upgrades/{id}/pause",
            vec![(Method::POST, web::to(fleet_upgrades::pause))],
        ),
        endpoint(
            "/api/v1/fleet/upgrades/{id}/resume",
            vec![(Method::POST, web::to(fleet_upgrades::resume))],
        ),
        endpoint(
            "/api/v1/fleet/upgrades/{id}/abort",
            vec![(Method::POST, web::to(fleet_upgrades::abort))],
        ),
        endpoint(
            "/api/v1/operations/{id}",
            vec![(Method::GET, web::to(operations::show))],
        ),
    ]
}

impl Endpoint {
    /// The resource, answering 405 with `Allow` to any other method.
    fn into_resource(self) -> Resource {
        let allow = self
            .routes
            .iter()
            .map(|(method, _)| method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let resource = self
            .routes
            .into_iter()
            .fold(web::resource(self.path), |resource, (method, route)| {
                resource.route(route.method(method))
            });
        resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        }))
    }
}

fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut response = actix_web::ResponseError::error_response(&Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        format!("this resource answers {allow}"),
    ));
    if let Ok(value) = HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The view of an object asked for by id. One that does not exist and one the
/// caller may not see answer alike, so ids cannot be probed.
fn found<T, V: From<T>>(object: Option<T>) -> Result<web::Json<V>, Problem> {
    object
        .map(|object| web::Json(object.into()))
        .ok_or_else(Problem::not_found)
}

async fn unknown_route() -> Result<HttpResponse, Problem> {
    Err(Problem::not_found())
}

/// Registers every route on an actix `App`.
pub fn configure(probes: Probes, api: ApiState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(probes))
            .app_data(web::Data::new(api))
            .app_data(web::PayloadConfig::new(body::MAX_BODY_BYTES))
            // An id that is not a UUID names nothing, like an unknown one.
            .app_data(web::PathConfig::default().error_handler(|_, _| Problem::not_found().into()))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz));
        for endpoint in endpoints() {
            cfg.service(endpoint.into_resource());
        }
        cfg.default_service(web::to(unknown_route));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::OpenApi;

    use super::*;

    #[test]
    fn the_document_lists_every_route_and_no_other() {
        let routed: BTreeSet<(String, String)> = endpoints()
            .iter()
            .flat_map(|endpoint| {
                endpoint
                    .routes
                    .iter()
                    .map(|(method, _)| (endpoint.path.to_owned(), method.as_str().to_lowercase()))
            })
            .collect();
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|key| !matches!(key.as_str(), "parameters" | "summary" | "description"))
                    .map(|method| (path.clone(), method.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn operation_ids_are_unique() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let ids: Vec<&str> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|operation| operation["operationId"].as_str())
            .collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_bearer_auth_and_problems() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let create = &document["paths"]["/api/v1/instances"]["post"];
        for status in ["202", "400", "401", "409", "413", "422", "500", "503"] {
            assert!(
                create["responses"][status].is_object(),
                "POST lacks {status}"
            );
        }
        assert!(
            create["responses"]["422"]["content"]["application/problem+json"]["schema"].is_object()
        );
        assert!(create["requestBody"]["content"]["application/json"].is_object());
        assert!(document["components"]["schemas"]["CreateInstanceRequest"].is_object());
    }
}
