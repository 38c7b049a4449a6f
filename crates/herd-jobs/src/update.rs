//! Updates: bring a running or suspended instance to what its record says
//! now, after a suspension, a resumption or a plan change.
//!
//! tenant_data -> apply. The data services take the plan's connection limit
//! and bucket quota; the resource takes the plan and the suspension, and the
//! reconciler scales the workloads (to zero while suspended).

use herd_db::instances::Instance;
use herd_db::jobs::JobId;
use uuid::Uuid;

use crate::resource::{desired_resource, effective_plan};
use crate::steps::StepRunner;
use crate::{InstanceJob, JobError, Services, provision, tenant_data};

pub const KIND: &str = "update_instance";
pub const STEPS: &[&str] = &["tenant_data", "apply"];

pub async fn run(services: &Services, job: JobId, payload: &InstanceJob) -> Result<(), JobError> {
    let mut steps = StepRunner::resume(services, KIND, job, payload.operation_id).await?;
    let id = payload.instance_id;
    steps
        .step("tenant_data", || resize_data(services, id))
        .await?;
    steps
        .step("apply", || apply_until_settled(services, id))
        .await?;
    let mut conn = services.conn().await?;
    herd_db::operations::finish_operation(&mut conn, payload.operation_id, None).await?;
    Ok(())
}

async fn load(services: &Services, id: Uuid) -> Result<Instance, JobError> {
    let mut conn = services.conn().await?;
    herd_db::instances::load_instance(&mut conn, id)
        .await?
        .ok_or(JobError::MissingInstance(id))
}

async fn resize_data(services: &Services, id: Uuid) -> Result<(), JobError> {
    let instance = load(services, id).await?;
    let secrets = services.stored_secrets(id).await?;
    let plan = effective_plan(services, &instance).await?;
    tenant_data::ensure_database(
        services,
        &instance,
        &secrets,
        plan.database_connection_limit,
    )
    .await?;
    tenant_data::ensure_bucket(services, &instance, &secrets, plan.media_storage_gib).await
}

/// Applies the resource until it matches the record read after the apply:
/// an update queued while this one ran may have changed the record after
/// this one read it, and the last apply must not be the older state.
async fn apply_until_settled(services: &Services, id: Uuid) -> Result<(), JobError> {
    loop {
        let instance = load(services, id).await?;
        let applied = desired_resource(services, &instance).await?;
        provision::apply_resource(services, &instance, &applied).await?;
        let now = desired_resource(services, &load(services, id).await?).await?;
        if now.spec == applied.spec {
            return Ok(());
        }
    }
}
