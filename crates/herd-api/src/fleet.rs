//! Moves between the fleet's clusters, operators only: one instance
//! (`POST /api/v1/instances/{id}/migrate`) or every instance of a cluster
//! (`POST /api/v1/clusters/{id}/drain`, followed at `GET /api/v1/drains/{id}`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use diesel_async::AsyncConnection;
use herd_db::audit::Actor;
use herd_db::fleet::FleetMember;
use herd_jobs::JobError;
use herd_jobs::migrate::StartMigration;
use uuid::Uuid;

use crate::auth::Principal;
use crate::body::HashedJson;
use crate::dto::{Accepted, DrainClusterRequest, DrainView, MigrateInstanceRequest};
use crate::openapi::{
    Conflict, Forbidden, Malformed, NotFound, ServerError, TooLarge, Unauthenticated, Unavailable,
    Unprocessable,
};
use crate::orders::{accepted, unprocessable};
use crate::{ApiState, Problem, found};

const DEFAULT_CONCURRENCY: u32 = 2;
const MAX_CONCURRENCY: u32 = 100;

/// Moves a running instance to another cluster, its database to another
/// server. The database is dumped and restored during a short write freeze,
/// whose length the operation reports in `details.freeze_seconds`. The media
/// stay in their object store, which serves every cluster, unless another
/// `object_store` is asked for: then they are copied while the instance runs
/// and what changed since during the freeze. Operators only.
#[utoipa::path(
    post,
    path = "/api/v1/instances/{id}/migrate",
    operation_id = "migrate_instance",
    tag = "fleet",
    params(("id" = Uuid, Path, description = "The instance's id")),
    request_body = MigrateInstanceRequest,
    responses(
        (status = 202, description = "The move has been queued", body = Accepted),
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
pub async fn migrate(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
    request: HashedJson<MigrateInstanceRequest>,
) -> Result<HttpResponse, Problem> {
    let request = request.value;
    let mut conn = state.connection().await?;
    let answer = conn
        .transaction(async |conn| {
            let instance = herd_db::instances::find_instance(conn, &principal.0, *id)
                .await?
                .ok_or_else(Problem::not_found)?;
            principal.require_operator()?;
            let cluster = herd_db::fleet::find_cluster(conn, &request.cluster)
                .await?
                .filter(|cluster| cluster.state == "active")
                .ok_or_else(|| unknown("cluster", "an active cluster", &request.cluster))?;
            let to_database_server = match &request.database_server {
                Some(key) => {
                    herd_db::fleet::find_database_server(conn, key)
                        .await?
                        .filter(|server| server.state == "active")
                        .ok_or_else(|| {
                            unknown("database_server", "an active database server", key)
                        })?
                        .id
                }
                None => {
                    herd_db::fleet::least_loaded_database_server(conn, instance.database_server_id)
                        .await?
                        .or(instance.database_server_id)
                        .ok_or_else(|| refused("the instance is not placed yet".to_owned()))?
                }
            };
            let to_object_store = match &request.object_store {
                Some(key) => Some(
                    herd_db::fleet::find_object_store(conn, key)
                        .await?
                        .filter(|store| store.state == "active")
                        .ok_or_else(|| unknown("object_store", "an active object store", key))?
                        .id,
                ),
                None => None,
            };
            let (instance, operation) = herd_jobs::migrate::start(
                conn,
                StartMigration {
                    instance_id: instance.id,
                    to_cluster: cluster.id,
                    to_database_server,
                    to_object_store,
                    drain_id: None,
                },
                Actor::Account(principal.0),
            )
            .await
            .map_err(job_problem)?;
            Ok::<_, Problem>(accepted(instance, operation))
        })
        .await?;
    Ok(answer.into())
}

/// Moves every instance off a cluster, for maintenance or retirement, a
/// bounded number at a time. The cluster is marked `draining` at once, so
/// nothing new is placed on it. Operators only.
#[utoipa::path(
    post,
    path = "/api/v1/clusters/{id}/drain",
    operation_id = "drain_cluster",
    tag = "fleet",
    params(("id" = String, Path, description = "The cluster's name or id")),
    request_body = DrainClusterRequest,
    responses(
        (status = 202, description = "The drain has started", body = DrainView),
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
pub async fn drain(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<String>,
    request: HashedJson<DrainClusterRequest>,
) -> Result<HttpResponse, Problem> {
    principal.require_operator()?;
    let concurrency = request.value.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(unprocessable(
            "invalid_concurrency",
            "Invalid concurrency",
            "concurrency",
            format!("between 1 and {MAX_CONCURRENCY} moves at a time"),
        ));
    }
    let mut conn = state.connection().await?;
    let drain = conn
        .transaction(async |conn| {
            let cluster: FleetMember = herd_db::fleet::find_cluster(conn, &id)
                .await?
                .ok_or_else(Problem::not_found)?;
            if cluster.state == "retired" {
                return Err(refused(format!("the cluster {} is retired", cluster.name)));
            }
            herd_jobs::drain::start(conn, &cluster, concurrency, Actor::Account(principal.0))
                .await
                .map_err(job_problem)
        })
        .await?;
    Ok(HttpResponse::build(StatusCode::ACCEPTED).json(DrainView::from(drain)))
}

/// A drain and how far it got. Operators only.
#[utoipa::path(
    get,
    path = "/api/v1/drains/{id}",
    operation_id = "get_drain",
    tag = "fleet",
    params(("id" = Uuid, Path, description = "The drain's id")),
    responses(
        (status = 200, description = "The drain", body = DrainView),
        Unauthenticated,
        Forbidden,
        NotFound,
        ServerError,
        Unavailable,
    )
)]
pub async fn show_drain(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<DrainView>, Problem> {
    principal.require_operator()?;
    let mut conn = state.connection().await?;
    found(herd_db::drains::load_drain(&mut conn, *id).await?)
}

fn unknown(field: &str, what: &str, key: &str) -> Problem {
    unprocessable(
        "unknown_target",
        "Unknown target",
        field,
        format!("{key} is not {what} of the fleet"),
    )
}

fn refused(detail: String) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "invalid_target",
        "Not possible for this target",
        detail,
    )
}

fn job_problem(err: JobError) -> Problem {
    match err {
        JobError::Refused(reason) => refused(reason),
        other => other.into(),
    }
}
