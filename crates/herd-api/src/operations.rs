//! `GET /api/v1/operations/{id}`.

use actix_web::web;
use uuid::Uuid;

use crate::auth::Principal;
use crate::dto::OperationView;
use crate::openapi::{NotFound, ServerError, Unauthenticated, Unavailable};
use crate::{ApiState, Problem, found};

/// An operation on one of the caller's instances (operators: any).
#[utoipa::path(
    get,
    path = "/api/v1/operations/{id}",
    operation_id = "get_operation",
    tag = "operations",
    params(("id" = Uuid, Path, description = "The operation's id")),
    responses(
        (status = 200, description = "The operation", body = OperationView),
        Unauthenticated,
        NotFound,
        ServerError,
        Unavailable,
    )
)]
pub async fn show(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<OperationView>, Problem> {
    let mut conn = state.connection().await?;
    found(herd_db::operations::find_operation(&mut conn, &principal.0, *id).await?)
}
