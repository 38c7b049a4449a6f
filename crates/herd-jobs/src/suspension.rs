//! Suspension and resumption: the workloads scaled to zero with every byte of
//! data kept, and back. Operators and billing take this one path; each is a
//! state change, an operation with its job, an event and an audit entry, in
//! the caller's transaction.

use diesel_async::AsyncPgConnection;
use herd_core::lifecycle::LifecycleEvent;
use herd_db::audit::{Actor, AuditEntry};
use herd_db::operations::Operation;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::JobError;
use crate::billing::start_update;

pub async fn suspend(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    actor: Actor,
    details: Value,
) -> Result<Operation, JobError> {
    change(conn, instance_id, actor, details, Change::Suspend).await
}

pub async fn resume(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    actor: Actor,
    details: Value,
) -> Result<Operation, JobError> {
    change(conn, instance_id, actor, details, Change::Resume).await
}

enum Change {
    Suspend,
    Resume,
}

async fn change(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    actor: Actor,
    details: Value,
    change: Change,
) -> Result<Operation, JobError> {
    let (event, kind, topic) = match change {
        Change::Suspend => (LifecycleEvent::Suspended, "suspend", "instance.suspended"),
        Change::Resume => (LifecycleEvent::ResumeStarted, "resume", "instance.resumed"),
    };
    herd_db::instances::transition(conn, instance_id, &event).await?;
    let started_by = match &actor {
        Actor::Account(principal) => Some(principal.account_id),
        Actor::System(_) => None,
    };
    let operation = start_update(conn, instance_id, kind, started_by).await?;
    let facts = json!({
        "instance_id": instance_id,
        "operation_id": operation.id,
        "details": details,
    });
    herd_db::outbox::publish(conn, topic, facts.clone()).await?;
    herd_db::audit::record(
        conn,
        AuditEntry {
            actor,
            action: match change {
                Change::Suspend => "instance.suspend",
                Change::Resume => "instance.resume",
            },
            object_kind: "instance",
            object_id: instance_id.to_string(),
            details: facts,
        },
    )
    .await?;
    Ok(operation)
}
