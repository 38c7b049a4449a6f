//! Fleet upgrades: every instance on one version upgraded to another in
//! waves, and where each member stands.
//!
//! Every change of a member's state is conditional on the state it comes
//! from, so two drivers of one upgrade (one resumed while the other still
//! winds down) never start a member twice nor record an outcome twice.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use herd_core::waves::{Outcomes, WavePolicy};
use uuid::Uuid;

use crate::DbError;
use crate::schema::{fleet_upgrade_members, fleet_upgrades, instances};

macro_rules! stored_names {
    ($type:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $name),+
                }
            }

            fn parse(stored: &str) -> Result<Self, DbError> {
                match stored {
                    $($name => Ok($type::$variant),)+
                    other => Err(DbError::Corrupt {
                        what: $what,
                        message: other.to_owned(),
                    }),
                }
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetUpgradeState {
    /// Its driver starts waves.
    Running,
    /// Stopped by hand or by the failure bound; resuming starts it again.
    Paused,
    /// Stopped for good by hand; members not started were skipped.
    Aborted,
    /// Every member finished within the failure bound.
    Completed,
}

stored_names!(FleetUpgradeState, "fleet upgrade state", {
    Running => "running",
    Paused => "paused",
    Aborted => "aborted",
    Completed => "completed",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Pending,
    Upgrading,
    Succeeded,
    Failed,
    Skipped,
}

stored_names!(MemberState, "fleet upgrade member state", {
    Pending => "pending",
    Upgrading => "upgrading",
    Succeeded => "succeeded",
    Failed => "failed",
    Skipped => "skipped",
});

#[derive(Debug, Clone, PartialEq)]
pub struct FleetUpgrade {
    pub id: Uuid,
    pub from_version: String,
    pub to_version: String,
    pub policy: WavePolicy,
    pub rollout_timeout_seconds: i32,
    pub state: FleetUpgradeState,
    pub paused_reason: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = fleet_upgrades)]
struct FleetUpgradeRow {
    id: Uuid,
    from_version: String,
    to_version: String,
    canary: i32,
    wave_size: i32,
    max_failure_ratio: f64,
    rollout_timeout_seconds: i32,
    state: String,
    paused_reason: Option<String>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

fn count(stored: i32, what: &'static str) -> Result<u32, DbError> {
    u32::try_from(stored).map_err(|_| DbError::Corrupt {
        what,
        message: stored.to_string(),
    })
}

impl TryFrom<FleetUpgradeRow> for FleetUpgrade {
    type Error = DbError;

    fn try_from(row: FleetUpgradeRow) -> Result<Self, DbError> {
        Ok(FleetUpgrade {
            policy: WavePolicy {
                canary: count(row.canary, "fleet upgrade canary")?,
                wave_size: count(row.wave_size, "fleet upgrade wave size")?,
                max_failure_ratio: row.max_failure_ratio,
            },
            state: FleetUpgradeState::parse(&row.state)?,
            id: row.id,
            from_version: row.from_version,
            to_version: row.to_version,
            rollout_timeout_seconds: row.rollout_timeout_seconds,
            paused_reason: row.paused_reason,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub instance_id: Uuid,
    pub wave: i32,
    pub state: MemberState,
    pub operation_id: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = fleet_upgrade_members)]
struct MemberRow {
    instance_id: Uuid,
    wave: i32,
    state: String,
    operation_id: Option<Uuid>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<MemberRow> for Member {
    type Error = DbError;

    fn try_from(row: MemberRow) -> Result<Self, DbError> {
        Ok(Member {
            state: MemberState::parse(&row.state)?,
            instance_id: row.instance_id,
            wave: row.wave,
            operation_id: row.operation_id,
            updated_at: row.updated_at,
        })
    }
}

/// The members' states in the terms of [`WavePolicy::decide`]: a member
/// still upgrading has not finished, like one not started.
pub fn outcomes<'a>(members: impl IntoIterator<Item = &'a Member>) -> Outcomes {
    members
        .into_iter()
        .fold(Outcomes::default(), |mut outcomes, member| {
            match member.state {
                MemberState::Pending | MemberState::Upgrading => outcomes.pending += 1,
                MemberState::Succeeded => outcomes.succeeded += 1,
                MemberState::Failed => outcomes.failed += 1,
                MemberState::Skipped => outcomes.skipped += 1,
            }
            outcomes
        })
}

pub struct NewFleetUpgrade<'a> {
    pub id: Uuid,
    pub from_version: &'a str,
    pub to_version: &'a str,
    pub policy: WavePolicy,
    pub rollout_timeout_seconds: i32,
    pub created_by: Option<Uuid>,
}

/// The instances a new upgrade from `version` takes in: the running ones on
/// it, oldest first, so the waves follow the order instances were created in.
pub async fn running_on_version(
    conn: &mut AsyncPgConnection,
    version: &str,
) -> Result<Vec<Uuid>, DbError> {
    Ok(instances::table
        .filter(instances::version.eq(version))
        .filter(instances::state.eq("running"))
        .order((instances::created_at, instances::id))
        .select(instances::id)
        .load(conn)
        .await?)
}

/// Records an upgrade with its members in waves, in the order given.
/// `None` when an upgrade from the same version is still running or paused.
pub async fn create(
    conn: &mut AsyncPgConnection,
    new: NewFleetUpgrade<'_>,
    members: Vec<Uuid>,
) -> Result<Option<FleetUpgrade>, DbError> {
    let wave_number = |index: usize| i32::try_from(index).unwrap_or(i32::MAX);
    let inserted = diesel::insert_into(fleet_upgrades::table)
        .values((
            fleet_upgrades::id.eq(new.id),
            fleet_upgrades::from_version.eq(new.from_version),
            fleet_upgrades::to_version.eq(new.to_version),
            fleet_upgrades::canary.eq(i32::try_from(new.policy.canary).unwrap_or(i32::MAX)),
            fleet_upgrades::wave_size.eq(i32::try_from(new.policy.wave_size).unwrap_or(i32::MAX)),
            fleet_upgrades::max_failure_ratio.eq(new.policy.max_failure_ratio),
            fleet_upgrades::rollout_timeout_seconds.eq(new.rollout_timeout_seconds),
            fleet_upgrades::created_by.eq(new.created_by),
        ))
        .returning(FleetUpgradeRow::as_returning())
        .get_result(conn)
        .await;
    let upgrade: FleetUpgrade = match inserted {
        Ok(row) => row.try_into()?,
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    let rows: Vec<_> = new
        .policy
        .waves(members)
        .into_iter()
        .enumerate()
        .flat_map(|(wave, ids)| {
            ids.into_iter().map(move |instance_id| {
                (
                    fleet_upgrade_members::upgrade_id.eq(new.id),
                    fleet_upgrade_members::instance_id.eq(instance_id),
                    fleet_upgrade_members::wave.eq(wave_number(wave)),
                )
            })
        })
        .collect();
    diesel::insert_into(fleet_upgrade_members::table)
        .values(rows)
        .execute(conn)
        .await?;
    Ok(Some(upgrade))
}

/// One upgrade; `lock` holds its row until the transaction ends, so state
/// changes by hand and by the driver happen one after the other.
pub async fn find(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<FleetUpgrade>, DbError> {
    let query = fleet_upgrades::table
        .find(id)
        .select(FleetUpgradeRow::as_select());
    let row = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    row.map(FleetUpgrade::try_from).transpose()
}

/// Every upgrade, newest first.
pub async fn list(conn: &mut AsyncPgConnection) -> Result<Vec<FleetUpgrade>, DbError> {
    let rows = fleet_upgrades::table
        .order(fleet_upgrades::created_at.desc())
        .select(FleetUpgradeRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(FleetUpgrade::try_from).collect()
}

/// The members of an upgrade, by wave, in the order they were planned.
pub async fn members(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Vec<Member>, DbError> {
    let rows = fleet_upgrade_members::table
        .inner_join(instances::table)
        .filter(fleet_upgrade_members::upgrade_id.eq(id))
        .order((
            fleet_upgrade_members::wave,
            instances::created_at,
            instances::id,
        ))
        .select(MemberRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(Member::try_from).collect()
}

/// Moves the upgrade to `to` if it is in one of `from`; returns it as it is
/// now, or `None` when it was in another state. `reason` is kept while paused.
pub async fn set_state(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    from: &[FleetUpgradeState],
    to: FleetUpgradeState,
    reason: Option<&str>,
) -> Result<Option<FleetUpgrade>, DbError> {
    let finished_at = matches!(
        to,
        FleetUpgradeState::Aborted | FleetUpgradeState::Completed
    )
    .then(Utc::now);
    let row = diesel::update(fleet_upgrades::table.find(id))
        .filter(fleet_upgrades::state.eq_any(from.iter().map(|state| state.as_str())))
        .set((
            fleet_upgrades::state.eq(to.as_str()),
            fleet_upgrades::paused_reason.eq(reason),
            fleet_upgrades::finished_at.eq(finished_at),
            fleet_upgrades::updated_at.eq(diesel::dsl::now),
        ))
        .returning(FleetUpgradeRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    row.map(FleetUpgrade::try_from).transpose()
}

/// Moves one member (every member when `instance_id` is `None`) from one
/// state to another, with the operation of the attempt when one started;
/// returns how many moved.
pub async fn move_members(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    instance_id: Option<Uuid>,
    from: MemberState,
    to: MemberState,
    operation_id: Option<Uuid>,
) -> Result<usize, DbError> {
    let mut update = diesel::update(fleet_upgrade_members::table)
        .filter(fleet_upgrade_members::upgrade_id.eq(id))
        .filter(fleet_upgrade_members::state.eq(from.as_str()))
        .into_boxed();
    if let Some(instance_id) = instance_id {
        update = update.filter(fleet_upgrade_members::instance_id.eq(instance_id));
    }
    let changes = (
        fleet_upgrade_members::state.eq(to.as_str()),
        fleet_upgrade_members::updated_at.eq(diesel::dsl::now),
    );
    Ok(match operation_id {
        Some(operation_id) => {
            update
                .set((
                    changes,
                    fleet_upgrade_members::operation_id.eq(operation_id),
                ))
                .execute(conn)
                .await?
        }
        None => update.set(changes).execute(conn).await?,
    })
}
