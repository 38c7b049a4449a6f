//! Provisioning: from an order to a Running instance.
//!
//! place -> secrets -> tenant_database -> tenant_bucket -> [restore] -> apply -> ready.
//! An imported instance restores its archive before its workloads start.
//! Secrets come before the data services because they hold the passwords the
//! services are created with: a crash can never leave a role or key whose
//! credentials Herd does not know.

use std::time::{Duration, Instant};

use diesel_async::AsyncConnection;
use herd_core::lifecycle::{InstanceState, LifecycleEvent};
use herd_db::audit::{Actor, AuditEntry};
use herd_db::instances::Instance;
use herd_db::jobs::JobId;
use herd_kube::crd::{FIELD_MANAGER, MastodonInstance};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use uuid::Uuid;

use crate::resource::{desired_resource, effective_plan, resource_name};
use crate::steps::StepRunner;
use crate::worker::Slot;
use crate::{InstanceJob, JobError, Services, restore, tenant_data};

pub const KIND: &str = "provision_instance";

/// The reconciler of this process wakes the wait as soon as it reports a
/// status; the recheck covers a reconciler in another process, and is rare
/// because a thousand waiting jobs recheck together.
const READY_RECHECK: Duration = Duration::from_secs(30);

pub async fn run(
    services: &Services,
    job: JobId,
    payload: &InstanceJob,
    slot: &mut Slot,
) -> Result<(), JobError> {
    let mut steps = StepRunner::resume(services, KIND, job, payload.operation_id).await?;
    let id = payload.instance_id;

    still_wanted(services, id).await?;
    steps.step("place", || place(services, id)).await?;
    let instance = load(services, id).await?;
    let plan = effective_plan(services, &instance).await?;

    steps.step("secrets", || keep_secrets(services, id)).await?;
    let secrets = services.stored_secrets(id).await?;

    still_wanted(services, id).await?;
    steps
        .step("tenant_database", || {
            tenant_data::ensure_database(
                services,
                &instance,
                &secrets,
                plan.database_connection_limit,
            )
        })
        .await?;
    still_wanted(services, id).await?;
    steps
        .step("tenant_bucket", || {
            tenant_data::ensure_bucket(services, &instance, &secrets, plan.media_storage_gib)
        })
        .await?;
    if let Some(archive) = &payload.archive {
        still_wanted(services, id).await?;
        steps
            .step("restore", || {
                restore::restore(services, &instance, archive, plan.database_connection_limit)
            })
            .await?;
    }
    still_wanted(services, id).await?;
    steps.step("apply", || apply(services, &instance)).await?;
    slot.release();
    steps
        .step("ready", || {
            wait_until_running(services, id, InstanceState::Provisioning, READY_RECHECK)
        })
        .await?;
    if let Some(archive) = &payload.archive {
        services
            .archives
            .bucket(archive.object_store_id)
            .await?
            .delete(&archive.object_key)
            .await?;
    }

    let mut conn = services.conn().await?;
    herd_db::operations::finish_operation(&mut conn, payload.operation_id, None).await?;
    Ok(())
}

/// Stops provisioning an instance someone asked to delete: whatever it would
/// create next would only outlive the deletion.
async fn still_wanted(services: &Services, id: Uuid) -> Result<(), JobError> {
    match load(services, id).await?.state {
        InstanceState::Deleting | InstanceState::Deleted => Err(JobError::Cancelled(format!(
            "instance {id} is being deleted"
        ))),
        _ => Ok(()),
    }
}

async fn load(services: &Services, id: Uuid) -> Result<Instance, JobError> {
    let mut conn = services.conn().await?;
    herd_db::instances::load_instance(&mut conn, id)
        .await?
        .ok_or(JobError::MissingInstance(id))
}

/// Chooses the cluster, database server and object store, once, and starts provisioning.
async fn place(services: &Services, id: Uuid) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async move |conn| {
        let instance = herd_db::instances::load_instance(conn, id)
            .await?
            .ok_or(JobError::MissingInstance(id))?;
        if instance.cluster_id.is_none() {
            let placement = herd_db::fleet::least_loaded_placement(conn)
                .await?
                .ok_or(JobError::NoCapacity)?;
            herd_db::instances::place_instance(conn, id, &placement).await?;
            herd_db::audit::record(
                conn,
                AuditEntry {
                    actor: Actor::System("provisioner"),
                    action: "instance.place",
                    object_kind: "instance",
                    object_id: id.to_string(),
                    details: json!({
                        "cluster": placement.cluster_id,
                        "database_server": placement.database_server_id,
                        "object_store": placement.object_store_id,
                    }),
                },
            )
            .await?;
        }
        if instance.state == InstanceState::Pending {
            herd_db::instances::transition(conn, id, &LifecycleEvent::ProvisioningStarted).await?;
        }
        Ok(())
    })
    .await
}

async fn keep_secrets(services: &Services, id: Uuid) -> Result<(), JobError> {
    let generated = crate::with_os_random(herd_core::secrets::generate)?;
    let mut conn = services.conn().await?;
    herd_db::instances::keep_secrets(&mut conn, &services.sealer, id, &generated).await?;
    Ok(())
}

/// Writes the instance's resource to its cluster; the reconciler does the rest.
pub(crate) async fn apply(services: &Services, instance: &Instance) -> Result<(), JobError> {
    let resource = desired_resource(services, instance).await?;
    apply_resource(services, instance, &resource).await?;
    Ok(())
}

pub(crate) async fn apply_resource(
    services: &Services,
    instance: &Instance,
    resource: &MastodonInstance,
) -> Result<MastodonInstance, JobError> {
    let Some(cluster) = instance.cluster_id else {
        return Err(JobError::NotYet(format!(
            "instance {} is not placed yet",
            instance.id
        )));
    };
    let api: Api<MastodonInstance> = Api::all(services.cluster_client(cluster).await?);
    let applied = api
        .patch(
            &resource_name(instance.id),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(resource),
        )
        .await?;
    Ok(applied)
}

/// Waits for the reconciler to report the instance Ready on the cluster it
/// is placed on (the backend mirrors that into the database) while it is
/// `waiting`, Provisioning or, during a move, Updating. Woken by each status
/// this process's reconciler reports; rechecks the database every `recheck`
/// for a reconciler in another process. Gives up after a while so the job is
/// retried later rather than waiting forever.
pub(crate) async fn wait_until_running(
    services: &Services,
    id: Uuid,
    waiting: InstanceState,
    recheck: Duration,
) -> Result<(), JobError> {
    let started = Instant::now();
    let Some(cluster) = load(services, id).await?.cluster_id else {
        return Err(JobError::NotYet(format!("instance {id} is not placed yet")));
    };
    let mut signal = services.statuses.watch(cluster, id);
    loop {
        match load(services, id).await?.state {
            InstanceState::Running => return Ok(()),
            state if state == waiting && started.elapsed() < services.ready_timeout => {
                tokio::select! {
                    () = signal.changed() => {}
                    () = tokio::time::sleep(recheck) => {}
                }
            }
            InstanceState::Deleting | InstanceState::Deleted => {
                return Err(JobError::Cancelled(format!(
                    "instance {id} is being deleted"
                )));
            }
            state => {
                return Err(JobError::NotYet(format!(
                    "instance {id} is {state}, not yet running"
                )));
            }
        }
    }
}
