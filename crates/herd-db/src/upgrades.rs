//! Version upgrades of instances and the stage each has reached.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use herd_core::upgrade::UpgradeStage;
use herd_core::version::MastodonVersion;
use uuid::Uuid;

use crate::DbError;
use crate::schema::instance_upgrades;

#[derive(Debug, Clone, PartialEq)]
pub struct Upgrade {
    pub operation_id: Uuid,
    pub instance_id: Uuid,
    pub from: MastodonVersion,
    pub to: MastodonVersion,
    pub stage: UpgradeStage,
    pub rollout_timeout: Duration,
    /// The backup taken first, once it was started.
    pub export_id: Option<Uuid>,
    /// Why it rolled back or failed.
    pub failure: Option<String>,
    pub stage_started_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = instance_upgrades)]
struct UpgradeRow {
    operation_id: Uuid,
    instance_id: Uuid,
    from_version: String,
    to_version: String,
    stage: String,
    rollout_timeout_seconds: i32,
    export_id: Option<Uuid>,
    failure: Option<String>,
    stage_started_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<UpgradeRow> for Upgrade {
    type Error = DbError;

    fn try_from(row: UpgradeRow) -> Result<Self, DbError> {
        let version = |stored: &str| {
            stored
                .parse::<MastodonVersion>()
                .map_err(|err| DbError::Corrupt {
                    what: "upgrade version",
                    message: err.to_string(),
                })
        };
        Ok(Upgrade {
            from: version(&row.from_version)?,
            to: version(&row.to_version)?,
            stage: UpgradeStage::parse(&row.stage).ok_or_else(|| DbError::Corrupt {
                what: "upgrade stage",
                message: row.stage.clone(),
            })?,
            rollout_timeout: Duration::from_secs(
                u64::try_from(row.rollout_timeout_seconds).unwrap_or(0),
            ),
            operation_id: row.operation_id,
            instance_id: row.instance_id,
            export_id: row.export_id,
            failure: row.failure,
            stage_started_at: row.stage_started_at,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
    }
}

pub struct NewUpgrade {
    pub operation_id: Uuid,
    pub instance_id: Uuid,
    pub from: MastodonVersion,
    pub to: MastodonVersion,
    pub rollout_timeout: Duration,
}

/// Records an upgrade at its first stage. A second upgrade of an instance
/// while one is under way violates a unique index.
pub async fn create_upgrade(
    conn: &mut AsyncPgConnection,
    new: NewUpgrade,
) -> Result<Upgrade, DbError> {
    let seconds = i32::try_from(new.rollout_timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    diesel::insert_into(instance_upgrades::table)
        .values((
            instance_upgrades::operation_id.eq(new.operation_id),
            instance_upgrades::instance_id.eq(new.instance_id),
            instance_upgrades::from_version.eq(new.from.to_string()),
            instance_upgrades::to_version.eq(new.to.to_string()),
            instance_upgrades::stage.eq(UpgradeStage::Backup.name()),
            instance_upgrades::rollout_timeout_seconds.eq(seconds),
        ))
        .returning(UpgradeRow::as_returning())
        .get_result(conn)
        .await?
        .try_into()
}

pub async fn load_upgrade(
    conn: &mut AsyncPgConnection,
    operation_id: Uuid,
) -> Result<Option<Upgrade>, DbError> {
    let row = instance_upgrades::table
        .find(operation_id)
        .select(UpgradeRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Upgrade::try_from).transpose()
}

/// The instance's most recent upgrade, whatever its stage.
pub async fn latest_upgrade(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
) -> Result<Option<Upgrade>, DbError> {
    let row = instance_upgrades::table
        .filter(instance_upgrades::instance_id.eq(instance_id))
        .order(instance_upgrades::created_at.desc())
        .select(UpgradeRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Upgrade::try_from).transpose()
}

/// Moves the upgrade from stage `from` to `to`; refused as a concurrent
/// change when it is no longer at `from`.
pub async fn advance(
    conn: &mut AsyncPgConnection,
    operation_id: Uuid,
    from: UpgradeStage,
    to: UpgradeStage,
    failure: Option<&str>,
) -> Result<Upgrade, DbError> {
    let now = Utc::now();
    let updated = diesel::update(instance_upgrades::table.find(operation_id))
        .filter(instance_upgrades::stage.eq(from.name()))
        .set((
            instance_upgrades::stage.eq(to.name()),
            instance_upgrades::stage_started_at.eq(now),
            instance_upgrades::failure.eq(failure),
            instance_upgrades::finished_at.eq((!to.is_active()).then_some(now)),
        ))
        .returning(UpgradeRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    updated
        .ok_or(DbError::ConcurrentChange(operation_id))?
        .try_into()
}

/// Remembers the backup the upgrade started.
pub async fn set_backup(
    conn: &mut AsyncPgConnection,
    operation_id: Uuid,
    export_id: Uuid,
) -> Result<(), DbError> {
    diesel::update(instance_upgrades::table.find(operation_id))
        .set(instance_upgrades::export_id.eq(export_id))
        .execute(conn)
        .await?;
    Ok(())
}
