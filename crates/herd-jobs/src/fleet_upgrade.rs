//! Fleet upgrades: every instance running one version upgraded to another in
//! waves (herd_core::waves), by a durable driver job.
//!
//! The operator's controls (start, pause, resume, abort) each change the
//! upgrade, enqueue the driver when it must run, publish an event and audit
//! the change, in the caller's transaction.

use diesel_async::AsyncPgConnection;
use herd_db::audit::{Actor, AuditEntry};
use herd_db::fleet_upgrades::{
    self, FleetUpgrade, FleetUpgradeState, MemberState, NewFleetUpgrade,
};
use herd_db::jobs::NewJob;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::JobError;

pub const KIND: &str = "fleet_upgrade";
/// The actor of what the driver does by itself, automatic pauses included.
pub const SYSTEM: Actor = Actor::System("fleet-upgrade");
/// Enough to ride out a database restart under backoff; the driver keeps no
/// state of its own, so each attempt picks up where the members stand.
const ATTEMPTS: i32 = 10;

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
