//! The audit trail: who did what to which object, when.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::DbError;
use crate::accounts::Principal;
use crate::schema::audit_log;

/// Who acted: a person through the API, or one of Herd's own subsystems.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    Account(Principal),
    System(&'static str),
}

pub struct AuditEntry<'a> {
    pub actor: Actor,
    pub action: &'a str,
    pub object_kind: &'a str,
    pub object_id: String,
    pub details: serde_json::Value,
}

/// Appends an entry; call it inside the transaction of the change it records,
/// so the trail holds exactly the changes that happened.
pub async fn record(conn: &mut AsyncPgConnection, entry: AuditEntry<'_>) -> Result<(), DbError> {
    let (actor_id, actor): (Option<Uuid>, &str) = match entry.actor {
        Actor::Account(principal) => (Some(principal.account_id), "account"),
        Actor::System(subsystem) => (None, subsystem),
    };
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::actor_id.eq(actor_id),
            audit_log::actor.eq(actor),
            audit_log::action.eq(entry.action),
            audit_log::object_kind.eq(entry.object_kind),
            audit_log::object_id.eq(&entry.object_id),
            audit_log::details.eq(&entry.details),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Queryable)]
pub struct AuditRecord {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub object_kind: String,
    pub object_id: String,
    pub details: serde_json::Value,
}

/// The trail of one object, oldest first.
pub async fn history(
    conn: &mut AsyncPgConnection,
    object_kind: &str,
    object_id: &str,
) -> Result<Vec<AuditRecord>, DbError> {
    Ok(audit_log::table
        .filter(audit_log::object_kind.eq(object_kind))
        .filter(audit_log::object_id.eq(object_id))
        .order(audit_log::id)
        .load(conn)
        .await?)
}
