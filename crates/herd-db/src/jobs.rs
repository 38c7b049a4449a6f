//! The durable job queue.
//!
//! A job is claimed by one worker at a time through a lease that the worker
//! renews with [`heartbeat`]; when a worker dies its lease runs out and
//! another worker claims the job again. Jobs are therefore run at least once,
//! and a job's steps record checkpoints with [`record_step`] so that a
//! resumed job skips what it already did.
//!
//! Every function takes a plain connection, so callers can enqueue a job in
//! the same transaction as the change that calls for it. Times come from the
//! database's clock, never the worker's, so leases mean the same to every
//! Herd process whatever their clocks say.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::dsl::{self, now};
use diesel::expression::AsExpression;
use diesel::pg::data_types::PgInterval;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{Array, Text, Timestamptz};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, IntoSql, NullableExpressionMethods,
    OptionalExtension, QueryDsl, Queryable, QueryableByName, Selectable, SelectableHelper,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::DbError;
use crate::schema::{job_steps, jobs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A seed for [`crate::Backoff::delay`]. The low half of a v7 id is
    /// random, so jobs that fail together retry at different times.
    pub fn jitter_seed(&self) -> u64 {
        self.0.as_u64_pair().1
    }
}

impl From<Uuid> for JobId {
    fn from(id: Uuid) -> Self {
        JobId(id)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will never run again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(state: &str) -> Result<Self, Self::Err> {
        match state {
            "queued" => Ok(JobState::Queued),
            "running" => Ok(JobState::Running),
            "succeeded" => Ok(JobState::Succeeded),
            "failed" => Ok(JobState::Failed),
            "cancelled" => Ok(JobState::Cancelled),
            other => Err(format!("unknown job state {other:?}")),
        }
    }
}

impl ToSql<Text, Pg> for JobState {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), &mut out.reborrow())
    }
}

impl FromSql<Text, Pg> for JobState {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(value)?;
        Ok(text.parse()?)
    }
}

/// Work to be done.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob<'a> {
    /// Which operation runs the job, e.g. `instance.provision`.
    pub kind: &'a str,
    pub payload: Value,
    /// Names the piece of work, e.g. `provision:<instance id>`: enqueuing a
    /// key that any job ever had returns that job instead of a new one.
    pub dedupe_key: Option<&'a str>,
    /// Attempts before the job is given up as failed; at least 1.
    pub max_attempts: i32,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = jobs, check_for_backend(Pg))]
pub struct Job {
    #[diesel(deserialize_as = Uuid)]
    pub id: JobId,
    pub kind: String,
    pub payload: Value,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub dedupe_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job a worker now holds, until `locked_until` unless it renews the lease.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = jobs, check_for_backend(Pg))]
pub struct ClaimedJob {
    #[diesel(deserialize_as = Uuid)]
    pub id: JobId,
    pub kind: String,
    pub payload: Value,
    /// This attempt's number, counting from 1.
    pub attempts: i32,
    pub max_attempts: i32,
    #[diesel(select_expression = jobs::locked_until.assume_not_null())]
    pub locked_until: DateTime<Utc>,
}

/// The checkpoint of a step a job has completed.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = job_steps, check_for_backend(Pg))]
pub struct CompletedStep {
    pub step: String,
    pub output: Value,
    pub completed_at: DateTime<Utc>,
}

fn interval(duration: Duration) -> PgInterval {
    PgInterval::from_microseconds(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX))
}

/// Adds a job, or returns the existing job with the same `dedupe_key`.
pub async fn enqueue(conn: &mut AsyncPgConnection, job: NewJob<'_>) -> Result<JobId, DbError> {
    let inserted = diesel::insert_into(jobs::table)
        .values((
            jobs::id.eq(Uuid::now_v7()),
            jobs::kind.eq(job.kind),
            jobs::payload.eq(&job.payload),
            jobs::max_attempts.eq(job.max_attempts),
            jobs::dedupe_key.eq(job.dedupe_key),
        ))
        .on_conflict(jobs::dedupe_key)
        .do_nothing()
        .returning(jobs::id)
        .get_result::<Uuid>(conn)
        .await
        .optional()?;
    if let Some(id) = inserted {
        return Ok(JobId(id));
    }
    // Only a dedupe key conflicts, so the job that holds it exists; a
    // concurrent insert of the same key has committed by now, since the
    // conflict check waits for it.
    let existing = jobs::table
        .select(jobs::id)
        .filter(jobs::dedupe_key.eq(job.dedupe_key))
        .get_result::<Uuid>(conn)
        .await?;
    Ok(JobId(existing))
}

/// The job with this id, if there is one.
pub async fn find(conn: &mut AsyncPgConnection, job_id: JobId) -> Result<Option<Job>, DbError> {
    Ok(jobs::table
        .find(job_id.0)
        .select(Job::as_select())
        .get_result(conn)
        .await
        .optional()?)
}

/// The job that holds `dedupe_key`, if any ever did.
pub async fn find_by_dedupe_key(
    conn: &mut AsyncPgConnection,
    dedupe_key: &str,
) -> Result<Option<Job>, DbError> {
    Ok(jobs::table
        .filter(jobs::dedupe_key.eq(dedupe_key))
        .select(Job::as_select())
        .get_result(conn)
        .await
        .optional()?)
}

const FINAL_LEASE_EXPIRED: &str = "the lease expired during the final attempt";

/// Takes the next due job of one of `kinds` for `worker_id`, holding it for
/// `lease`: a queued job whose `run_after` has come, or a running job whose
/// holder let its lease run out. Concurrent claimers skip each other's rows
/// rather than wait, and never receive the same job.
///
/// `worker_id` must be unique to one worker for as long as it lives (a host
/// name alone is not: a restarted process would inherit the dead one's jobs).
pub async fn claim(
    conn: &mut AsyncPgConnection,
    worker_id: &str,
    kinds: &[&str],
    lease: Duration,
) -> Result<Option<ClaimedJob>, DbError> {
    conn.transaction(async |conn| {
        loop {
            let due = jobs::state
                .eq(JobState::Queued)
                .and(jobs::run_after.le(now))
                .or(jobs::state
                    .eq(JobState::Running)
                    .and(jobs::locked_until.lt(now.into_sql::<Timestamptz>().nullable())));
            let candidate = jobs::table
                .select((jobs::id, jobs::state, jobs::attempts, jobs::max_attempts))
                .filter(jobs::kind.eq_any(kinds))
                .filter(due)
                .order((jobs::run_after, jobs::id))
                .limit(1)
                .for_update()
                .skip_locked()
                .get_result::<(Uuid, JobState, i32, i32)>(conn)
                .await
                .optional()?;
            let Some((id, state, attempts, max_attempts)) = candidate else {
                return Ok(None);
            };
            if state == JobState::Running && attempts >= max_attempts {
                // Its worker died during the last attempt it was allowed; a
                // job that kills its worker must not take down one after another.
                diesel::update(jobs::table.find(id))
                    .set((
                        jobs::state.eq(JobState::Failed),
                        jobs::finished_at.eq(now.into_sql::<Timestamptz>().nullable()),
                        jobs::locked_by.eq(None::<String>),
                        jobs::locked_until.eq(None::<DateTime<Utc>>),
                        jobs::last_error.eq(FINAL_LEASE_EXPIRED),
                    ))
                    .execute(conn)
                    .await?;
                tracing::warn!(job = %id, "job failed: {FINAL_LEASE_EXPIRED}");
                continue;
            }
            let claimed = diesel::update(jobs::table.find(id))
                .set((
                    jobs::state.eq(JobState::Running),
                    jobs::attempts.eq(jobs::attempts + 1),
                    jobs::locked_by.eq(worker_id),
                    jobs::locked_until
                        .eq((now.into_sql::<Timestamptz>() + interval(lease)).nullable()),
                ))
                .returning(ClaimedJob::as_returning())
                .get_result(conn)
                .await?;
            return Ok(Some(claimed));
        }
    })
    .await
}

#[derive(QueryableByName)]
struct RenewedRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// Extends the leases of the jobs in `held`, each by the worker it names, to
/// `lease` from now, in one statement. Returns the jobs renewed: a job left
/// out is no longer held by its worker, which must stop working on it.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    held: &[(JobId, String)],
    lease: Duration,
) -> Result<HashSet<JobId>, DbError> {
    let (ids, workers): (Vec<Uuid>, Vec<&str>) = held
        .iter()
        .map(|(job, worker)| (job.0, worker.as_str()))
        .unzip();
    let renewed: Vec<RenewedRow> = diesel::sql_query(
        "UPDATE jobs SET locked_until = now() + $3 \
         FROM unnest($1::uuid[], $2::text[]) AS held(id, worker) \
         WHERE jobs.id = held.id AND jobs.locked_by = held.worker AND jobs.state = $4 \
         RETURNING jobs.id",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Array<Text>, _>(workers)
    .bind::<diesel::sql_types::Interval, _>(interval(lease))
    .bind::<Text, _>(JobState::Running.as_str())
    .get_results(conn)
    .await?;
    Ok(renewed.into_iter().map(|row| JobId(row.id)).collect())
}

/// Marks a job `worker_id` holds as succeeded.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    job_id: JobId,
    worker_id: &str,
) -> Result<(), DbError> {
    let finished = diesel::update(held(job_id, worker_id))
        .set((
            jobs::state.eq(JobState::Succeeded),
            jobs::finished_at.eq(now.into_sql::<Timestamptz>().nullable()),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .await?;
    if finished == 1 {
        Ok(())
    } else {
        Err(lease_lost(job_id, worker_id))
    }
}

/// Queues the job `worker_id` holds again after `wait`, without counting the
/// attempt: it waited for other work to end and did none of its own, so the
/// wait does not use up the attempts its own failures may take.
pub async fn postpone(
    conn: &mut AsyncPgConnection,
    job_id: JobId,
    worker_id: &str,
    reason: &str,
    wait: Duration,
) -> Result<(), DbError> {
    let postponed = diesel::update(held(job_id, worker_id))
        .set((
            jobs::state.eq(JobState::Queued),
            jobs::attempts.eq(jobs::attempts - 1),
            jobs::run_after.eq(now.into_sql::<Timestamptz>() + interval(wait)),
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<DateTime<Utc>>),
            jobs::last_error.eq(reason),
        ))
        .execute(conn)
        .await?;
    if postponed == 1 {
        Ok(())
    } else {
        Err(lease_lost(job_id, worker_id))
    }
}

/// Records that the attempt `worker_id` holds failed with `error`. The job is
/// queued again after `backoff(attempt)`, or fails for good once it has had
/// `max_attempts` or when `backoff` gives no delay (an error no retry mends).
/// Returns the job's new state.
pub async fn fail(
    conn: &mut AsyncPgConnection,
    job_id: JobId,
    worker_id: &str,
    error: &str,
    backoff: impl FnOnce(u32) -> Option<Duration> + Send,
) -> Result<JobState, DbError> {
    conn.transaction(async |conn| {
        let attempts = held(job_id, worker_id)
            .select((jobs::attempts, jobs::max_attempts))
            .for_update()
            .get_result::<(i32, i32)>(conn)
            .await
            .optional()?;
        let Some((attempts, max_attempts)) = attempts else {
            return Err(lease_lost(job_id, worker_id));
        };
        let release = (
            jobs::locked_by.eq(None::<String>),
            jobs::locked_until.eq(None::<DateTime<Utc>>),
            jobs::last_error.eq(error),
        );
        // No delay means no retry: the error is final.
        let retry_after = (attempts < max_attempts)
            .then(|| backoff(u32::try_from(attempts).unwrap_or(0)))
            .flatten();
        let Some(wait) = retry_after else {
            diesel::update(jobs::table.find(job_id.0))
                .set((
                    jobs::state.eq(JobState::Failed),
                    jobs::finished_at.eq(now.into_sql::<Timestamptz>().nullable()),
                    release,
                ))
                .execute(conn)
                .await?;
            return Ok(JobState::Failed);
        };
        diesel::update(jobs::table.find(job_id.0))
            .set((
                jobs::state.eq(JobState::Queued),
                jobs::run_after.eq(now.into_sql::<Timestamptz>() + interval(wait)),
                release,
            ))
            .execute(conn)
            .await?;
        Ok(JobState::Queued)
    })
    .await
}

/// Checkpoints a completed step with its output. The first record of a step
/// stands: later steps may rely on what it reported. Returns false when the
/// step was already recorded.
pub async fn record_step(
    conn: &mut AsyncPgConnection,
    job_id: JobId,
    step: &str,
    output: Value,
) -> Result<bool, DbError> {
    let inserted = diesel::insert_into(job_steps::table)
        .values((
            job_steps::job_id.eq(job_id.0),
            job_steps::step.eq(step),
            job_steps::output.eq(&output),
        ))
        .on_conflict((job_steps::job_id, job_steps::step))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// The steps a job has completed, in the order they completed.
pub async fn completed_steps(
    conn: &mut AsyncPgConnection,
    job_id: JobId,
) -> Result<Vec<CompletedStep>, DbError> {
    Ok(job_steps::table
        .filter(job_steps::job_id.eq(job_id.0))
        .order((job_steps::completed_at, job_steps::step))
        .select(CompletedStep::as_select())
        .load(conn)
        .await?)
}

type Held<'a> = dsl::Filter<
    dsl::Filter<dsl::Find<jobs::table, Uuid>, dsl::Eq<jobs::state, JobState>>,
    dsl::Eq<jobs::locked_by, &'a str>,
>;

/// The job, while `worker_id` holds it. An expired lease nobody has taken
/// over still counts: the worker's result is as good as anyone's.
fn held(job_id: JobId, worker_id: &str) -> Held<'_> {
    jobs::table
        .find(job_id.0)
        .filter(jobs::state.eq(JobState::Running))
        .filter(jobs::locked_by.eq(worker_id))
}

fn lease_lost(job_id: JobId, worker_id: &str) -> DbError {
    DbError::LeaseLost {
        job: job_id.0,
        worker: worker_id.to_owned(),
    }
}
