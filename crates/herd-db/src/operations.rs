//! Long-running work as customers and operators follow it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DbError;
use crate::accounts::Principal;
use crate::jobs::JobState;
use crate::schema::{instances, jobs, operations};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Pending => "pending",
            OperationState::Running => "running",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }

    fn parse(stored: &str) -> Result<Self, DbError> {
        Ok(match stored {
            "pending" => OperationState::Pending,
            "running" => OperationState::Running,
            "succeeded" => OperationState::Succeeded,
            "failed" => OperationState::Failed,
            other => {
                return Err(DbError::Corrupt {
                    what: "operation state",
                    message: other.to_owned(),
                });
            }
        })
    }
}

/// One step of an operation and whether it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    pub name: String,
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub kind: String,
    pub state: OperationState,
    pub progress: i32,
    pub steps: Vec<StepProgress>,
    pub error: Option<String>,
    pub started_by: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What the operation measured, when it reports more than its steps.
    pub details: Option<serde_json::Value>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = operations)]
struct OperationRow {
    id: Uuid,
    instance_id: Uuid,
    kind: String,
    state: String,
    progress: i32,
    steps: serde_json::Value,
    error: Option<String>,
    started_by: Option<Uuid>,
    job_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    details: Option<serde_json::Value>,
}

impl TryFrom<OperationRow> for Operation {
    type Error = DbError;

    fn try_from(row: OperationRow) -> Result<Self, DbError> {
        Ok(Operation {
            state: OperationState::parse(&row.state)?,
            steps: serde_json::from_value(row.steps).map_err(|err| DbError::Corrupt {
                what: "operation steps",
                message: err.to_string(),
            })?,
            id: row.id,
            instance_id: row.instance_id,
            kind: row.kind,
            progress: row.progress,
            error: row.error,
            started_by: row.started_by,
            job_id: row.job_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
            details: row.details,
        })
    }
}

pub struct NewOperation<'a> {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub kind: &'a str,
    pub steps: &'a [&'a str],
    pub started_by: Option<Uuid>,
    pub job_id: Option<Uuid>,
}

pub async fn create_operation(
    conn: &mut AsyncPgConnection,
    new: NewOperation<'_>,
) -> Result<Operation, DbError> {
    let steps: Vec<StepProgress> = new
        .steps
        .iter()
        .map(|s| StepProgress {
            name: (*s).to_owned(),
            done: false,
        })
        .collect();
    diesel::insert_into(operations::table)
        .values((
            operations::id.eq(new.id),
            operations::instance_id.eq(new.instance_id),
            operations::kind.eq(new.kind),
            operations::steps.eq(serde_json::to_value(&steps).expect("steps serialise")),
            operations::started_by.eq(new.started_by),
            operations::job_id.eq(new.job_id),
        ))
        .returning(OperationRow::as_returning())
        .get_result(conn)
        .await?
        .try_into()
}

/// One operation, if the principal may see the instance it belongs to.
pub async fn find_operation(
    conn: &mut AsyncPgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<Option<Operation>, DbError> {
    let mut query = operations::table
        .inner_join(instances::table)
        .filter(operations::id.eq(id))
        .into_boxed();
    if let Some(owner) = principal.owner_filter() {
        query = query.filter(instances::owner_id.eq(owner));
    }
    let row = query
        .select(OperationRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Operation::try_from).transpose()
}

pub async fn load_operation(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<Operation>, DbError> {
    let row = operations::table
        .find(id)
        .select(OperationRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Operation::try_from).transpose()
}

/// The operation a job carries out: a job enqueued again under its dedupe
/// key is the same piece of work, so its operation is the one to report.
pub async fn find_operation_by_job(
    conn: &mut AsyncPgConnection,
    job_id: Uuid,
) -> Result<Option<Operation>, DbError> {
    let row = operations::table
        .filter(operations::job_id.eq(job_id))
        .order(operations::created_at)
        .select(OperationRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Operation::try_from).transpose()
}

/// Merges `details` into what the operation reports besides its steps.
pub async fn add_details(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    details: serde_json::Value,
) -> Result<(), DbError> {
    diesel::sql_query(
        "UPDATE operations SET details = coalesce(details, '{}'::jsonb) || $2, updated_at = now() WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<diesel::sql_types::Jsonb, _>(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks `step` done and the operation running, with progress as the share of steps done.
pub async fn complete_step(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    step: &str,
) -> Result<Operation, DbError> {
    let current = load_operation(conn, id)
        .await?
        .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
    let mut steps = current.steps;
    for s in steps.iter_mut().filter(|s| s.name == step) {
        s.done = true;
    }
    let done = steps.iter().filter(|s| s.done).count();
    let progress = if steps.is_empty() {
        0
    } else {
        (done * 100 / steps.len()) as i32
    };
    diesel::update(operations::table.find(id))
        .set((
            operations::steps.eq(serde_json::to_value(&steps).expect("steps serialise")),
            operations::progress.eq(progress),
            operations::state.eq(OperationState::Running.as_str()),
        ))
        .returning(OperationRow::as_returning())
        .get_result(conn)
        .await?
        .try_into()
}

/// Ends an operation: succeeded with full progress, or failed with the reason.
pub async fn finish_operation(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    error: Option<&str>,
) -> Result<(), DbError> {
    let state = if error.is_some() {
        OperationState::Failed
    } else {
        OperationState::Succeeded
    };
    let update =
        diesel::update(operations::table.find(id)).filter(operations::finished_at.is_null());
    match error {
        None => {
            update
                .set((
                    operations::state.eq(state.as_str()),
                    operations::progress.eq(100),
                    operations::finished_at.eq(Utc::now()),
                ))
                .execute(conn)
                .await?
        }
        Some(reason) => {
            update
                .set((
                    operations::state.eq(state.as_str()),
                    operations::error.eq(reason),
                    operations::finished_at.eq(Utc::now()),
                ))
                .execute(conn)
                .await?
        }
    };
    Ok(())
}

/// The instance's operation of `kind` still waiting for a job to carry it
/// out: one started before its payment arrived.
pub async fn waiting_operation(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    kind: &str,
) -> Result<Option<Uuid>, DbError> {
    Ok(operations::table
        .filter(operations::instance_id.eq(instance_id))
        .filter(operations::kind.eq(kind))
        .filter(operations::job_id.is_null())
        .filter(operations::finished_at.is_null())
        .select(operations::id)
        .first(conn)
        .await
        .optional()?)
}

pub async fn set_job(
    conn: &mut AsyncPgConnection,
    operation_id: Uuid,
    job_id: Uuid,
) -> Result<(), DbError> {
    diesel::update(operations::table.find(operation_id))
        .set(operations::job_id.eq(job_id))
        .execute(conn)
        .await?;
    Ok(())
}

/// One operation under way on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderWay {
    pub id: Uuid,
    pub kind: String,
}

/// The instance's operations under way, oldest first: not finished, and
/// carried out by a job that may still run (or waiting for one). An
/// operation whose job ended without finishing it (its worker died in the
/// last attempt) is over, and holds nothing up.
pub async fn under_way(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
) -> Result<Vec<UnderWay>, DbError> {
    let unfinished: Vec<(Uuid, String, Option<Uuid>)> = operations::table
        .filter(operations::instance_id.eq(instance_id))
        .filter(operations::finished_at.is_null())
        .order(operations::created_at)
        .select((operations::id, operations::kind, operations::job_id))
        .load(conn)
        .await?;
    let job_ids: Vec<Uuid> = unfinished.iter().filter_map(|(_, _, job)| *job).collect();
    let live_jobs: std::collections::HashSet<Uuid> = jobs::table
        .filter(jobs::id.eq_any(&job_ids))
        .filter(jobs::state.eq_any([JobState::Queued, JobState::Running]))
        .select(jobs::id)
        .load::<Uuid>(conn)
        .await?
        .into_iter()
        .collect();
    Ok(unfinished
        .into_iter()
        .filter(|(_, _, job)| job.is_none_or(|job| live_jobs.contains(&job)))
        .map(|(id, kind, _)| UnderWay { id, kind })
        .collect())
}
