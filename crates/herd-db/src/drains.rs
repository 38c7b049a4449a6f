//! Drains: every instance moved off a cluster, a bounded number at a time.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::DbError;
use crate::schema::{cluster_drains, clusters, instances, operations};

/// The kind of the operations that move an instance to another cluster.
pub const MIGRATE_OPERATION: &str = herd_core::lifecycle::MOVE_OPERATION;

#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub concurrency: i32,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Instances still placed on the cluster.
    pub instances_left: i64,
    /// Moves of this drain under way.
    pub moves_running: i64,
    /// Moves of this drain that completed.
    pub moves_done: i64,
}

pub struct NewDrain {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub concurrency: i32,
    pub started_by: Option<Uuid>,
}

/// Records a drain; `false` when the cluster is being drained already.
pub async fn create_drain(conn: &mut AsyncPgConnection, new: NewDrain) -> Result<bool, DbError> {
    let inserted = diesel::insert_into(cluster_drains::table)
        .values((
            cluster_drains::id.eq(new.id),
            cluster_drains::cluster_id.eq(new.cluster_id),
            cluster_drains::concurrency.eq(new.concurrency),
            cluster_drains::started_by.eq(new.started_by),
        ))
        .execute(conn)
        .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// The drain running on a cluster, if any.
pub async fn running_drain(
    conn: &mut AsyncPgConnection,
    cluster_id: Uuid,
) -> Result<Option<Uuid>, DbError> {
    Ok(cluster_drains::table
        .filter(cluster_drains::cluster_id.eq(cluster_id))
        .filter(cluster_drains::state.eq("running"))
        .select(cluster_drains::id)
        .first(conn)
        .await
        .optional()?)
}

/// The move operations a drain started.
fn moves_of(drain_id: Uuid) -> operations::BoxedQuery<'static, diesel::pg::Pg> {
    operations::table
        .filter(operations::kind.eq(MIGRATE_OPERATION))
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Text>("details ->> 'drain_id'")
                .eq(drain_id.to_string()),
        )
        .into_boxed()
}

/// A drain with its progress as it is now.
pub async fn load_drain(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Drain>, DbError> {
    type Row = (
        Uuid,
        Uuid,
        String,
        i32,
        String,
        Option<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = cluster_drains::table
        .inner_join(clusters::table)
        .filter(cluster_drains::id.eq(id))
        .select((
            cluster_drains::id,
            cluster_drains::cluster_id,
            clusters::name,
            cluster_drains::concurrency,
            cluster_drains::state,
            cluster_drains::error,
            cluster_drains::created_at,
            cluster_drains::finished_at,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((id, cluster_id, cluster_name, concurrency, state, error, created_at, finished_at)) =
        row
    else {
        return Ok(None);
    };
    let instances_left = instances::table
        .filter(instances::cluster_id.eq(cluster_id))
        .filter(instances::state.ne("deleted"))
        .count()
        .get_result(conn)
        .await?;
    let moves_running = moves_of(id)
        .filter(operations::finished_at.is_null())
        .count()
        .get_result(conn)
        .await?;
    let moves_done = moves_of(id)
        .filter(operations::state.eq("succeeded"))
        .count()
        .get_result(conn)
        .await?;
    Ok(Some(Drain {
        id,
        cluster_id,
        cluster_name,
        concurrency,
        state,
        error,
        created_at,
        finished_at,
        instances_left,
        moves_running,
        moves_done,
    }))
}

/// The instances whose moves of this drain are under way.
pub async fn running_moves(
    conn: &mut AsyncPgConnection,
    drain_id: Uuid,
) -> Result<Vec<Uuid>, DbError> {
    Ok(moves_of(drain_id)
        .filter(operations::finished_at.is_null())
        .select(operations::instance_id)
        .load(conn)
        .await?)
}

/// The instances whose moves of this drain failed.
pub async fn failed_moves(
    conn: &mut AsyncPgConnection,
    drain_id: Uuid,
) -> Result<Vec<Uuid>, DbError> {
    Ok(moves_of(drain_id)
        .filter(operations::state.eq("failed"))
        .select(operations::instance_id)
        .load(conn)
        .await?)
}

/// Ends a drain: succeeded, or failed with the reason.
pub async fn finish_drain(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    error: Option<&str>,
) -> Result<(), DbError> {
    diesel::update(cluster_drains::table.find(id))
        .filter(cluster_drains::finished_at.is_null())
        .set((
            cluster_drains::state.eq(if error.is_some() {
                "failed"
            } else {
                "succeeded"
            }),
            cluster_drains::error.eq(error),
            cluster_drains::finished_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
