//! The OpenAPI 3.1 document: the machine-readable contract of the API.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::{
    Problem, billing, exports, fleet, fleet_upgrades, imports, instances, operations, plans,
};

/// Declares a documented problem response: one status, its meaning, a problem body.
/// These types only describe responses for the document and are never built.
macro_rules! problem_response {
    ($name:ident, $status:literal, $description:literal) => {
        #[derive(IntoResponses)]
        #[response(
                                                    status = $status,
                                                    description = $description,
                                                    content_type = "application/problem+json"
                                                )]
        #[allow(dead_code, reason = "describes a response; never built")]
        pub struct $name(Problem);
    };
}

problem_response!(
    Malformed,
    400,
    "`malformed_request`: the body is not the expected JSON (syntax, types, unknown members); `invalid_idempotency_key`"
);
problem_response!(
    NotFound,
    404,
    "`not_found`: no such object, or one the caller may not see"
);
problem_response!(
    Conflict,
    409,
    "`domain_unavailable`: the domain is reserved or already hosted; `invalid_state`, `concurrent_change`, `export_not_ready`, `billing_disabled`, `upgrade_in_progress`, `invalid_target`; `operation_in_progress` (with `operation_id` and `operation_kind`): another operation on the instance is under way"
);
problem_response!(
    Forbidden,
    403,
    "`operators_only`: the action is an operator's"
);
problem_response!(Gone, 410, "`gone`: the instance has been deleted");
problem_response!(
    TooLarge,
    413,
    "`payload_too_large`: a JSON body exceeds 64 KiB, or an import more than 1 TiB"
);
problem_response!(
    Unprocessable,
    422,
    "`invalid_domain`, `invalid_email`, `invalid_version`, `unknown_plan`, `invalid_recipient`, `invalid_push_target`, `missing_field` (with `field` naming the member), `idempotency_key_reused`; imports: `invalid_archive`, `domain_mismatch`, `version_downgrade`, `unsupported_upgrade`, `invalid_url`; billing: `plan_not_for_sale`, `same_plan`; fleet upgrades: `invalid_waves`, `no_instances`; fleet moves: `unknown_target`, `invalid_concurrency`"
);
problem_response!(
    ServerError,
    500,
    "`internal_error`: the request failed on the server; details are logged, not returned"
);
problem_response!(
    Unavailable,
    503,
    "`database_unavailable`, `storage_unavailable`, `no_capacity`: retry later"
);

/// `unauthenticated`: no token, or one that is invalid, expired or revoked.
#[derive(IntoResponses)]
#[response(
    status = 401,
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"herd\"`"))
)]
#[allow(dead_code, reason = "describes a response; never built")]
pub struct Unauthenticated(Problem);

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from `herd token create`."))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herd API",
        description = "Order, follow and delete managed Mastodon servers. Errors are RFC 9457 problem documents with a stable `code`."
    ),
    paths(
        plans::list,
        instances::create,
        instances::list,
        instances::show,
        instances::update,
        instances::upgrade,
        instances::suspend,
        instances::resume,
        instances::delete,
        billing::create_checkout,
        billing::portal,
        billing::invoices,
        billing::webhook,
        exports::create,
        exports::list,
        exports::show,
        exports::download,
        imports::create,
        fleet::migrate,
        fleet::drain,
        fleet::show_drain,
        operations::show,
        fleet_upgrades::create,
        fleet_upgrades::list,
        fleet_upgrades::show,
        fleet_upgrades::pause,
        fleet_upgrades::resume,
        fleet_upgrades::abort,
        document,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "plans", description = "What can be ordered"),
        (name = "instances", description = "Hosted Mastodon servers"),
        (name = "exports", description = "Everything an instance is, as one archive to take anywhere"),
        (name = "billing", description = "Paying through Stripe: checkout, portal, invoices, and Stripe's webhook"),
        (name = "imports", description = "A server from another host or a Herd export, restored as a new instance"),
        (name = "operations", description = "Long-running work to follow"),
        (name = "fleet", description = "Operators' work on the whole fleet: upgrades in waves, moves of instances between clusters, drains"),
        (name = "meta", description = "The API itself"),
    )
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document always serialises")
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "get_openapi",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}
