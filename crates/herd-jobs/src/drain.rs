//! A drain: every instance moved off a cluster, for maintenance or
//! retirement, at most `concurrency` moves at a time.
//!
//! The cluster is marked `draining` when the drain starts, so no new instance
//! is placed on it. The drain job only starts moves and watches them; each
//! move is a `migrate_instance` job with its own operation, to the least
//! loaded active cluster. Instances busy with other work (provisioning, an
//! update) are moved once they settle; the drain fails when what is left
//! cannot be moved (failed or suspended instances, moves that failed), and
//! names them.

use std::collections::HashSet;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use herd_core::lifecycle::InstanceState;
use herd_db::audit::{Actor, AuditEntry};
use herd_db::drains::{Drain, NewDrain};
use herd_db::fleet::FleetMember;
use herd_db::jobs::NewJob;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::migrate::{self, StartMigration};
use crate::worker::Slot;
use crate::{JobError, Services};

pub const KIND: &str = "drain_cluster";
const ATTEMPTS: i32 = 10;
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainJob {
    pub drain_id: Uuid,
    pub cluster_id: Uuid,
    pub concurrency: u32,
}

/// Marks the cluster draining and starts its drain, in the caller's
/// transaction. Refused while the cluster is drained already.
pub async fn start(
    conn: &mut AsyncPgConnection,
    cluster: &FleetMember,
    concurrency: u32,
    actor: Actor,
) -> Result<Drain, JobError> {
    let drain_id = Uuid::now_v7();
    let started_by = match &actor {
        Actor::Account(principal) => Some(principal.account_id),
        Actor::System(_) => None,
    };
    let created = herd_db::drains::create_drain(
        conn,
        NewDrain {
            id: drain_id,
            cluster_id: cluster.id,
            concurrency: i32::try_from(concurrency).unwrap_or(i32::MAX),
            started_by,
        },
    )
    .await?;
    if !created {
        return Err(JobError::Refused(format!(
            "the cluster {} is being drained already",
            cluster.name
        )));
    }
    herd_db::fleet::set_cluster_state(conn, cluster.id, "draining").await?;
    let job = DrainJob {
        drain_id,
        cluster_id: cluster.id,
        concurrency,
    };
    herd_db::jobs::enqueue(
        conn,
        NewJob {
            kind: KIND,
            payload: serde_json::to_value(&job).expect("a job payload always serialises"),
            dedupe_key: Some(&format!("drain:{drain_id}")),
            max_attempts: ATTEMPTS,
        },
    )
    .await?;
    herd_db::audit::record(
        conn,
        AuditEntry {
            actor,
            action: "cluster.drain",
            object_kind: "cluster",
            object_id: cluster.id.to_string(),
            details: json!({ "drain_id": drain_id, "concurrency": concurrency }),
        },
    )
    .await?;
    herd_db::drains::load_drain(conn, drain_id)
        .await?
        .ok_or_else(|| JobError::Payload(format!("drain {drain_id} is gone")))
}

pub async fn run(services: &Services, payload: &DrainJob, slot: &mut Slot) -> Result<(), JobError> {
    // The drain only waits for the moves, which run on workers of their own.
    slot.release();
    loop {
        let mut conn = services.conn().await?;
        let running: HashSet<Uuid> = herd_db::drains::running_moves(&mut conn, payload.drain_id)
            .await?
            .into_iter()
            .collect();
        let left = herd_db::instances::instances_on_cluster(&mut conn, payload.cluster_id).await?;
        if left.is_empty() && running.is_empty() {
            herd_db::drains::finish_drain(&mut conn, payload.drain_id, None).await?;
            return Ok(());
        }
        let failed_before: HashSet<Uuid> =
            herd_db::drains::failed_moves(&mut conn, payload.drain_id)
                .await?
                .into_iter()
                .collect();
        let movable: Vec<Uuid> = left
            .iter()
            .filter(|(id, state)| {
                *state == InstanceState::Running
                    && !running.contains(id)
                    && !failed_before.contains(id)
            })
            .map(|(id, _)| *id)
            .collect();
        let settling = left.iter().any(|(id, state)| {
            running.contains(id)
                || matches!(
                    state,
                    InstanceState::Pending
                        | InstanceState::Provisioning
                        | InstanceState::Updating
                        | InstanceState::Deleting
                )
        });
        if movable.is_empty() && !settling && running.is_empty() {
            let stuck: Vec<String> = left
                .iter()
                .map(|(id, state)| format!("{id} ({state})"))
                .collect();
            let reason = format!("cannot move: {}", stuck.join(", "));
            herd_db::drains::finish_drain(&mut conn, payload.drain_id, Some(&reason)).await?;
            return Ok(());
        }
        let free = usize::try_from(payload.concurrency)
            .unwrap_or(usize::MAX)
            .saturating_sub(running.len());
        for id in movable.into_iter().take(free) {
            start_move(&mut conn, payload, id).await?;
        }
        drop(conn);
        tokio::time::sleep(POLL).await;
    }
}

/// Starts moving one instance to the least loaded active cluster, its
/// database to the least loaded other server (or the same, when there is
/// none). An instance that changed state meanwhile, or has another operation
/// under way, is left for the next round.
async fn start_move(
    conn: &mut AsyncPgConnection,
    payload: &DrainJob,
    instance_id: Uuid,
) -> Result<(), JobError> {
    let started = conn
        .transaction::<_, JobError, _>(async |conn| {
            let instance = herd_db::instances::load_instance(conn, instance_id)
                .await?
                .ok_or(JobError::MissingInstance(instance_id))?;
            let to_cluster = herd_db::fleet::least_loaded_cluster(conn, Some(payload.cluster_id))
                .await?
                .ok_or(JobError::NoCapacity)?;
            let to_database_server = match herd_db::fleet::least_loaded_database_server(
                conn,
                instance.database_server_id,
            )
            .await?
            {
                Some(server) => server,
                None => instance.database_server_id.ok_or(JobError::NoCapacity)?,
            };
            migrate::start(
                conn,
                StartMigration {
                    instance_id,
                    to_cluster,
                    to_database_server,
                    to_object_store: None,
                    drain_id: Some(payload.drain_id),
                },
                Actor::System("drain"),
            )
            .await
        })
        .await;
    match started {
        Ok(_) => Ok(()),
        Err(
            JobError::Db(
                herd_db::DbError::Transition { .. } | herd_db::DbError::ConcurrentChange(_),
            )
            | JobError::OperationInProgress { .. },
        ) => Ok(()),
        Err(err) => Err(err),
    }
}

/// A drain that failed for good ends failed; the cluster stays draining, for
/// an operator to look at what is left on it.
pub(crate) async fn give_up(
    services: &Services,
    payload: &DrainJob,
    reason: &str,
) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    herd_db::drains::finish_drain(&mut conn, payload.drain_id, Some(reason)).await?;
    Ok(())
}
