//! Changes of a live instance: a plan change, a scaling by hand, a
//! suspension or resumption, by an operator, a customer or billing. Each is
//! one path: the state change, an operation with the `update_instance` job
//! that brings workloads and data services to the record, an event and an
//! audit entry, all in the caller's transaction (after it changed the record).
//! No change starts while another operation is under way on the instance.

use diesel_async::AsyncPgConnection;
use herd_core::lifecycle::{LifecycleEvent, Request};
use herd_db::audit::{Actor, AuditEntry};
use herd_db::instances::Instance;
use herd_db::jobs::NewJob;
use herd_db::operations::{NewOperation, Operation};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{InstanceJob, JobError};

/// Enough to ride out a cluster or database restart under backoff.
const ATTEMPTS: i32 = 10;

/// One kind of change: what it does to the state, and how it is named.
pub struct Change {
    event: LifecycleEvent,
    operation_kind: &'static str,
    topic: &'static str,
    audit_action: &'static str,
}

pub const RESIZE: Change = Change {
    event: LifecycleEvent::UpdateStarted,
    operation_kind: "resize",
    topic: "instance.plan_changed",
    audit_action: "instance.plan_change",
};
pub const SCALE: Change = Change {
    event: LifecycleEvent::UpdateStarted,
    operation_kind: "scale",
    topic: "instance.scaled",
    audit_action: "instance.scale",
};
/// The workloads scaled to zero with every byte of data kept.
pub const SUSPEND: Change = Change {
    event: LifecycleEvent::Suspended,
    operation_kind: "suspend",
    topic: "instance.suspended",
    audit_action: "instance.suspend",
};
pub const RESUME: Change = Change {
    event: LifecycleEvent::ResumeStarted,
    operation_kind: "resume",
    topic: "instance.resumed",
    audit_action: "instance.resume",
};

/// Starts `change` of the instance; returns it as it is now, and the operation.
pub async fn start(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    change: &Change,
    actor: Actor,
    details: Value,
) -> Result<(Instance, Operation), JobError> {
    let operation_id = Uuid::now_v7();
    start_operation(
        conn,
        OperationStart {
            instance_id,
            operation_id,
            event: &change.event,
            operation_kind: change.operation_kind,
            job_kind: crate::update::KIND,
            steps: crate::update::STEPS,
            payload: serde_json::to_value(InstanceJob {
                instance_id,
                operation_id,
                archive: None,
            })
            .expect("a job payload always serialises"),
            topic: change.topic,
            audit_action: change.audit_action,
            facts: json!({
                "instance_id": instance_id,
                "operation_id": operation_id,
                "details": details,
            }),
        },
        actor,
    )
    .await
}

/// An operation on one instance as it starts: the event that moves its
/// state, the job that does the work, and how both are announced.
pub(crate) struct OperationStart<'a> {
    pub instance_id: Uuid,
    pub operation_id: Uuid,
    pub event: &'a LifecycleEvent,
    pub operation_kind: &'static str,
    pub job_kind: &'static str,
    pub steps: &'static [&'static str],
    pub payload: Value,
    pub topic: &'static str,
    pub audit_action: &'static str,
    /// What the event and the audit entry say.
    pub facts: Value,
}

/// Refuses `request` with [`JobError::OperationInProgress`] while an
/// operation under way on the instance keeps it from starting. In a
/// transaction the instance's row stays locked until it ends, so of two
/// simultaneous requests the second waits and is refused the same way.
pub async fn ensure_free(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    request: Request,
) -> Result<(), JobError> {
    herd_db::instances::lock_instance(conn, instance_id).await?;
    let under_way = herd_db::operations::under_way(conn, instance_id).await?;
    match under_way
        .into_iter()
        .find(|operation| herd_core::lifecycle::blocks(&operation.kind, request))
    {
        Some(operation) => Err(JobError::OperationInProgress {
            instance_id,
            operation_id: operation.id,
            kind: operation.kind,
        }),
        None => Ok(()),
    }
}

/// In the caller's transaction: the state change, the job, the operation,
/// the event and the audit entry of `start`, unless another operation is
/// under way on the instance.
pub(crate) async fn start_operation(
    conn: &mut AsyncPgConnection,
    start: OperationStart<'_>,
    actor: Actor,
) -> Result<(Instance, Operation), JobError> {
    ensure_free(conn, start.instance_id, Request::Change).await?;
    let instance = herd_db::instances::transition(conn, start.instance_id, start.event).await?;
    let started_by = match &actor {
        Actor::Account(principal) => Some(principal.account_id),
        Actor::System(_) => None,
    };
    let job = herd_db::jobs::enqueue(
        conn,
        NewJob {
            kind: start.job_kind,
            payload: start.payload,
            dedupe_key: Some(&format!("{}:{}", start.operation_kind, start.operation_id)),
            max_attempts: ATTEMPTS,
        },
    )
    .await?;
    let operation = herd_db::operations::create_operation(
        conn,
        NewOperation {
            id: start.operation_id,
            instance_id: start.instance_id,
            kind: start.operation_kind,
            steps: start.steps,
            started_by,
            job_id: Some(job.0),
        },
    )
    .await?;
    herd_db::outbox::publish(conn, start.topic, start.facts.clone()).await?;
    herd_db::audit::record(
        conn,
        AuditEntry {
            actor,
            action: start.audit_action,
            object_kind: "instance",
            object_id: start.instance_id.to_string(),
            details: start.facts,
        },
    )
    .await?;
    Ok((instance, operation))
}
