//! `/api/v1/instances`.

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::auth::Principal;
use crate::body::{HashedJson, IdempotencyKey};
use crate::dto::{
    Accepted, BillingView, CreateInstanceRequest, InstanceList, InstanceView,
    UpdateInstanceRequest, UpgradeInstanceRequest,
};
use crate::openapi::{
    Conflict, Forbidden, Gone, Malformed, NotFound, ServerError, TooLarge, Unauthenticated,
    Unavailable, Unprocessable,
};
use crate::orders::Suspension;
use crate::{ApiState, Problem, billing, orders};

/// Orders a Mastodon server owned by the caller. Provisioning runs in the
/// background: follow the returned operation. With billing on, the answer
/// carries a `checkout`: provisioning starts once it is paid.
#[utoipa::path(
    post,
    path = "/api/v1/instances",
    operation_id = "create_instance",
    tag = "instances",
    request_body = CreateInstanceRequest,
    params((
        "Idempotency-Key" = Option<String>, Header,
        description = "Makes retries safe: the same key with the same body returns the first answer and changes nothing; with another body it is refused with 422 `idempotency_key_reused`."
    )),
    responses(
        (status = 202, description = "Ordered; provisioning has been queued", body = Accepted),
        Malformed,
        Unauthenticated,
        Conflict,
        TooLarge,
        Unprocessable,
        ServerError,
        Unavailable,
    )
)]
pub async fn create(
    state: web::Data<ApiState>,
    principal: Principal,
    key: IdempotencyKey,
    request: HashedJson<CreateInstanceRequest>,
) -> Result<HttpResponse, Problem> {
    let answer = orders::place(&state, &principal, request, key.0).await?;
    Ok(billing::with_checkout(&state, &principal, answer)
        .await?
        .into())
}

/// The caller's instances (operators: all), newest first, deleted ones left out.
#[utoipa::path(
    get,
    path = "/api/v1/instances",
    operation_id = "list_instances",
    tag = "instances",
    responses(
        (status = 200, description = "The instances", body = InstanceList),
        Unauthenticated,
        ServerError,
        Unavailable,
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    principal: Principal,
) -> Result<web::Json<InstanceList>, Problem> {
    let mut conn = state.connection().await?;
    let instances = herd_db::instances::list_instances(&mut conn, &principal.0).await?;
    Ok(web::Json(InstanceList {
        instances: instances.into_iter().map(InstanceView::from).collect(),
    }))
}

/// One of the caller's instances (operators: any).
#[utoipa::path(
    get,
    path = "/api/v1/instances/{id}",
    operation_id = "get_instance",
    tag = "instances",
    params(("id" = Uuid, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
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
) -> Result<web::Json<InstanceView>, Problem> {
    let mut conn = state.connection().await?;
    let instance = herd_db::instances::find_instance(&mut conn, &principal.0, *id)
        .await?
        .ok_or_else(Problem::not_found)?;
    let mut view = InstanceView::from(instance);
    if let Some(billing) = &state.billing {
        view.billing = herd_db::billing::find_subscription(&mut conn, *id)
            .await?
            .map(|subscription| BillingView::new(subscription, billing.retention));
    }
    Ok(web::Json(view))
}

/// Deletes an instance with all its data. Asking again while the deletion
/// runs returns the running deletion; asking while the instance moves to
/// another cluster is refused until the move has ended.
#[utoipa::path(
    delete,
    path = "/api/v1/instances/{id}",
    operation_id = "delete_instance",
    tag = "instances",
    params(("id" = Uuid, Path, description = "The instance's id")),
    responses(
        (status = 202, description = "Deletion has been queued, or was already running", body = Accepted),
        Unauthenticated,
        NotFound,
        Conflict,
        Gone,
        ServerError,
        Unavailable,
    )
)]
pub async fn delete(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    Ok(orders::delete(&state, &principal, *id).await?.into())
}

/// Moves an instance to another plan, or scales it by hand (operators):
/// replicas, threads, resources, quotas, the database's connection limit and
/// the bucket's quota follow. With billing, a plan change goes through the
/// subscription first, prorated; without, operators only.
#[utoipa::path(
    patch,
    path = "/api/v1/instances/{id}",
    operation_id = "update_instance",
    tag = "instances",
    params(("id" = Uuid, Path, description = "The instance's id")),
    request_body = UpdateInstanceRequest,
    responses(
        (status = 202, description = "The resize has been queued", body = Accepted),
        Malformed,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        Unprocessable,
        ServerError,
        Unavailable,
    )
)]
pub async fn update(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
    request: HashedJson<UpdateInstanceRequest>,
) -> Result<HttpResponse, Problem> {
    let answer = match request.value {
        UpdateInstanceRequest {
            plan: Some(plan),
            scaling: None,
        } => orders::change_plan(&state, &principal, *id, &plan).await?,
        UpdateInstanceRequest {
            plan: None,
            scaling: Some(scaling),
        } => orders::scale(&state, &principal, *id, scaling.into()).await?,
        _ => {
            return Err(Problem::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "malformed_request",
                "Malformed request",
                "give either `plan` or `scaling`",
            ));
        }
    };
    Ok(answer.into())
}

/// Upgrades an instance to a newer Mastodon version, at most one minor
/// release on: a backup (an export) first, the pre-deploy migrations, the
/// rollout of web, streaming and sidekiq, the post-deploy migrations. A
/// rollout not ready within `rollout_timeout_seconds` rolls back to the old
/// version; the operation then fails with a reason starting `rolled back:`.
#[utoipa::path(
    post,
    path = "/api/v1/instances/{id}/upgrade",
    operation_id = "upgrade_instance",
    tag = "instances",
    params(("id" = Uuid, Path, description = "The instance's id")),
    request_body = UpgradeInstanceRequest,
    responses(
        (status = 202, description = "The upgrade has been queued", body = Accepted),
        Malformed,
        Unauthenticated,
        NotFound,
        Conflict,
        TooLarge,
        Unprocessable,
        ServerError,
        Unavailable,
    )
)]
pub async fn upgrade(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
    request: HashedJson<UpgradeInstanceRequest>,
) -> Result<HttpResponse, Problem> {
    Ok(orders::upgrade(&state, &principal, *id, &request.value)
        .await?
        .into())
}

/// Suspends an instance: its workloads scale to zero, its data stays, it can
/// still be exported. Operators only; billing suspends by itself.
#[utoipa::path(
    post,
    path = "/api/v1/instances/{id}/suspend",
    operation_id = "suspend_instance",
    tag = "instances",
    params(("id" = Uuid, Path, description = "The instance's id")),
    responses(
        (status = 202, description = "The suspension has been queued", body = Accepted),
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn suspend(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    Ok(
        orders::suspension(&state, &principal, *id, Suspension::Suspend)
            .await?
            .into(),
    )
}

/// Resumes a suspended instance with its data. Operators only.
#[utoipa::path(
    post,
    path = "/api/v1/instances/{id}/resume",
    operation_id = "resume_instance",
    tag = "instances",
    params(("id" = Uuid, Path, description = "The instance's id")),
    responses(
        (status = 202, description = "The resumption has been queued", body = Accepted),
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn resume(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    Ok(
        orders::suspension(&state, &principal, *id, Suspension::Resume)
            .await?
            .into(),
    )
}
