//! Version upgrades, in Mastodon's own order, with a way back.
//!
//! backup -> pre-deploy migrations -> rollout -> post-deploy migrations.
//! The backup is an export. The pre-deploy migrations run as a Job of the
//! new image while the old code serves; then web, streaming and sidekiq roll
//! to the new image; the post-deploy migrations run last. Until they run the
//! old code still fits the schema, so a rollout that is not Ready within its
//! timeout (or migrations that fail first) rolls back to the old image, and
//! the instance ends Running on its old version. The stage of the upgrade is
//! stored, and the resource is built from it: a resumed job carries on from
//! the stage it reached, and the rollout's deadline counts from when the
//! rollout began, not from the resumption.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use herd_core::lifecycle::{InstanceState, LifecycleEvent};
use herd_core::upgrade::UpgradeStage;
use herd_core::version::MastodonVersion;
use herd_db::archives::ExportState;
use herd_db::audit::{Actor, AuditEntry};
use herd_db::instances::Instance;
use herd_db::operations::Operation;
use herd_db::upgrades::{NewUpgrade, Upgrade};
use herd_kube::crd::{Judgement, MastodonInstance, MastodonInstanceStatus};
use kube::Api;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::changes::{OperationStart, start_operation};
use crate::faults::Point;
use crate::resource::{desired_resource, resource_name};
use crate::worker::Slot;
use crate::{InstanceJob, JobError, Services, export, provision};

pub const KIND: &str = "upgrade_instance";
/// The operation's steps, as customers follow them.
pub const STEPS: &[&str] = &[
    "backup",
    "pre_deploy_migrations",
    "rollout",
    "post_deploy_migrations",
];
/// How long a rollout may take when the request names no timeout.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the backup's export is looked at.
const RECHECK: Duration = Duration::from_secs(2);
/// How often a stage reads its resource from the cluster while no verdict
/// came: see `settle`.
const STATUS_READ: Duration = Duration::from_secs(20);

/// An upgrade to start.
pub struct UpgradeRequest {
    pub to: MastodonVersion,
    /// How long the new version's workloads have to become Ready before the
    /// upgrade rolls back.
    pub rollout_timeout: Duration,
}

/// In the caller's transaction: checks the jump, moves the instance to
/// Updating, enqueues the job and records the operation and the upgrade,
/// publishes `instance.upgrade_started` and audits. Returns the instance as
/// it is now, and the operation.
pub async fn start(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    request: &UpgradeRequest,
    actor: Actor,
) -> Result<(Instance, Operation), JobError> {
    let current = herd_db::instances::load_instance(conn, instance_id)
        .await?
        .ok_or(JobError::MissingInstance(instance_id))?;
    let from: MastodonVersion = current
        .version
        .parse()
        .map_err(|err: herd_core::version::VersionError| JobError::Refused(err.to_string()))?;
    herd_core::upgrade::check_jump(from, request.to)?;
    let operation_id = Uuid::now_v7();
    let (instance, operation) = start_operation(
        conn,
        OperationStart {
            instance_id,
            operation_id,
            event: &LifecycleEvent::UpdateStarted,
            operation_kind: "upgrade",
            job_kind: KIND,
            steps: STEPS,
            payload: serde_json::to_value(InstanceJob {
                instance_id,
                operation_id,
                archive: None,
            })
            .expect("a job payload always serialises"),
            topic: "instance.upgrade_started",
            audit_action: "instance.upgrade",
            facts: json!({
                "instance_id": instance_id,
                "operation_id": operation_id,
                "from": from,
                "to": request.to,
                "rollout_timeout_seconds": request.rollout_timeout.as_secs(),
            }),
        },
        actor,
    )
    .await?;
    herd_db::upgrades::create_upgrade(
        conn,
        NewUpgrade {
            operation_id,
            instance_id,
            from,
            to: request.to,
            rollout_timeout: request.rollout_timeout,
        },
    )
    .await?;
    Ok((instance, operation))
}

/// How a stage ended.
enum Verdict {
    Ready,
    NotReady(String),
}

pub async fn run(
    services: &Services,
    payload: &InstanceJob,
    slot: &mut Slot,
) -> Result<(), JobError> {
    loop {
        let upgrade = load(services, payload.operation_id).await?;
        if upgrade.stage.is_active() {
            match load_instance(services, upgrade.instance_id).await?.state {
                InstanceState::Updating => {}
                InstanceState::Deleting | InstanceState::Deleted => {
                    return Err(JobError::Cancelled(format!(
                        "instance {} is being deleted",
                        upgrade.instance_id
                    )));
                }
                // No longer updating by any other path (suspensions wait for
                // the upgrade): it gives way, and what comes next applies
                // what the record says.
                state => {
                    let reason = format!("the instance became {state} during the upgrade");
                    let mut conn = services.conn().await?;
                    return abandon(&mut conn, upgrade.operation_id, &reason).await;
                }
            }
        }
        match upgrade.stage {
            UpgradeStage::Backup => match back_up(services, &upgrade, slot).await? {
                Verdict::Ready => advance(services, &upgrade, UpgradeStage::PreDeploy).await?,
                Verdict::NotReady(reason) => {
                    roll_back(services, &upgrade, format!("the backup failed: {reason}")).await?;
                }
            },
            UpgradeStage::PreDeploy => {
                slot.release();
                match settle(services, &upgrade, services.ready_timeout).await? {
                    Verdict::Ready => advance(services, &upgrade, UpgradeStage::Rollout).await?,
                    Verdict::NotReady(reason) => {
                        let reason =
                            format!("the pre-deploy migrations did not complete: {reason}");
                        roll_back(services, &upgrade, reason).await?;
                    }
                }
            }
            UpgradeStage::Rollout => {
                slot.release();
                // Counted from when the rollout began, across resumptions.
                let spent = (chrono::Utc::now() - upgrade.stage_started_at)
                    .to_std()
                    .unwrap_or_default();
                let left = upgrade.rollout_timeout.saturating_sub(spent);
                match settle(services, &upgrade, left).await? {
                    Verdict::Ready => advance(services, &upgrade, UpgradeStage::PostDeploy).await?,
                    Verdict::NotReady(reason) => {
                        let reason = format!(
                            "{} was not ready within {}s: {reason}",
                            upgrade.to,
                            upgrade.rollout_timeout.as_secs()
                        );
                        roll_back(services, &upgrade, reason).await?;
                    }
                }
            }
            UpgradeStage::PostDeploy => {
                slot.release();
                match settle(services, &upgrade, services.ready_timeout).await? {
                    Verdict::Ready => succeed(services, &upgrade).await?,
                    Verdict::NotReady(reason) => {
                        let reason =
                            format!("the post-deploy migrations did not complete: {reason}");
                        fail(services, &upgrade, &reason).await?;
                    }
                }
            }
            UpgradeStage::RollingBack => {
                slot.release();
                match settle(services, &upgrade, services.ready_timeout).await? {
                    Verdict::Ready => finish_rollback(services, &upgrade).await?,
                    Verdict::NotReady(reason) => {
                        return Err(JobError::NotYet(format!(
                            "the rollback to {} is not ready yet: {reason}",
                            upgrade.from
                        )));
                    }
                }
            }
            // The resource already runs the old version without a migration
            // Job; applying it again makes sure after a resumption.
            UpgradeStage::RolledBack => {
                apply(
                    services,
                    &load_instance(services, upgrade.instance_id).await?,
                )
                .await?;
                return Ok(());
            }
            // The completed post-deploy Job stays until the instance's next
            // change applies its resource without it (as Helm keeps its hook
            // Jobs): in a fleet upgrade, a write, a deletion and a status
            // update fewer per instance. Its pods are done and hold nothing.
            UpgradeStage::Succeeded | UpgradeStage::Failed => return Ok(()),
        }
    }
}

/// Gives up an upgrade whose job failed for good or whose instance left the
/// Updating state: an instance still Updating is Failed, with the reason,
/// for an operator to look at. Before the post-deploy migrations its
/// resource returns to the old version with the next apply.
pub(crate) async fn abandon(
    conn: &mut AsyncPgConnection,
    operation_id: Uuid,
    reason: &str,
) -> Result<(), JobError> {
    let Some(upgrade) = herd_db::upgrades::load_upgrade(conn, operation_id).await? else {
        return Ok(());
    };
    if !upgrade.stage.is_active() {
        return Ok(());
    }
    let terminal = if upgrade.stage == UpgradeStage::PostDeploy {
        UpgradeStage::Failed
    } else {
        UpgradeStage::RolledBack
    };
    conn.transaction::<_, JobError, _>(async |conn| {
        mark_failed(conn, &upgrade, terminal, reason).await?;
        herd_db::operations::finish_operation(conn, operation_id, Some(reason)).await?;
        Ok(())
    })
    .await
}

async fn load(services: &Services, operation_id: Uuid) -> Result<Upgrade, JobError> {
    let mut conn = services.conn().await?;
    herd_db::upgrades::load_upgrade(&mut conn, operation_id)
        .await?
        .ok_or_else(|| JobError::Payload(format!("upgrade {operation_id} is not recorded")))
}

async fn load_instance(services: &Services, id: Uuid) -> Result<Instance, JobError> {
    let mut conn = services.conn().await?;
    herd_db::instances::load_instance(&mut conn, id)
        .await?
        .ok_or(JobError::MissingInstance(id))
}

/// Takes the backup, once, and waits for it to be complete and verified.
async fn back_up(
    services: &Services,
    upgrade: &Upgrade,
    slot: &mut Slot,
) -> Result<Verdict, JobError> {
    let export_id = match upgrade.export_id {
        Some(id) => id,
        None => {
            let mut conn = services.conn().await?;
            let (operation_id, instance_id) = (upgrade.operation_id, upgrade.instance_id);
            conn.transaction::<_, JobError, _>(async |conn| {
                let (export, _) = export::start(
                    conn,
                    &services.sealer,
                    export::StartExport {
                        instance_id,
                        requested_by: None,
                        compressed: true,
                        recipient: None,
                        push: None,
                        final_export: false,
                    },
                )
                .await?;
                herd_db::upgrades::set_backup(conn, operation_id, export.id).await?;
                Ok(export.id)
            })
            .await?
        }
    };
    // The export runs as a job of its own, which this worker may take.
    slot.release();
    loop {
        let export = {
            let mut conn = services.conn().await?;
            herd_db::archives::load_export(&mut conn, export_id).await?
        };
        match export.map(|e| e.state) {
            Some(ExportState::Complete) => return Ok(Verdict::Ready),
            Some(ExportState::Pending | ExportState::Running) => {
                tokio::time::sleep(RECHECK).await;
            }
            Some(state) => {
                return Ok(Verdict::NotReady(format!(
                    "export {export_id} is {}",
                    state.as_str()
                )));
            }
            None => return Ok(Verdict::NotReady(format!("export {export_id} is gone"))),
        }
    }
}

/// Applies the resource as the upgrade's stage shapes it.
async fn apply(services: &Services, instance: &Instance) -> Result<MastodonInstance, JobError> {
    let resource = desired_resource(services, instance).await?;
    provision::apply_resource(services, instance, &resource).await
}

/// Applies the stage's resource and waits up to `timeout` for the reconciler
/// to judge it at the generation applied: Ready, or why not (what failed, or
/// what was still pending).
///
/// The verdict comes from the statuses this process's reconciler reports,
/// which cost no request. The resource itself is read only when they cannot
/// tell: on entry when this process has seen no status of the resource (it
/// just started, and a reconciler does not report a status the resource
/// already carries), every `STATUS_READ` while no verdict came (the cluster's
/// reconciler may run in another process, the one holding its lease), and
/// once more at the deadline, before giving up.
async fn settle(
    services: &Services,
    upgrade: &Upgrade,
    timeout: Duration,
) -> Result<Verdict, JobError> {
    let deadline = Instant::now() + timeout;
    let instance = load_instance(services, upgrade.instance_id).await?;
    let Some(cluster) = instance.cluster_id else {
        return Err(JobError::NotYet(format!(
            "instance {} is not placed yet",
            instance.id
        )));
    };
    let mut signal = services.statuses.watch(cluster, instance.id);
    let generation = apply(services, &instance).await?.metadata.generation;
    let mut read_at = if signal.latest().is_some() {
        Instant::now() + STATUS_READ
    } else {
        Instant::now()
    };
    let mut pending = None;
    loop {
        let now = Instant::now();
        let status = if now >= read_at || now >= deadline {
            read_at = now + STATUS_READ;
            read_status(services, cluster, instance.id).await?
        } else {
            signal.latest()
        };
        match status.and_then(|status| status.judgement(generation)) {
            Some(Judgement::Ready) => return Ok(Verdict::Ready),
            Some(Judgement::Degraded(failed)) => return Ok(Verdict::NotReady(failed)),
            Some(Judgement::Progressing(waiting)) => pending = Some(waiting),
            None => {}
        }
        if now >= deadline {
            let pending = pending
                .filter(|waiting| !waiting.is_empty())
                .unwrap_or_else(|| "the new state is not yet observed".to_owned());
            return Ok(Verdict::NotReady(pending));
        }
        tokio::select! {
            () = signal.changed() => {}
            () = tokio::time::sleep_until(read_at.min(deadline).into()) => {}
        }
    }
}

/// The status the instance's resource on `cluster` carries.
async fn read_status(
    services: &Services,
    cluster: Uuid,
    id: Uuid,
) -> Result<Option<MastodonInstanceStatus>, JobError> {
    let api: Api<MastodonInstance> = Api::all(services.cluster_client(cluster).await?);
    Ok(api.get(&resource_name(id)).await?.status)
}

/// Moves on to the next stage, with the operation's progress, at once: the
/// stored stage is the checkpoint a resumed job starts from.
async fn advance(services: &Services, upgrade: &Upgrade, to: UpgradeStage) -> Result<(), JobError> {
    let step = step_of(upgrade.stage);
    let crash_if_armed = |point| {
        if let Some(step) = step {
            services.faults.crash_if_armed(KIND, step, point);
        }
    };
    crash_if_armed(Point::BeforeCheckpoint);
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async |conn| {
        herd_db::upgrades::advance(conn, upgrade.operation_id, upgrade.stage, to, None).await?;
        if let Some(step) = step {
            herd_db::operations::complete_step(conn, upgrade.operation_id, step).await?;
        }
        Ok(())
    })
    .await?;
    crash_if_armed(Point::AfterCheckpoint);
    Ok(())
}

/// The operation's step a stage carries out.
fn step_of(stage: UpgradeStage) -> Option<&'static str> {
    match stage {
        UpgradeStage::Backup => Some("backup"),
        UpgradeStage::PreDeploy => Some("pre_deploy_migrations"),
        UpgradeStage::Rollout => Some("rollout"),
        UpgradeStage::PostDeploy => Some("post_deploy_migrations"),
        _ => None,
    }
}

/// Turns back to the old version: the next pass applies it and waits.
async fn roll_back(services: &Services, upgrade: &Upgrade, reason: String) -> Result<(), JobError> {
    tracing::warn!(%reason, from = %upgrade.from, to = %upgrade.to, "rolling an upgrade back");
    let mut conn = services.conn().await?;
    herd_db::upgrades::advance(
        &mut conn,
        upgrade.operation_id,
        upgrade.stage,
        UpgradeStage::RollingBack,
        Some(&reason),
    )
    .await?;
    Ok(())
}

/// Publishes `topic` and audits `action` by the upgrader, with the
/// upgrade's facts and `extra`.
async fn announce(
    conn: &mut AsyncPgConnection,
    upgrade: &Upgrade,
    topic: &str,
    action: &'static str,
    extra: Value,
) -> Result<(), JobError> {
    let mut facts = json!({
        "instance_id": upgrade.instance_id,
        "operation_id": upgrade.operation_id,
        "from": upgrade.from,
        "to": upgrade.to,
        "backup_export_id": upgrade.export_id,
    });
    if let (Some(facts), Value::Object(extra)) = (facts.as_object_mut(), extra) {
        facts.extend(extra);
    }
    herd_db::outbox::publish(conn, topic, facts.clone()).await?;
    herd_db::audit::record(
        conn,
        AuditEntry {
            actor: Actor::System("upgrader"),
            action,
            object_kind: "instance",
            object_id: upgrade.instance_id.to_string(),
            details: facts,
        },
    )
    .await?;
    Ok(())
}

/// The new version serves with its schema complete: on record at last.
async fn succeed(services: &Services, upgrade: &Upgrade) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async |conn| {
        herd_db::upgrades::advance(
            conn,
            upgrade.operation_id,
            upgrade.stage,
            UpgradeStage::Succeeded,
            None,
        )
        .await?;
        herd_db::instances::set_version(conn, upgrade.instance_id, &upgrade.to).await?;
        herd_db::instances::transition(conn, upgrade.instance_id, &LifecycleEvent::BecameReady)
            .await?;
        announce(
            conn,
            upgrade,
            "instance.upgraded",
            "instance.upgrade.succeeded",
            json!({}),
        )
        .await?;
        herd_db::operations::complete_step(conn, upgrade.operation_id, "post_deploy_migrations")
            .await?;
        herd_db::operations::finish_operation(conn, upgrade.operation_id, None).await?;
        Ok(())
    })
    .await
}

/// The old version serves again: Running as before, the operation failed.
async fn finish_rollback(services: &Services, upgrade: &Upgrade) -> Result<(), JobError> {
    let reason = upgrade.failure.clone().unwrap_or_default();
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async |conn| {
        herd_db::upgrades::advance(
            conn,
            upgrade.operation_id,
            upgrade.stage,
            UpgradeStage::RolledBack,
            Some(&reason),
        )
        .await?;
        herd_db::instances::transition(conn, upgrade.instance_id, &LifecycleEvent::BecameReady)
            .await?;
        announce(
            conn,
            upgrade,
            "instance.upgrade_rolled_back",
            "instance.upgrade.rolled_back",
            json!({ "reason": reason }),
        )
        .await?;
        herd_db::operations::finish_operation(
            conn,
            upgrade.operation_id,
            Some(&format!("rolled back: {reason}")),
        )
        .await?;
        Ok(())
    })
    .await
}

/// Past the point of no return and failed: an operator takes over.
async fn fail(services: &Services, upgrade: &Upgrade, reason: &str) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async |conn| {
        mark_failed(conn, upgrade, UpgradeStage::Failed, reason).await?;
        herd_db::operations::finish_operation(conn, upgrade.operation_id, Some(reason)).await?;
        Ok(())
    })
    .await
}

async fn mark_failed(
    conn: &mut AsyncPgConnection,
    upgrade: &Upgrade,
    terminal: UpgradeStage,
    reason: &str,
) -> Result<(), JobError> {
    herd_db::upgrades::advance(
        conn,
        upgrade.operation_id,
        upgrade.stage,
        terminal,
        Some(reason),
    )
    .await?;
    let instance = herd_db::instances::load_instance(conn, upgrade.instance_id)
        .await?
        .ok_or(JobError::MissingInstance(upgrade.instance_id))?;
    if instance.state == InstanceState::Updating {
        herd_db::instances::transition(
            conn,
            upgrade.instance_id,
            &LifecycleEvent::Failed {
                reason: reason.to_owned(),
            },
        )
        .await?;
    }
    announce(
        conn,
        upgrade,
        "instance.upgrade_failed",
        "instance.upgrade.failed",
        json!({ "reason": reason }),
    )
    .await?;
    Ok(())
}
