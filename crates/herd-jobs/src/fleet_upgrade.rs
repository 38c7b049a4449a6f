//! Fleet upgrades: every instance running one version upgraded to another in
//! waves (herd_core::waves), by a durable driver job.
//!
//! The operator's controls (start, pause, resume, abort) each change the
//! upgrade, enqueue the driver when it must run, publish an event and audit
//! the change, in the caller's transaction.
//!
//! The driver keeps nothing but what the database holds: each pass reads
//! where the members stand, so a driver resumed after a crash, or a second
//! one started by a resume while the first winds down, carries on from
//! there. A member starts in the transaction that marks it upgrading, and
//! only from pending, so none is ever started twice.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use herd_core::lifecycle::InstanceState;
use herd_core::version::MastodonVersion;
use herd_core::waves::WaveDecision;
use herd_db::audit::{Actor, AuditEntry};
use herd_db::fleet_upgrades::{
    self, FleetUpgrade, FleetUpgradeState, Member, MemberState, NewFleetUpgrade,
};
use herd_db::jobs::NewJob;
use herd_db::operations::OperationState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::faults::{Faults, Point};
use crate::upgrade::{self, UpgradeRequest};
use crate::worker::Slot;
use crate::{JobError, Services};

pub const KIND: &str = "fleet_upgrade";
/// The actor of what the driver does by itself, automatic pauses included.
pub const SYSTEM: Actor = Actor::System("fleet-upgrade");
/// Enough to ride out a database restart under backoff; the driver keeps no
/// state of its own, so each attempt picks up where the members stand.
const ATTEMPTS: i32 = 10;
/// How often the members' upgrades are looked at while a wave runs.
const POLL: Duration = Duration::from_secs(1);

/// The driver job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetUpgradeJob {
    pub upgrade_id: Uuid,
}

async fn enqueue_driver(conn: &mut AsyncPgConnection, upgrade_id: Uuid) -> Result<(), JobError> {
    herd_db::jobs::enqueue(
        conn,
        NewJob {
            kind: KIND,
            payload: serde_json::to_value(FleetUpgradeJob { upgrade_id })
                .expect("a job payload always serialises"),
            // Each start and resume runs a driver of its own: the state
            // change enqueuing it is what keeps them from piling up.
            dedupe_key: None,
            max_attempts: ATTEMPTS,
        },
    )
    .await?;
    Ok(())
}

/// Announces and audits a change of the upgrade.
pub(crate) async fn record(
    conn: &mut AsyncPgConnection,
    actor: Actor,
    upgrade: &FleetUpgrade,
    change: &str,
    details: Value,
) -> Result<(), JobError> {
    let facts = json!({
        "fleet_upgrade_id": upgrade.id,
        "from": upgrade.from_version,
        "to": upgrade.to_version,
        "state": upgrade.state.as_str(),
        "details": details,
    });
    herd_db::outbox::publish(conn, &format!("fleet_upgrade.{change}"), facts.clone()).await?;
    herd_db::audit::record(
        conn,
        AuditEntry {
            actor,
            action: &format!("fleet_upgrade.{change}"),
            object_kind: "fleet_upgrade",
            object_id: upgrade.id.to_string(),
            details: facts,
        },
    )
    .await?;
    Ok(())
}

/// Records an upgrade of `members` (in the order their waves take them) and
/// enqueues its driver. `None` when an upgrade from the same version is
/// still running or paused.
pub async fn start(
    conn: &mut AsyncPgConnection,
    new: NewFleetUpgrade<'_>,
    members: Vec<Uuid>,
    actor: Actor,
) -> Result<Option<FleetUpgrade>, JobError> {
    let count = members.len();
    let Some(upgrade) = fleet_upgrades::create(conn, new, members).await? else {
        return Ok(None);
    };
    enqueue_driver(conn, upgrade.id).await?;
    let policy = upgrade.policy;
    let details = json!({
        "members": count,
        "canary": policy.canary,
        "wave_size": policy.wave_size,
        "max_failure_ratio": policy.max_failure_ratio,
        "rollout_timeout_seconds": upgrade.rollout_timeout_seconds,
    });
    record(conn, actor, &upgrade, "start", details).await?;
    Ok(Some(upgrade))
}

/// Stops starting members; those upgrading finish and are recorded. `None`
/// when the upgrade is not running.
pub async fn pause(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
    actor: Actor,
) -> Result<Option<FleetUpgrade>, JobError> {
    let paused = fleet_upgrades::set_state(
        conn,
        id,
        &[FleetUpgradeState::Running],
        FleetUpgradeState::Paused,
        Some(reason),
    )
    .await?;
    if let Some(upgrade) = &paused {
        record(conn, actor, upgrade, "pause", json!({ "reason": reason })).await?;
    }
    Ok(paused)
}

/// Runs a paused upgrade again. The members that failed are retried: their
/// upgrade rolled back, so their instances run the old version again, and an
/// operator resuming has dealt with the cause. `None` when the upgrade is
/// not paused.
pub async fn resume(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    actor: Actor,
) -> Result<Option<FleetUpgrade>, JobError> {
    let resumed = fleet_upgrades::set_state(
        conn,
        id,
        &[FleetUpgradeState::Paused],
        FleetUpgradeState::Running,
        None,
    )
    .await?;
    let Some(upgrade) = resumed else {
        return Ok(None);
    };
    let retried = fleet_upgrades::move_members(
        conn,
        id,
        None,
        MemberState::Failed,
        MemberState::Pending,
        None,
    )
    .await?;
    enqueue_driver(conn, id).await?;
    record(
        conn,
        actor,
        &upgrade,
        "resume",
        json!({ "retried": retried }),
    )
    .await?;
    Ok(Some(upgrade))
}

/// Ends the upgrade for good: members not started are skipped, those
/// upgrading finish and are recorded. `None` when it already ended.
pub async fn abort(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    actor: Actor,
) -> Result<Option<FleetUpgrade>, JobError> {
    let aborted = fleet_upgrades::set_state(
        conn,
        id,
        &[FleetUpgradeState::Running, FleetUpgradeState::Paused],
        FleetUpgradeState::Aborted,
        None,
    )
    .await?;
    let Some(upgrade) = aborted else {
        return Ok(None);
    };
    let skipped = fleet_upgrades::move_members(
        conn,
        id,
        None,
        MemberState::Pending,
        MemberState::Skipped,
        None,
    )
    .await?;
    record(
        conn,
        actor,
        &upgrade,
        "abort",
        json!({ "skipped": skipped }),
    )
    .await?;
    Ok(Some(upgrade))
}

/// Drives the upgrade until it pauses, ends, or is aborted: waits for the
/// members upgrading, records their outcomes, decides after each wave, and
/// starts the next.
pub async fn run(
    services: &Services,
    job: &FleetUpgradeJob,
    slot: &mut Slot,
) -> Result<(), JobError> {
    // The driver mostly waits for the members' own upgrade jobs, which need
    // workers too.
    slot.release();
    let id = job.upgrade_id;
    loop {
        let mut conn = services.conn().await?;
        let members = fleet_upgrades::members(&mut conn, id).await?;
        let mut in_flight = false;
        for member in members.iter().filter(|m| m.state == MemberState::Upgrading) {
            in_flight |= !record_outcome(&mut conn, id, member).await?;
        }
        if in_flight {
            drop(conn);
            tokio::time::sleep(POLL).await;
            continue;
        }
        let step = conn
            .transaction::<_, JobError, _>(async |conn| next_wave(conn, &services.faults, id).await)
            .await?;
        match step {
            Step::Stop => return Ok(()),
            Step::WaveStarted => {
                services
                    .faults
                    .crash_if_armed(KIND, "wave_start", Point::AfterCheckpoint);
            }
            Step::Again => {}
        }
    }
}

/// Records the outcome of a member whose upgrade ended; `false` while it runs.
async fn record_outcome(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    member: &Member,
) -> Result<bool, JobError> {
    let operation_id = member.operation_id.ok_or_else(|| {
        JobError::Payload(format!(
            "member {} of fleet upgrade {id} is upgrading without an operation",
            member.instance_id
        ))
    })?;
    let operation = herd_db::operations::load_operation(conn, operation_id)
        .await?
        .ok_or_else(|| JobError::Payload(format!("operation {operation_id} is gone")))?;
    let outcome = match operation.state {
        OperationState::Succeeded => MemberState::Succeeded,
        OperationState::Failed => MemberState::Failed,
        OperationState::Pending | OperationState::Running => return Ok(false),
    };
    conn.transaction::<_, JobError, _>(async |conn| {
        let moved = fleet_upgrades::move_members(
            conn,
            id,
            Some(member.instance_id),
            MemberState::Upgrading,
            outcome,
            None,
        )
        .await?;
        let members = fleet_upgrades::members(conn, id).await?;
        let wave_done = !members.iter().any(|m| m.state == MemberState::Upgrading);
        if moved == 1 && wave_done {
            let upgrade = load(conn, id, false).await?;
            let outcomes = fleet_upgrades::outcomes(&members);
            let details = json!({
                "wave": member.wave,
                "members_so_far": {
                    "succeeded": outcomes.succeeded,
                    "failed": outcomes.failed,
                    "skipped": outcomes.skipped,
                    "not_finished": outcomes.pending,
                },
            });
            record(conn, SYSTEM, &upgrade, "wave_finish", details).await?;
        }
        Ok(())
    })
    .await?;
    Ok(true)
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// This driver started a wave: wait for it.
    WaveStarted,
    /// Another driver started one meanwhile: look again.
    Again,
    /// Paused, aborted or completed: this driver is done.
    Stop,
}

async fn load(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    lock: bool,
) -> Result<FleetUpgrade, JobError> {
    fleet_upgrades::find(conn, id, lock)
        .await?
        .ok_or_else(|| JobError::Payload(format!("fleet upgrade {id} does not exist")))
}

/// With no member upgrading: decides from the outcomes so far, and pauses,
/// completes, or starts the next wave. The upgrade's row stays locked
/// throughout, so pauses and aborts by hand wait for the decision.
async fn next_wave(
    conn: &mut AsyncPgConnection,
    faults: &Faults,
    id: Uuid,
) -> Result<Step, JobError> {
    let upgrade = load(conn, id, true).await?;
    if upgrade.state != FleetUpgradeState::Running {
        return Ok(Step::Stop);
    }
    let members = fleet_upgrades::members(conn, id).await?;
    if members.iter().any(|m| m.state == MemberState::Upgrading) {
        // Another driver started a wave meanwhile.
        return Ok(Step::Again);
    }
    match upgrade.policy.decide(&fleet_upgrades::outcomes(&members)) {
        WaveDecision::Pause { reason } => {
            pause(conn, id, &reason, SYSTEM).await?;
            Ok(Step::Stop)
        }
        WaveDecision::Complete => {
            let completed = fleet_upgrades::set_state(
                conn,
                id,
                &[FleetUpgradeState::Running],
                FleetUpgradeState::Completed,
                None,
            )
            .await?;
            if let Some(completed) = completed {
                let outcomes = fleet_upgrades::outcomes(&members);
                let details = json!({
                    "succeeded": outcomes.succeeded,
                    "failed": outcomes.failed,
                    "skipped": outcomes.skipped,
                });
                record(conn, SYSTEM, &completed, "complete", details).await?;
            }
            Ok(Step::Stop)
        }
        WaveDecision::Continue => {
            start_wave(conn, &upgrade, &members).await?;
            faults.crash_if_armed(KIND, "wave_start", Point::BeforeCheckpoint);
            Ok(Step::WaveStarted)
        }
    }
}

/// Starts every pending member of the first wave that has any. A member
/// whose instance no longer runs the version upgraded from is skipped.
async fn start_wave(
    conn: &mut AsyncPgConnection,
    upgrade: &FleetUpgrade,
    members: &[Member],
) -> Result<(), JobError> {
    let pending = || members.iter().filter(|m| m.state == MemberState::Pending);
    let Some(wave) = pending().map(|m| m.wave).min() else {
        return Ok(());
    };
    let to: MastodonVersion = upgrade
        .to_version
        .parse()
        .map_err(|err: herd_core::version::VersionError| JobError::Payload(err.to_string()))?;
    let request = UpgradeRequest {
        to,
        rollout_timeout: Duration::from_secs(
            u64::try_from(upgrade.rollout_timeout_seconds).unwrap_or(1),
        ),
    };
    let (mut started, mut skipped) = (Vec::new(), Vec::new());
    for member in pending().filter(|m| m.wave == wave) {
        let instance = herd_db::instances::load_instance(conn, member.instance_id).await?;
        let upgradable = instance.is_some_and(|instance| {
            instance.state == InstanceState::Running && instance.version == upgrade.from_version
        });
        if upgradable {
            let (_, operation) = upgrade::start(conn, member.instance_id, &request, SYSTEM).await?;
            fleet_upgrades::move_members(
                conn,
                upgrade.id,
                Some(member.instance_id),
                MemberState::Pending,
                MemberState::Upgrading,
                Some(operation.id),
            )
            .await?;
            started.push(member.instance_id);
        } else {
            fleet_upgrades::move_members(
                conn,
                upgrade.id,
                Some(member.instance_id),
                MemberState::Pending,
                MemberState::Skipped,
                None,
            )
            .await?;
            skipped.push(member.instance_id);
        }
    }
    let details = json!({ "wave": wave, "started": started, "skipped": skipped });
    record(conn, SYSTEM, upgrade, "wave_start", details).await
}

/// The driver failed for good: the upgrade pauses, with the reason, for an
/// operator to look and resume.
pub async fn abandon(
    conn: &mut AsyncPgConnection,
    job: &FleetUpgradeJob,
    message: &str,
) -> Result<(), JobError> {
    let reason = format!("the upgrade's driver failed: {message}");
    conn.transaction::<_, JobError, _>(async |conn| {
        pause(conn, job.upgrade_id, &reason, SYSTEM).await?;
        Ok(())
    })
    .await
}
