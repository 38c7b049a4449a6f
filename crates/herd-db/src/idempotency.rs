//! Idempotency keys: a retried request gets the first request's answer.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::DbError;
use crate::schema::idempotency_keys;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub request_sha256: Vec<u8>,
    pub status: u16,
    pub body: serde_json::Value,
}

pub async fn find_response(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
    key: &str,
) -> Result<Option<StoredResponse>, DbError> {
    let row: Option<(Vec<u8>, i32, serde_json::Value)> = idempotency_keys::table
        .find((account_id, key))
        .select((
            idempotency_keys::request_sha256,
            idempotency_keys::response_status,
            idempotency_keys::response_body,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(|(request_sha256, status, body)| StoredResponse {
        request_sha256,
        status: u16::try_from(status).unwrap_or(500),
        body,
    }))
}

/// Stores the answer in the transaction that made it, so the key and the
/// effect are committed together or not at all.
pub async fn store_response(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
    key: &str,
    response: &StoredResponse,
) -> Result<(), DbError> {
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::account_id.eq(account_id),
            idempotency_keys::key.eq(key),
            idempotency_keys::request_sha256.eq(&response.request_sha256),
            idempotency_keys::response_status.eq(i32::from(response.status)),
            idempotency_keys::response_body.eq(&response.body),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
