//! The transactional outbox.
//!
//! A change and the event announcing it are written in one transaction, so
//! an event exists exactly when its change committed. A relay then delivers
//! events afterwards, at least once: a relay that dies after delivering but
//! before marking leaves the batch to be delivered again, so consumers must
//! tolerate duplicates (the message id serves to spot them).

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::sql_types::Timestamptz;
use diesel::{
    ExpressionMethods, IntoSql, NullableExpressionMethods, QueryDsl, Queryable, Selectable,
    SelectableHelper,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, TransactionManager};
use serde_json::Value;

use crate::DbError;
use crate::schema::outbox;

/// An event waiting to be delivered.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(Pg))]
pub struct OutboxMessage {
    pub id: i64,
    pub topic: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// Writes an event; call it in the transaction of the change it announces.
/// Returns the message id.
pub async fn publish(
    conn: &mut AsyncPgConnection,
    topic: &str,
    payload: Value,
) -> Result<i64, DbError> {
    Ok(diesel::insert_into(outbox::table)
        .values((outbox::topic.eq(topic), outbox::payload.eq(&payload)))
        .returning(outbox::id)
        .get_result(conn)
        .await?)
}

/// Up to `limit` undelivered events, oldest first, locked until the
/// caller's transaction ends. Concurrent relays skip each other's locked
/// events, so each relay delivers a batch of its own and marks it with
/// [`mark_delivered`] before committing.
///
/// Refuses to run outside a transaction: the locks would end with the
/// statement and another relay would take the same batch.
pub async fn next_batch(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<OutboxMessage>, DbError> {
    let depth =
        <AsyncPgConnection as AsyncConnection>::TransactionManager::transaction_manager_status_mut(
            conn,
        )
        .transaction_depth()?;
    if depth.is_none() {
        return Err(DbError::TransactionRequired("outbox::next_batch"));
    }
    Ok(outbox::table
        .filter(outbox::delivered_at.is_null())
        .order(outbox::id)
        .limit(limit)
        .for_update()
        .skip_locked()
        .select(OutboxMessage::as_select())
        .load(conn)
        .await?)
}

/// Marks events as delivered; returns how many were still undelivered.
pub async fn mark_delivered(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<usize, DbError> {
    Ok(diesel::update(outbox::table)
        .filter(outbox::id.eq_any(ids))
        .filter(outbox::delivered_at.is_null())
        .set(outbox::delivered_at.eq(now.into_sql::<Timestamptz>().nullable()))
        .execute(conn)
        .await?)
}
