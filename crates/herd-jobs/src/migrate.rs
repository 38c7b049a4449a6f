//! A move of a running instance to another cluster of the fleet, its
//! database to a database server chosen for it.
//!
//! target_database -> freeze -> database -> switch -> ready -> source_cleanup.
//!
//! The target database is made while the instance still runs. The freeze
//! scales its workloads on the source cluster to zero, so nothing writes
//! while the database is dumped and restored on the target server; the
//! switch points the record at the target and writes the resource there,
//! whose setup migrates the restored schema instead of creating one. The
//! write freeze ends when the target reports the instance ready, and its
//! length is reported in the operation. Last, the resource on the source
//! cluster and the source database go. Media stay where they are: an object
//! store serves every cluster of the fleet.
//!
//! The resource left on the source cluster is not the instance's placement
//! any more, so its finalizer removes no data (see `HerdBackend`): the
//! source database is dropped here, by its server's id.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use herd_core::lifecycle::{InstanceState, LifecycleEvent};
use herd_db::audit::{Actor, AuditEntry};
use herd_db::drains::MIGRATE_OPERATION;
use herd_db::instances::Instance;
use herd_db::jobs::JobId;
use herd_db::operations::Operation;
use herd_kube::crd::MastodonInstance;
use herd_tenancy::PgTools;
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
    "freeze",
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
    /// The drain this move is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_id: Option<Uuid>,
}

/// A move to start, as an operator or a drain asks for it.
pub struct StartMigration {
    pub instance_id: Uuid,
    pub to_cluster: Uuid,
    pub to_database_server: Uuid,
    pub drain_id: Option<Uuid>,
}

/// Starts moving a running instance, in the caller's transaction: the state
/// change, the operation with its job, an event and an audit entry.
pub async fn start(
    conn: &mut AsyncPgConnection,
    request: StartMigration,
    actor: Actor,
) -> Result<(Instance, Operation), JobError> {
    let current = herd_db::instances::load_instance(conn, request.instance_id)
        .await?
        .ok_or(JobError::MissingInstance(request.instance_id))?;
    let (Some(from_cluster), Some(from_database_server)) =
        (current.cluster_id, current.database_server_id)
    else {
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
    let job = MigrateJob {
        instance_id: current.id,
        operation_id,
        from_cluster,
        to_cluster: request.to_cluster,
        from_database_server,
        to_database_server: request.to_database_server,
        drain_id: request.drain_id,
    };
    let facts = json!({
        "instance_id": current.id,
        "operation_id": operation_id,
        "from_cluster": from_cluster,
        "to_cluster": request.to_cluster,
        "from_database_server": from_database_server,
        "to_database_server": request.to_database_server,
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

    let source = still_moving(services, payload).await?;
    let target = placed_at(&source, payload.to_cluster, payload.to_database_server);
    if moves_database {
        let plan = effective_plan(services, &source).await?;
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
    still_moving(services, payload).await?;
    let freeze_started: DateTime<Utc> = steps.step("freeze", || freeze(services, &source)).await?;
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
    {
        let mut conn = services.conn().await?;
        herd_db::operations::add_details(
            &mut conn,
            payload.operation_id,
            json!({
                "freeze_started_at": freeze_started,
                "freeze_ended_at": freeze_ended,
                "freeze_seconds": freeze_seconds,
                "database_bytes": copied_bytes,
            }),
        )
        .await?;
    }
    steps
        .step("source_cleanup", || clean_up_source(services, payload))
        .await?;
    finish(services, payload, freeze_seconds).await
}

/// The instance as it would be placed on the target.
fn placed_at(instance: &Instance, cluster: Uuid, database_server: Uuid) -> Instance {
    Instance {
        cluster_id: Some(cluster),
        database_server_id: Some(database_server),
        ..instance.clone()
    }
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
    let instance = {
        let mut conn = services.conn().await?;
        conn.transaction::<_, JobError, _>(async |conn| {
            let instance = herd_db::instances::relocate(
                conn,
                payload.instance_id,
                payload.to_cluster,
                payload.to_database_server,
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

/// Waits until the target cluster reports the instance ready and Herd marked
/// it running; returns when that was seen, the end of the write freeze.
async fn ready_on_target(
    services: &Services,
    payload: &MigrateJob,
) -> Result<DateTime<Utc>, JobError> {
    let api: Api<MastodonInstance> = Api::all(services.cluster_client(payload.to_cluster).await?);
    let name = resource_name(payload.instance_id);
    let started = Instant::now();
    loop {
        let ready = api
            .get_opt(&name)
            .await?
            .and_then(|resource| resource.status)
            .is_some_and(|status| {
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        let state = still_moving(services, payload).await?.state;
        if ready && state == InstanceState::Running {
            return Ok(Utc::now());
        }
        if started.elapsed() > services.ready_timeout {
            return Err(JobError::NotYet(format!(
                "instance {} is not ready on the target cluster yet",
                payload.instance_id
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Removes the resource, and with it the namespace, from the source cluster,
/// then the source database and role.
async fn clean_up_source(services: &Services, payload: &MigrateJob) -> Result<(), JobError> {
    delete::delete_resource(services, payload.from_cluster, payload.instance_id).await?;
    if payload.from_database_server == payload.to_database_server {
        return Ok(());
    }
    let instance = still_moving(services, payload).await?;
    let source = Instance {
        // The media stay in the instance's bucket.
        object_store_id: None,
        ..placed_at(
            &instance,
            payload.from_cluster,
            payload.from_database_server,
        )
    };
    tenant_data::remove_all(services, &source).await
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
    if payload.from_database_server == payload.to_database_server {
        return Ok(());
    }
    let target = Instance {
        object_store_id: None,
        ..placed_at(&instance, payload.to_cluster, payload.to_database_server)
    };
    tenant_data::remove_all(services, &target).await
}
