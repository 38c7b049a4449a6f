//! Exports: `POST /api/v1/instances/{id}/exports`, `GET /api/v1/exports/{id}`
//! and its download.
//!
//! Starting an export is one transaction, like ordering: the export, its
//! operation, its job, the announcement and the audit entry are recorded
//! together or not at all.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpResponse, web};
use diesel_async::AsyncConnection;
use herd_core::lifecycle::InstanceState;
use herd_db::archives::{self, Export, ExportState, PushTarget};
use herd_db::audit::{self, Actor, AuditEntry};
use herd_jobs::export::StartExport;
use serde_json::json;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use crate::auth::Principal;
use crate::body::HashedJson;
use crate::dto::{CreateExportRequest, ExportAccepted, ExportList, ExportView};
use crate::openapi::{
    Conflict, Malformed, NotFound, ServerError, TooLarge, Unauthenticated, Unavailable,
    Unprocessable,
};
use crate::{ApiState, Problem};

/// How long a signed download link stays valid.
const LINK_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// Exports everything the instance is (database, media, secrets) as one
/// archive of format v1. Follow the returned operation; the finished export
/// is downloaded from `/api/v1/exports/{id}/download`.
#[utoipa::path(
    post,
    path = "/api/v1/instances/{id}/exports",
    operation_id = "create_export",
    tag = "exports",
    params(("id" = Uuid, Path, description = "The instance's id")),
    request_body = CreateExportRequest,
    responses(
        (status = 202, description = "The export has been queued", body = ExportAccepted),
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
pub async fn create(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
    request: HashedJson<CreateExportRequest>,
) -> Result<HttpResponse, Problem> {
    let request = request.value;
    if let Some(recipient) = &request.recipient {
        herd_portability::parse_recipient(recipient)
            .map_err(|err| unprocessable("invalid_recipient", "recipient", err.to_string()))?;
    }
    let push = request.push.map(PushTarget::try_from).transpose()?;
    let instance_id = *id;
    let sealer = state.archives.sealer().clone();
    let mut conn = state.connection().await?;
    let accepted = conn
        .transaction(async |conn| {
            let instance = herd_db::instances::find_instance(conn, &principal.0, instance_id)
                .await?
                .ok_or_else(Problem::not_found)?;
            if !matches!(
                instance.state,
                InstanceState::Running | InstanceState::Updating | InstanceState::Suspended
            ) {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "invalid_state",
                    "Instance not exportable",
                    format!(
                        "an instance that is {} has nothing to export yet, or no more",
                        instance.state.name()
                    ),
                ));
            }
            let (export, operation) = herd_jobs::export::start(
                conn,
                &sealer,
                StartExport {
                    instance_id,
                    requested_by: Some(principal.0.account_id),
                    compressed: request.compress,
                    recipient: request.recipient.as_deref(),
                    push: push.as_ref(),
                    final_export: false,
                },
            )
            .await?;
            let (export_id, operation_id) = (export.id, operation.id);
            let facts = json!({
                "export_id": export_id,
                "instance_id": instance_id,
                "operation_id": operation_id,
                "compressed": request.compress,
                "encrypted": request.recipient.is_some(),
                "pushed": push.is_some(),
            });
            herd_db::outbox::publish(conn, "export.requested", facts.clone()).await?;
            audit::record(
                conn,
                AuditEntry {
                    actor: Actor::Account(principal.0),
                    action: "instance.export",
                    object_kind: "instance",
                    object_id: instance_id.to_string(),
                    details: facts,
                },
            )
            .await?;
            Ok::<_, Problem>(ExportAccepted {
                export: ExportView::new(export, None),
                operation: operation.into(),
            })
        })
        .await?;
    Ok(HttpResponse::Accepted().json(accepted))
}

fn unprocessable(code: &'static str, field: &str, detail: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        "Invalid export request",
        detail,
    )
    .with_extensions(json!({ "field": field }))
}

impl TryFrom<crate::dto::PushRequest> for PushTarget {
    type Error = Problem;

    fn try_from(push: crate::dto::PushRequest) -> Result<Self, Problem> {
        let endpoint = url::Url::parse(&push.endpoint)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                unprocessable(
                    "invalid_push_target",
                    "push.endpoint",
                    format!("`{}` is not an http(s) URL", push.endpoint),
                )
            })?;
        if push.bucket.is_empty() || push.access_key_id.is_empty() {
            return Err(unprocessable(
                "invalid_push_target",
                "push",
                "the bucket and the access key id must not be empty".to_owned(),
            ));
        }
        Ok(PushTarget {
            endpoint: endpoint.to_string(),
            region: push.region.unwrap_or_else(|| "us-east-1".to_owned()),
            bucket: push.bucket,
            key: push.key,
            access_key_id: push.access_key_id,
            secret_access_key: push.secret_access_key,
        })
    }
}

/// The exports of one of the caller's instances, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/instances/{id}/exports",
    operation_id = "list_exports",
    tag = "exports",
    params(("id" = Uuid, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The exports", body = ExportList),
        Unauthenticated,
        NotFound,
        ServerError,
        Unavailable,
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<ExportList>, Problem> {
    let mut conn = state.connection().await?;
    herd_db::instances::find_instance(&mut conn, &principal.0, *id)
        .await?
        .ok_or_else(Problem::not_found)?;
    let exports = archives::list_exports(&mut conn, *id).await?;
    Ok(web::Json(ExportList {
        exports: exports
            .into_iter()
            .map(|export| ExportView::new(export, None))
            .collect(),
    }))
}

/// One export of the caller's instances (operators: any). A complete one
/// carries a signed download link that expires after 15 minutes.
#[utoipa::path(
    get,
    path = "/api/v1/exports/{id}",
    operation_id = "get_export",
    tag = "exports",
    params(("id" = Uuid, Path, description = "The export's id")),
    responses(
        (status = 200, description = "The export", body = ExportView),
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
) -> Result<web::Json<ExportView>, Problem> {
    let export = find(&state, &principal, *id).await?;
    let link = match downloadable(&export) {
        Some(stored) => {
            let bucket = state.archives.bucket(stored.object_store_id).await?;
            Some(bucket.presigned_get(&stored.object_key, LINK_VALIDITY))
        }
        None => None,
    };
    Ok(web::Json(ExportView::new(export, link.map(String::from))))
}

/// The archive itself, streamed.
#[utoipa::path(
    get,
    path = "/api/v1/exports/{id}/download",
    operation_id = "download_export",
    tag = "exports",
    params(("id" = Uuid, Path, description = "The export's id")),
    responses(
        (status = 200, description = "The archive (tar, optionally zstd, optionally age)", content_type = "application/octet-stream"),
        Unauthenticated,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn download(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let export = find(&state, &principal, *id).await?;
    let Some(stored) = downloadable(&export) else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "export_not_ready",
            "Export not downloadable",
            format!("the export is {}", export.state.as_str()),
        ));
    };
    let bucket = state.archives.bucket(stored.object_store_id).await?;
    let (size, body) = bucket
        .get_reader(&stored.object_key)
        .await
        .map_err(|err| Problem::internal(&err))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(stored.file_name.clone())],
        })
        .insert_header((header::CONTENT_LENGTH, size))
        .insert_header(("Digest-SHA256", stored.sha256.clone()))
        .no_chunking(size)
        .streaming(ReaderStream::new(body)))
}

async fn find(state: &ApiState, principal: &Principal, id: Uuid) -> Result<Export, Problem> {
    let mut conn = state.connection().await?;
    archives::find_export(&mut conn, &principal.0, id)
        .await?
        .ok_or_else(Problem::not_found)
}

/// The stored archive of a complete export that has not expired.
fn downloadable(export: &Export) -> Option<&archives::StoredArchive> {
    let live = export.expires_at.is_none_or(|at| at > chrono::Utc::now());
    (export.state == ExportState::Complete && live)
        .then_some(export.archive.as_ref())
        .flatten()
}

impl From<herd_jobs::JobError> for Problem {
    fn from(err: herd_jobs::JobError) -> Self {
        match err {
            herd_jobs::JobError::Db(err) => return err.into(),
            herd_jobs::JobError::Query(err) => return err.into(),
            herd_jobs::JobError::OperationInProgress {
                operation_id, kind, ..
            } => {
                return Problem::new(
                    StatusCode::CONFLICT,
                    "operation_in_progress",
                    "Operation in progress",
                    format!(
                        "the {kind} operation {operation_id} is under way on the instance; \
                         retry once it has ended"
                    ),
                )
                .with_extensions(serde_json::json!({
                    "operation_id": operation_id,
                    "operation_kind": kind,
                }));
            }
            herd_jobs::JobError::UpgradeRefused(refused) => {
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "upgrade_refused",
                    "Upgrade refused",
                    refused.to_string(),
                )
                .with_extensions(serde_json::json!({ "field": "version" }));
            }
            _ => {}
        }
        tracing::error!(error = %err, "archive storage unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "Archive storage unavailable",
            "the archive storage cannot be reached; retry later",
        )
    }
}
