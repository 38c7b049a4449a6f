//! Workers: claim jobs from the queue, run them, keep their lease alive, and
//! record the outcome. Any number of workers in any number of processes may run.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncConnection;
use herd_core::lifecycle::{InstanceState, LifecycleEvent};
use herd_db::Backoff;
use herd_db::jobs::{ClaimedJob, JobState};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    InstanceJob, JobError, Services, billing, delete, drain, export, fleet_upgrade, leases,
    migrate, provision, update, upgrade,
};

const KINDS: [&str; 9] = [
    provision::KIND,
    delete::KIND,
    export::KIND,
    update::KIND,
    upgrade::KIND,
    fleet_upgrade::KIND,
    billing::EVENT_KIND,
    migrate::KIND,
    drain::KIND,
];
const IDLE_POLL: Duration = Duration::from_millis(500);
const RETRY: Backoff = Backoff {
    base: Duration::from_secs(2),
    cap: Duration::from_secs(300),
};
/// How often a job held up by another operation on its instance (a billing
/// suspension while the instance moves) tries again. Waiting costs no attempt.
const WAIT_FOR_OPERATION: Duration = Duration::from_secs(10);

/// Runs one worker until `shutdown` is cancelled; a job in progress is left
/// to its lease, so another worker resumes it.
pub async fn run(services: Arc<Services>, worker_id: String, shutdown: CancellationToken) {
    tracing::info!(worker = %worker_id, "job worker started");
    while !shutdown.is_cancelled() {
        let claimed = match services.conn().await {
            Ok(mut conn) => herd_db::jobs::claim(&mut conn, &worker_id, &KINDS, services.lease)
                .await
                .map_err(JobError::from),
            Err(err) => Err(err),
        };
        match claimed {
            Ok(Some(job)) => {
                let (slot, freed) = Slot::new();
                tokio::spawn(execute(
                    services.clone(),
                    worker_id.clone(),
                    job,
                    slot,
                    shutdown.clone(),
                ));
                tokio::select! {
                    // Either the job ended or it only waits for the cluster now.
                    _ = freed => {}
                    () = shutdown.cancelled() => break,
                }
            }
            Ok(None) => idle(&shutdown).await,
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim jobs");
                idle(&shutdown).await;
            }
        }
    }
    tracing::info!(worker = %worker_id, "job worker stopped");
}

/// A worker's hold on the job it runs. A job that has nothing left to do but
/// wait for the cluster releases it, and the worker claims the next job
/// meanwhile: otherwise a few dozen instances waiting for their pods would
/// stall every order behind them. The released job keeps its lease.
pub struct Slot(Option<oneshot::Sender<()>>);

impl Slot {
    fn new() -> (Slot, oneshot::Receiver<()>) {
        let (sender, receiver) = oneshot::channel();
        (Slot(Some(sender)), receiver)
    }

    pub fn release(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

async fn idle(shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(IDLE_POLL) => {}
        () = shutdown.cancelled() => {}
    }
}

async fn execute(
    services: Arc<Services>,
    worker_id: String,
    job: ClaimedJob,
    slot: Slot,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("job", id = %job.id.0, kind = %job.kind, attempt = job.attempts);
    tokio::select! {
        () = execute_in_span(&services, &worker_id, job, slot).instrument(span) => {}
        () = shutdown.cancelled() => {}
    }
}

async fn execute_in_span(
    services: &Arc<Services>,
    worker_id: &str,
    job: ClaimedJob,
    mut slot: Slot,
) {
    let lease = leases::hold(services, job.id, worker_id);
    let outcome = tokio::select! {
        outcome = dispatch(services, &job, &mut slot) => outcome,
        () = lease.lost.cancelled() => {
            tracing::warn!("lease lost; another worker owns the job now");
            return;
        }
    };
    drop(lease);
    if let Err(err) = record_outcome(services, worker_id, &job, outcome).await {
        tracing::error!(error = %err, "cannot record the job's outcome; its lease will expire and it will run again");
    }
}

fn payload<T: serde::de::DeserializeOwned>(job: &ClaimedJob) -> Result<T, JobError> {
    serde_json::from_value(job.payload.clone()).map_err(|err| JobError::Payload(err.to_string()))
}

async fn dispatch(services: &Services, job: &ClaimedJob, slot: &mut Slot) -> Result<(), JobError> {
    match job.kind.as_str() {
        provision::KIND => {
            let instance_job: InstanceJob = payload(job)?;
            provision::run(services, job.id, &instance_job, slot).await
        }
        delete::KIND => {
            let instance_job: InstanceJob = payload(job)?;
            delete::run(services, job.id, &instance_job).await
        }
        export::KIND => {
            let export_job: export::ExportJob = payload(job)?;
            export::run(services, job.id, &export_job).await
        }
        update::KIND => {
            let instance_job: InstanceJob = payload(job)?;
            update::run(services, job.id, &instance_job).await
        }
        upgrade::KIND => {
            let instance_job: InstanceJob = payload(job)?;
            upgrade::run(services, &instance_job, slot).await
        }
        fleet_upgrade::KIND => {
            let fleet_job: fleet_upgrade::FleetUpgradeJob = payload(job)?;
            fleet_upgrade::run(services, &fleet_job, slot).await
        }
        billing::EVENT_KIND => {
            let event_job: billing::EventJob = payload(job)?;
            billing::apply_event(services, &event_job).await
        }
        migrate::KIND => {
            let migrate_job: migrate::MigrateJob = payload(job)?;
            migrate::run(services, job.id, &migrate_job).await
        }
        drain::KIND => {
            let drain_job: drain::DrainJob = payload(job)?;
            drain::run(services, &drain_job, slot).await
        }
        other => Err(JobError::Payload(format!(
            "no worker runs jobs of kind {other}"
        ))),
    }
}

async fn record_outcome(
    services: &Services,
    worker_id: &str,
    job: &ClaimedJob,
    outcome: Result<(), JobError>,
) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    let error = match outcome {
        Ok(()) => {
            herd_db::jobs::complete(&mut conn, job.id, worker_id).await?;
            tracing::info!("job succeeded");
            return Ok(());
        }
        Err(JobError::Cancelled(reason)) => {
            herd_db::jobs::complete(&mut conn, job.id, worker_id).await?;
            let instance_job: InstanceJob = payload(job)?;
            let message = format!("cancelled: {reason}");
            herd_db::operations::finish_operation(
                &mut conn,
                instance_job.operation_id,
                Some(&message),
            )
            .await?;
            tracing::info!(reason, "job cancelled");
            return Ok(());
        }
        Err(waiting @ JobError::OperationInProgress { .. }) => {
            let message = waiting.to_string();
            herd_db::jobs::postpone(&mut conn, job.id, worker_id, &message, WAIT_FOR_OPERATION)
                .await?;
            tracing::info!(reason = %message, "job waits for another operation");
            return Ok(());
        }
        Err(error) => error,
    };
    let seed = job.id.jitter_seed();
    let message = error.to_string();
    let retry = !matches!(error, JobError::Refused(_));
    let state = herd_db::jobs::fail(&mut conn, job.id, worker_id, &message, |attempt| {
        retry.then(|| RETRY.delay(attempt, seed))
    })
    .await?;
    if state != JobState::Failed {
        tracing::warn!(error = %message, "job step failed; it will be retried");
        return Ok(());
    }
    tracing::error!(error = %message, "job failed for good");
    // A Stripe event's job has no operation: its failure is in the job's
    // `last_error`, and Stripe's own delivery log.
    if job.kind == billing::EVENT_KIND {
        return Ok(());
    }
    // A fleet upgrade's driver has no operation of its own either.
    if job.kind == fleet_upgrade::KIND {
        let fleet_job: fleet_upgrade::FleetUpgradeJob = payload(job)?;
        return fleet_upgrade::abandon(&mut conn, &fleet_job, &message).await;
    }
    // Nor has a drain: the drain records its failure itself.
    if job.kind == drain::KIND {
        drop(conn);
        return drain::give_up(services, &payload(job)?, &message).await;
    }
    let instance_job: InstanceJob = payload(job)?;
    herd_db::operations::finish_operation(&mut conn, instance_job.operation_id, Some(&message))
        .await?;
    match job.kind.as_str() {
        provision::KIND => {
            let instance =
                herd_db::instances::load_instance(&mut conn, instance_job.instance_id).await?;
            let Some(instance) = instance else {
                return Ok(());
            };
            if matches!(
                instance.state,
                InstanceState::Pending | InstanceState::Provisioning
            ) {
                herd_db::instances::transition(
                    &mut conn,
                    instance.id,
                    &LifecycleEvent::Failed {
                        reason: message.clone(),
                    },
                )
                .await?;
            }
            if let Some(archive) = &instance_job.archive {
                let details = serde_json::json!({ "reason": message });
                conn.transaction::<_, JobError, _>(async |conn| {
                    delete::request(
                        conn,
                        instance.id,
                        "importer",
                        "instance.import.abandoned",
                        details,
                    )
                    .await
                })
                .await?;
                drop(conn);
                discard_staged(services, archive).await;
            }
        }
        migrate::KIND => {
            drop(conn);
            migrate::resume_on_source(services, &payload(job)?).await?;
        }
        export::KIND => {
            let export: export::ExportJob = payload(job)?;
            herd_db::archives::set_export_state(
                &mut conn,
                export.export_id,
                herd_db::archives::ExportState::Failed,
            )
            .await?;
        }
        upgrade::KIND => {
            upgrade::abandon(&mut conn, instance_job.operation_id, &message).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Best effort: an archive left behind only costs space until the bucket's
/// owner cleans up, and must not keep the failure from being recorded.
async fn discard_staged(services: &Services, archive: &crate::StagedArchive) {
    let deleted = match services.archives.bucket(archive.object_store_id).await {
        Ok(bucket) => bucket
            .delete(&archive.object_key)
            .await
            .map_err(JobError::from),
        Err(err) => Err(err),
    };
    if let Err(err) = deleted {
        tracing::warn!(error = %err, key = %archive.object_key, "cannot remove a staged archive");
    }
}
