//! A move of a running instance to another cluster of the fleet, its
//! database to a database server chosen for it.
//!
//! target_database -> target_bucket -> media -> freeze -> media_delta ->
//! database -> switch -> ready -> source_cleanup.
//!
//! The target database is made while the instance still runs. The freeze
//! scales its workloads on the source cluster to zero, so nothing writes
//! while the database is dumped and restored on the target server; the
//! switch points the record at the target and writes the resource there,
//! whose setup migrates the restored schema instead of creating one. The
//! write freeze ends when the target reports the instance ready, and its
//! length is reported in the operation. Last, the resource on the source
//! cluster and the source database go. Media stay where they are, as an
//! object store serves every cluster of the fleet, unless the move changes the
//! store too: then they are copied to the instance's bucket on the target
//! store while the instance runs, what changed since is copied (and what was
//! deleted is deleted) during the freeze, and the source bucket and key go
//! with the source database.
//!
//! The resource left on the source cluster is not the instance's placement
//! any more, so its finalizer removes no data (see `HerdBackend`): the
//! source database is dropped here, by its server's id.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::{StreamExt, TryStreamExt, stream};
use herd_core::lifecycle::{InstanceState, LifecycleEvent, Request};
use herd_db::audit::{Actor, AuditEntry};
use herd_db::drains::MIGRATE_OPERATION;
use herd_db::instances::Instance;
use herd_db::jobs::JobId;
use herd_db::operations::Operation;
use herd_tenancy::{ObjectStore, PgTools, StoredObject, TenancyError, when_busy};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::changes::{OperationStart, start_operation};
use crate::resource::{desired_resource, effective_plan, resource_name};
use crate::steps::StepRunner;
use crate::{JobError, Services, delete, provision, tenant_data};

pub const KIND: &str = "migrate_instance";
pub const STEPS: &[&str] = &[
    "target_database",
    "target_bucket",
    "media",
    "freeze",
    "media_delta",
    "database",
    "switch",
    "ready",
    "source_cleanup",
];
const POLL: Duration = Duration::from_millis(250);
/// What the dump may run ahead of the restore.
const DUMP_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateJob {
    pub instance_id: Uuid,
    pub operation_id: Uuid,
    pub from_cluster: Uuid,
    pub to_cluster: Uuid,
    pub from_database_server: Uuid,
    pub to_database_server: Uuid,
    /// The object stores of the move; the same one when the media stay.
    /// Absent in moves queued before moves could change the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_object_store: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_object_store: Option<Uuid>,
    /// The drain this move is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_id: Option<Uuid>,
}

/// A move to start, as an operator or a drain asks for it.
pub struct StartMigration {
    pub instance_id: Uuid,
    pub to_cluster: Uuid,
    pub to_database_server: Uuid,
    /// `None` keeps the current object store.
    pub to_object_store: Option<Uuid>,
    pub drain_id: Option<Uuid>,
}

/// Starts moving a running instance, in the caller's transaction: the state
/// change, the operation with its job, an event and an audit entry.
pub async fn start(
    conn: &mut AsyncPgConnection,
    request: StartMigration,
    actor: Actor,
) -> Result<(Instance, Operation), JobError> {
    // Before the checks of the target, which a move under way may fail.
    crate::changes::ensure_free(conn, request.instance_id, Request::Change).await?;
    let current = herd_db::instances::load_instance(conn, request.instance_id)
        .await?
        .ok_or(JobError::MissingInstance(request.instance_id))?;
    let (Some(from_cluster), Some(from_database_server), Some(from_object_store)) = (
        current.cluster_id,
        current.database_server_id,
        current.object_store_id,
    ) else {
        return Err(JobError::Refused(format!(
            "instance {} is not placed yet",
            current.id
        )));
    };
    if from_cluster == request.to_cluster {
        return Err(JobError::Refused(format!(
            "instance {} runs on that cluster already",
            current.id
        )));
    }
    let operation_id = Uuid::now_v7();
    let to_object_store = request.to_object_store.unwrap_or(from_object_store);
    let job = MigrateJob {
        instance_id: current.id,
        operation_id,
        from_cluster,
        to_cluster: request.to_cluster,
        from_database_server,
        to_database_server: request.to_database_server,
        from_object_store: Some(from_object_store),
        to_object_store: Some(to_object_store),
        drain_id: request.drain_id,
    };
    let facts = json!({
        "instance_id": current.id,
        "operation_id": operation_id,
        "from_cluster": from_cluster,
        "to_cluster": request.to_cluster,
        "from_database_server": from_database_server,
        "to_database_server": request.to_database_server,
        "from_object_store": from_object_store,
        "to_object_store": to_object_store,
        "drain_id": request.drain_id,
    });
    let (instance, _) = start_operation(
        conn,
        OperationStart {
            instance_id: current.id,
            operation_id,
            event: &LifecycleEvent::UpdateStarted,
            operation_kind: MIGRATE_OPERATION,
            job_kind: KIND,
            steps: STEPS,
            payload: serde_json::to_value(&job).expect("a job payload always serialises"),
            topic: "instance.migration_started",
            audit_action: "instance.migrate",
            facts: facts.clone(),
        },
        actor,
    )
    .await?;
    // The drain follows its moves through these details.
    herd_db::operations::add_details(conn, operation_id, facts).await?;
    let operation = herd_db::operations::load_operation(conn, operation_id)
        .await?
        .ok_or(JobError::Payload(format!(
            "operation {operation_id} is gone"
        )))?;
    Ok((instance, operation))
}

pub async fn run(services: &Services, job: JobId, payload: &MigrateJob) -> Result<(), JobError> {
    let mut steps = StepRunner::resume(services, KIND, job, payload.operation_id).await?;
    let moves_database = payload.from_database_server != payload.to_database_server;
    let moves_media = payload.moves_media();

    let source = still_moving(services, payload).await?;
    let target = placed_at(&source, payload);
    let plan = effective_plan(services, &source).await?;
    if moves_database {
        steps
            .step("target_database", || async {
                let secrets = services.stored_secrets(source.id).await?;
                tenant_data::ensure_database(
                    services,
                    &target,
                    &secrets,
                    plan.database_connection_limit,
                )
                .await
            })
            .await?;
    }
    if moves_media {
        steps
            .step("target_bucket", || async {
                let secrets = services.stored_secrets(source.id).await?;
                tenant_data::ensure_bucket(services, &target, &secrets, plan.media_storage_gib)
                    .await
            })
            .await?;
        let copied: CopiedMedia = steps
            .step("media", || copy_media(services, &source, &target, false))
            .await?;
        add_details(services, payload, copied.details("media")).await?;
    }
    still_moving(services, payload).await?;
    let freeze_started: DateTime<Utc> = steps.step("freeze", || freeze(services, &source)).await?;
    if moves_media {
        let copied: CopiedMedia = steps
            .step("media_delta", || {
                copy_media(services, &source, &target, true)
            })
            .await?;
        add_details(services, payload, copied.details("media_delta")).await?;
    }
    let copied_bytes: u64 = if moves_database {
        steps
            .step("database", || copy_database(services, &source, &target))
            .await?
    } else {
        0
    };
    steps.step("switch", || switch(services, payload)).await?;
    let freeze_ended: DateTime<Utc> = steps
        .step("ready", || ready_on_target(services, payload))
        .await?;
    let freeze_seconds = (freeze_ended - freeze_started).as_seconds_f64();
    add_details(
        services,
        payload,
        json!({
            "freeze_started_at": freeze_started,
            "freeze_ended_at": freeze_ended,
            "freeze_seconds": freeze_seconds,
            "database_bytes": copied_bytes,
        }),
    )
    .await?;
    steps
        .step("source_cleanup", || clean_up_source(services, payload))
        .await?;
    finish(services, payload, freeze_seconds).await
}

impl MigrateJob {
    fn moves_media(&self) -> bool {
        self.from_object_store != self.to_object_store
    }
}

/// The instance as it would be placed on the target.
fn placed_at(instance: &Instance, payload: &MigrateJob) -> Instance {
    Instance {
        cluster_id: Some(payload.to_cluster),
        database_server_id: Some(payload.to_database_server),
        object_store_id: payload.to_object_store.or(instance.object_store_id),
        ..instance.clone()
    }
}

async fn add_details(
    services: &Services,
    payload: &MigrateJob,
    details: serde_json::Value,
) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    herd_db::operations::add_details(&mut conn, payload.operation_id, details).await?;
    Ok(())
}

/// What one pass of the media copy did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct CopiedMedia {
    objects: u64,
    bytes: u64,
    deleted: u64,
}

impl CopiedMedia {
    /// The operation's details for the pass `pass` (`media` or `media_delta`).
    fn details(self, pass: &str) -> serde_json::Value {
        json!({
            format!("{pass}_objects_copied"): self.objects,
            format!("{pass}_bytes_copied"): self.bytes,
            format!("{pass}_objects_deleted"): self.deleted,
        })
    }
}

/// Objects copied at once. Media are mostly small files (thumbnails,
/// avatars, emoji), so a copy waits on two round trips far more than on
/// bandwidth, and one at a time leaves the write freeze waiting on latency.
/// Each copy streams its body, holding only a few buffers in memory, and
/// sixteen requests keep both stores busy without crowding out the other
/// tenants they serve.
const MEDIA_COPIES_IN_FLIGHT: usize = 16;

/// Copies every object of the source bucket the target bucket lacks, or has
/// with another size or tag, with the tenant's own keys on both stores, so a
/// resumed pass copies only what is left. With `delete`, also deletes from
/// the target what the source no longer has.
async fn copy_media(
    services: &Services,
    source: &Instance,
    target: &Instance,
    delete: bool,
) -> Result<CopiedMedia, JobError> {
    let from = tenant_data::connect(services, source).await?.media;
    let to = tenant_data::connect(services, target).await?.media;
    let sync = media_sync(
        from.list_objects("").await?,
        to.list_objects("").await?,
        delete,
    );
    let mut copied = CopiedMedia::default();
    let mut copies = stream::iter(sync.copy)
        .map(|object| copy_object(from.clone(), to.clone(), object.key))
        .buffer_unordered(MEDIA_COPIES_IN_FLIGHT);
    while let Some(size) = copies.try_next().await? {
        if let Some(size) = size {
            copied.objects += 1;
            copied.bytes += size;
        }
    }
    let mut deletions = stream::iter(sync.delete)
        .map(|key| delete_object(to.clone(), key))
        .buffer_unordered(MEDIA_COPIES_IN_FLIGHT);
    while deletions.try_next().await?.is_some() {
        copied.deleted += 1;
    }
    Ok(copied)
}

/// Streams one object from `from` to `to` and returns its size, or `None`
/// when it was deleted since the listing (the instance may still run): the
/// next pass finds it gone, and deletes it from the target if it got there.
/// A store too busy for one of the copies running at once is asked again,
/// from the GET on, as the body is streamed rather than kept.
async fn copy_object(
    from: ObjectStore,
    to: ObjectStore,
    key: String,
) -> Result<Option<u64>, JobError> {
    let copy = || async {
        let (size, reader) = from.get_reader(&key).await?;
        to.put_reader(&key, size, reader).await?;
        Ok(size)
    };
    match when_busy(copy).await {
        Ok(size) => Ok(Some(size)),
        Err(TenancyError::Rejected { status: 404, .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

async fn delete_object(store: ObjectStore, key: String) -> Result<(), JobError> {
    Ok(when_busy(|| store.delete(&key)).await?)
}

/// What one pass of the media copy has to do.
#[derive(Debug, PartialEq, Eq)]
struct MediaSync {
    /// The source's objects the target lacks or holds otherwise, in the
    /// source's order.
    copy: Vec<StoredObject>,
    /// The target's keys the source no longer has, in order.
    delete: Vec<String>,
}

/// Compares the listings of the source and the target bucket. An object is
/// left alone only when the target holds it with the same size and the same
/// tag; without a tag to compare, it is copied again. Deletions are planned
/// only with `delete`, as the pass while the instance runs never deletes.
fn media_sync(source: Vec<StoredObject>, target: Vec<StoredObject>, delete: bool) -> MediaSync {
    let mut present: HashMap<String, StoredObject> = target
        .into_iter()
        .map(|object| (object.key.clone(), object))
        .collect();
    let mut copy = Vec::new();
    for object in source {
        let same = present.remove(&object.key).is_some_and(|held| {
            held.size == object.size && held.etag.is_some() && held.etag == object.etag
        });
        if !same {
            copy.push(object);
        }
    }
    let mut delete = if delete {
        present.into_keys().collect()
    } else {
        Vec::new()
    };
    delete.sort();
    MediaSync { copy, delete }
}

/// The instance as the job found it, unless someone asked to delete it meanwhile.
async fn still_moving(services: &Services, payload: &MigrateJob) -> Result<Instance, JobError> {
    let instance = {
        let mut conn = services.conn().await?;
        herd_db::instances::load_instance(&mut conn, payload.instance_id)
            .await?
            .ok_or(JobError::MissingInstance(payload.instance_id))?
    };
    match instance.state {
        InstanceState::Deleting | InstanceState::Deleted => Err(JobError::Cancelled(format!(
            "instance {} is being deleted",
            instance.id
        ))),
        _ => Ok(instance),
    }
}

/// Scales the workloads on the source cluster to zero and waits until no pod
/// of the instance is left: from then on nothing writes to its data.
/// Returns when the freeze began.
async fn freeze(services: &Services, source: &Instance) -> Result<DateTime<Utc>, JobError> {
    let started = Utc::now();
    let mut resource = desired_resource(services, source).await?;
    resource.spec.instance.suspended = true;
    provision::apply_resource(services, source, &resource).await?;
    let cluster = source.cluster_id.expect("a moving instance is placed");
    let pods: Api<Pod> = Api::namespaced(
        services.cluster_client(cluster).await?,
        &resource_name(source.id),
    );
    let waiting = Instant::now();
    while pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(still_running)
    {
        if waiting.elapsed() > services.ready_timeout {
            return Err(JobError::NotYet(format!(
                "the workloads of {} still run on the source cluster",
                source.id
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(started)
}

/// A pod that may still write: any but a finished one (the setup Job's).
fn still_running(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Dumps the source database and restores it into an empty target database,
/// both as the tenant's role, the restore reading the dump as it is made.
/// Returns the size of the dump.
async fn copy_database(
    services: &Services,
    source: &Instance,
    target: &Instance,
) -> Result<u64, JobError> {
    let plan = effective_plan(services, source).await?;
    // `pg_restore` refuses objects that exist: a retry restores into an empty database again.
    tenant_data::recreate_database(services, target, plan.database_connection_limit).await?;
    let from = tenant_data::connect(services, source).await?;
    let to = tenant_data::connect(services, target).await?;
    let (writer, mut reader) = tokio::io::duplex(DUMP_BUFFER_BYTES);
    let tools = PgTools::default();
    let dump = async {
        let mut writer = writer;
        // Dropping the writer at the end is the end of the archive for the restore.
        tools.dump(&from.credentials, &mut writer).await
    };
    let (size, report) = tokio::join!(dump, tools.restore_from(&to.credentials, &mut reader));
    // A dump that failed half-way leaves a truncated archive, which the restore refuses.
    let size = size?;
    let report = report?;
    if !report.refused.is_empty() {
        return Err(JobError::Refused(format!(
            "the target database refused statements of the dump: {}",
            report.refused.join("; ")
        )));
    }
    Ok(size)
}

/// Points the record at the target and writes the resource there.
async fn switch(services: &Services, payload: &MigrateJob) -> Result<(), JobError> {
    let target_store = placed_at(&still_moving(services, payload).await?, payload)
        .object_store_id
        .ok_or(JobError::Refused(format!(
            "instance {} has no object store",
            payload.instance_id
        )))?;
    let instance = {
        let mut conn = services.conn().await?;
        conn.transaction::<_, JobError, _>(async |conn| {
            let instance = herd_db::instances::relocate(
                conn,
                payload.instance_id,
                payload.to_cluster,
                payload.to_database_server,
                target_store,
            )
            .await?;
            herd_db::audit::record(
                conn,
                AuditEntry {
                    actor: Actor::System("migrator"),
                    action: "instance.place",
                    object_kind: "instance",
                    object_id: instance.id.to_string(),
                    details: json!({
                        "cluster": payload.to_cluster,
                        "database_server": payload.to_database_server,
                        "object_store": instance.object_store_id,
                        "operation_id": payload.operation_id,
                    }),
                },
            )
            .await?;
            Ok(instance)
        })
        .await?
    };
    let resource = desired_resource(services, &instance).await?;
    provision::apply_resource(services, &instance, &resource).await?;
    Ok(())
}

/// Waits until Herd marked the instance running, which after the switch only
/// the target cluster's report of Ready does (the source's resource is
/// suspended and no longer the placement); returns when that was seen, the
/// end of the write freeze. The database is rechecked often, as the freeze
/// lasts until then when the target's reconciler runs in another process.
async fn ready_on_target(
    services: &Services,
    payload: &MigrateJob,
) -> Result<DateTime<Utc>, JobError> {
    provision::wait_until_running(services, payload.instance_id, InstanceState::Updating, POLL)
        .await?;
    Ok(Utc::now())
}

/// Removes the resource, and with it the namespace, from the source cluster,
/// then what the move left behind: the source database and role, and the
/// source bucket and key when the media moved.
async fn clean_up_source(services: &Services, payload: &MigrateJob) -> Result<(), JobError> {
    delete::delete_resource(services, payload.from_cluster, payload.instance_id).await?;
    let instance = still_moving(services, payload).await?;
    let left_behind = Instance {
        cluster_id: Some(payload.from_cluster),
        ..only_moved(
            &instance,
            payload,
            payload.from_database_server,
            payload.from_object_store,
        )
    };
    tenant_data::remove_all(services, &left_behind).await
}

/// The instance with only the database server and object store that the
/// move changes, at `database_server` and `object_store`, for removing what
/// one side of the move holds and never what both share.
fn only_moved(
    instance: &Instance,
    payload: &MigrateJob,
    database_server: Uuid,
    object_store: Option<Uuid>,
) -> Instance {
    Instance {
        database_server_id: (payload.from_database_server != payload.to_database_server)
            .then_some(database_server),
        object_store_id: object_store.filter(|_| payload.moves_media()),
        ..instance.clone()
    }
}

async fn finish(
    services: &Services,
    payload: &MigrateJob,
    freeze_seconds: f64,
) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async |conn| {
        let facts = json!({
            "instance_id": payload.instance_id,
            "operation_id": payload.operation_id,
            "from_cluster": payload.from_cluster,
            "to_cluster": payload.to_cluster,
            "freeze_seconds": freeze_seconds,
        });
        herd_db::outbox::publish(conn, "instance.migrated", facts.clone()).await?;
        herd_db::audit::record(
            conn,
            AuditEntry {
                actor: Actor::System("migrator"),
                action: "instance.migrated",
                object_kind: "instance",
                object_id: payload.instance_id.to_string(),
                details: facts,
            },
        )
        .await?;
        herd_db::operations::finish_operation(conn, payload.operation_id, None).await?;
        Ok(())
    })
    .await
}

/// A move that failed for good before its switch: the instance runs on the
/// source cluster again, with its data there as it was. A move that failed
/// after its switch runs on the target already.
pub(crate) async fn resume_on_source(
    services: &Services,
    payload: &MigrateJob,
) -> Result<(), JobError> {
    let instance = {
        let mut conn = services.conn().await?;
        herd_db::instances::load_instance(&mut conn, payload.instance_id)
            .await?
            .ok_or(JobError::MissingInstance(payload.instance_id))?
    };
    if instance.cluster_id != Some(payload.from_cluster)
        || instance.state != InstanceState::Updating
    {
        return Ok(());
    }
    provision::apply(services, &instance).await?;
    let target = Instance {
        cluster_id: Some(payload.to_cluster),
        ..only_moved(
            &instance,
            payload,
            payload.to_database_server,
            payload.to_object_store,
        )
    };
    tenant_data::remove_all(services, &target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64, etag: Option<&str>) -> StoredObject {
        StoredObject {
            key: key.to_owned(),
            size,
            etag: etag.map(str::to_owned),
        }
    }

    fn keys(objects: &[StoredObject]) -> Vec<&str> {
        objects.iter().map(|object| object.key.as_str()).collect()
    }

    #[test]
    fn only_what_the_target_lacks_or_holds_otherwise_is_copied() {
        let source = vec![
            object("same", 10, Some("\"a\"")),
            object("new", 5, Some("\"b\"")),
            object("resized", 7, Some("\"c\"")),
            object("rewritten", 3, Some("\"d2\"")),
            object("untagged", 4, None),
        ];
        let target = vec![
            object("same", 10, Some("\"a\"")),
            object("resized", 6, Some("\"c\"")),
            object("rewritten", 3, Some("\"d1\"")),
            object("untagged", 4, None),
        ];
        let sync = media_sync(source, target, false);
        assert_eq!(
            keys(&sync.copy),
            ["new", "resized", "rewritten", "untagged"]
        );
        assert!(sync.delete.is_empty());
    }

    #[test]
    fn a_second_pass_over_an_unchanged_bucket_does_nothing() {
        let objects = vec![object("a", 1, Some("\"x\"")), object("b", 2, Some("\"y\""))];
        assert_eq!(
            media_sync(objects.clone(), objects, true),
            MediaSync {
                copy: Vec::new(),
                delete: Vec::new(),
            }
        );
    }

    #[test]
    fn what_the_source_lost_is_deleted_only_when_asked() {
        let source = vec![object("kept", 1, Some("\"k\""))];
        let target = vec![
            object("gone-b", 1, Some("\"g\"")),
            object("kept", 1, Some("\"k\"")),
            object("gone-a", 1, Some("\"h\"")),
        ];
        assert!(
            media_sync(source.clone(), target.clone(), false)
                .delete
                .is_empty()
        );
        let sync = media_sync(source, target, true);
        assert!(sync.copy.is_empty());
        assert_eq!(sync.delete, ["gone-a", "gone-b"]);
    }
}
