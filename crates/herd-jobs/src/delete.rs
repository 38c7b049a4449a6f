//! Deletion: workloads, then data services, then the record.

use std::time::Instant;

use diesel_async::AsyncConnection;
use herd_core::billing::SubscriptionStatus;
use herd_core::lifecycle::{InstanceState, LifecycleEvent, Request};
use herd_db::audit::{Actor, AuditEntry};
use herd_db::instances::Instance;
use herd_db::jobs::{JobId, JobState, NewJob};
use herd_db::operations::NewOperation;
use herd_kube::crd::MastodonInstance;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use uuid::Uuid;

use crate::resource::resource_name;
use crate::steps::StepRunner;
use crate::{InstanceJob, JobError, Services, tenant_data};

pub const KIND: &str = "delete_instance";
/// The steps of a deletion, in the order they run.
pub const STEPS: &[&str] = &["subscription", "workloads", "tenant_data", "finish"];
/// Enough to ride out a cluster or database restart under backoff.
const ATTEMPTS: i32 = 10;

/// Queues the deletion of an instance on behalf of Herd itself (a failed
/// import, a retention period that ran out, a checkout never paid), with
/// its operation, its audit entry naming why, and the state change, in the
/// caller's transaction. Asking again while it runs changes nothing; asking
/// while the instance moves or updates is refused until that has ended.
pub async fn request(
    conn: &mut diesel_async::AsyncPgConnection,
    instance_id: Uuid,
    actor: &'static str,
    action: &'static str,
    details: serde_json::Value,
) -> Result<(), JobError> {
    crate::changes::ensure_free(conn, instance_id, Request::Deletion).await?;
    let operation_id = Uuid::now_v7();
    let job = herd_db::jobs::enqueue(
        conn,
        NewJob {
            kind: KIND,
            payload: json!({ "instance_id": instance_id, "operation_id": operation_id }),
            dedupe_key: Some(&format!("delete:{instance_id}")),
            max_attempts: ATTEMPTS,
        },
    )
    .await?;
    if herd_db::operations::find_operation_by_job(conn, job.0)
        .await?
        .is_some()
    {
        return Ok(());
    }
    herd_db::instances::transition(conn, instance_id, &LifecycleEvent::DeletionRequested).await?;
    herd_db::operations::create_operation(
        conn,
        NewOperation {
            id: operation_id,
            instance_id,
            kind: "delete",
            steps: STEPS,
            started_by: None,
            job_id: Some(job.0),
        },
    )
    .await?;
    herd_db::audit::record(
        conn,
        AuditEntry {
            actor: Actor::System(actor),
            action,
            object_kind: "instance",
            object_id: instance_id.to_string(),
            details,
        },
    )
    .await?;
    Ok(())
}

pub async fn run(services: &Services, job: JobId, payload: &InstanceJob) -> Result<(), JobError> {
    let mut steps = StepRunner::resume(services, KIND, job, payload.operation_id).await?;
    let id = payload.instance_id;
    let instance = {
        let mut conn = services.conn().await?;
        herd_db::instances::load_instance(&mut conn, id)
            .await?
            .ok_or(JobError::MissingInstance(id))?
    };

    steps
        .step("subscription", || end_subscription(services, id))
        .await?;
    steps
        .step("workloads", || remove_workloads(services, &instance))
        .await?;
    steps
        .step("tenant_data", || {
            tenant_data::remove_all(services, &instance)
        })
        .await?;
    steps.step("finish", || finish(services, &instance)).await?;

    let mut conn = services.conn().await?;
    herd_db::operations::finish_operation(&mut conn, payload.operation_id, None).await?;
    Ok(())
}

/// Ends the Stripe subscription paying for the instance: nobody pays for
/// a server that is gone. One ended before (canceled, or never paid) is left.
async fn end_subscription(services: &Services, id: Uuid) -> Result<(), JobError> {
    let subscription = {
        let mut conn = services.conn().await?;
        herd_db::billing::find_subscription(&mut conn, id).await?
    };
    let (Some(billing), Some(subscription)) = (&services.billing, subscription) else {
        return Ok(());
    };
    let Some(stripe_id) = subscription.stripe_subscription_id else {
        return Ok(());
    };
    let current = billing.stripe.subscription(&stripe_id).await?;
    if matches!(
        current.status,
        SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
    ) {
        return Ok(());
    }
    billing.stripe.cancel_subscription(&stripe_id).await?;
    Ok(())
}

/// Deletes the instance's resource and waits until it is gone: its finalizer
/// removes the tenant's data services, then its namespace goes with everything in it.
async fn remove_workloads(services: &Services, instance: &Instance) -> Result<(), JobError> {
    provisioning_stopped(services, instance).await?;
    let Some(cluster) = instance.cluster_id else {
        return Ok(());
    };
    delete_resource(services, cluster, instance.id).await
}

/// Deletes an instance's resource from one cluster and waits until its
/// finalizer has run and it is gone.
pub(crate) async fn delete_resource(
    services: &Services,
    cluster: Uuid,
    instance_id: Uuid,
) -> Result<(), JobError> {
    let api: Api<MastodonInstance> = Api::all(services.cluster_client(cluster).await?);
    let name = resource_name(instance_id);
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 404 => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    let started = Instant::now();
    while api.get_opt(&name).await?.is_some() {
        if started.elapsed() > services.ready_timeout {
            return Err(JobError::NotYet(format!(
                "{name} is still being cleaned up"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(())
}

/// A provisioning still running could apply the resource again right after it
/// is deleted; it stops by itself at its next step, as the instance is being
/// deleted, and this waits for that (a dead worker's lease runs out).
async fn provisioning_stopped(services: &Services, instance: &Instance) -> Result<(), JobError> {
    let key = format!("provision:{}", instance.id);
    let mut conn = services.conn().await?;
    let provisioning = herd_db::jobs::find_by_dedupe_key(&mut conn, &key).await?;
    match provisioning {
        Some(job) if job.state == JobState::Running => Err(JobError::NotYet(format!(
            "provisioning of {} is still running",
            instance.id
        ))),
        _ => Ok(()),
    }
}

async fn finish(services: &Services, instance: &Instance) -> Result<(), JobError> {
    let id = instance.id;
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async move |conn| {
        let current = herd_db::instances::load_instance(conn, id)
            .await?
            .ok_or(JobError::MissingInstance(id))?;
        if current.state != InstanceState::Deleted {
            herd_db::instances::transition(conn, id, &LifecycleEvent::CleanupFinished).await?;
        }
        herd_db::audit::record(
            conn,
            AuditEntry {
                actor: Actor::System("deleter"),
                action: "instance.deleted",
                object_kind: "instance",
                object_id: id.to_string(),
                details: json!({}),
            },
        )
        .await?;
        Ok(())
    })
    .await
}
