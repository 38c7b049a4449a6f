//! Billing in the database: Stripe customers, the subscription paying for
//! each instance, and every Stripe event received.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::DbError;
use crate::schema::{billing_customers, instances, stripe_events, subscriptions};

/// The status of a subscription whose checkout has not completed yet.
pub const CHECKOUT: &str = "checkout";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub struct Subscription {
    pub instance_id: Uuid,
    pub checkout_session_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub stripe_item_id: Option<String>,
    /// [`CHECKOUT`], or a Stripe subscription status.
    pub status: String,
    pub status_at: Option<DateTime<Utc>>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub final_export_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Records that `instance_id` waits for its checkout.
pub async fn create_subscription(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
) -> Result<(), DbError> {
    diesel::insert_into(subscriptions::table)
        .values(subscriptions::instance_id.eq(instance_id))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn find_subscription(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
) -> Result<Option<Subscription>, DbError> {
    Ok(subscriptions::table
        .find(instance_id)
        .select(Subscription::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_by_stripe_subscription(
    conn: &mut AsyncPgConnection,
    stripe_subscription_id: &str,
) -> Result<Option<Subscription>, DbError> {
    Ok(subscriptions::table
        .filter(subscriptions::stripe_subscription_id.eq(stripe_subscription_id))
        .select(Subscription::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn set_checkout_session(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    session_id: &str,
) -> Result<(), DbError> {
    diesel::update(subscriptions::table.find(instance_id))
        .set(subscriptions::checkout_session_id.eq(session_id))
        .execute(conn)
        .await?;
    Ok(())
}

/// Ties the instance to the Stripe subscription its checkout created.
pub async fn link_subscription(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    stripe_subscription_id: &str,
    stripe_item_id: Option<&str>,
) -> Result<(), DbError> {
    diesel::update(subscriptions::table.find(instance_id))
        .set((
            subscriptions::stripe_subscription_id.eq(stripe_subscription_id),
            subscriptions::stripe_item_id.eq(stripe_item_id),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the status Stripe reported at `at`, unless a status reported later
/// was applied already. Returns whether it was applied.
pub async fn apply_status(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    status: &str,
    at: DateTime<Utc>,
) -> Result<bool, DbError> {
    let updated = diesel::update(subscriptions::table.find(instance_id))
        .filter(
            subscriptions::status_at
                .is_null()
                .or(subscriptions::status_at.le(at)),
        )
        .set((
            subscriptions::status.eq(status),
            subscriptions::status_at.eq(at),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

pub async fn set_suspended_at(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    suspended_at: Option<DateTime<Utc>>,
) -> Result<(), DbError> {
    diesel::update(subscriptions::table.find(instance_id))
        .set(subscriptions::suspended_at.eq(suspended_at))
        .execute(conn)
        .await?;
    Ok(())
}

/// Subscriptions of instances suspended since before `before` whose final
/// export has not been started, oldest first.
pub async fn due_for_final_export(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Subscription>, DbError> {
    Ok(subscriptions::table
        .inner_join(instances::table)
        .filter(subscriptions::suspended_at.lt(before))
        .filter(subscriptions::final_export_id.is_null())
        .filter(instances::state.eq("suspended"))
        .order(subscriptions::suspended_at)
        .limit(limit)
        .select(Subscription::as_select())
        .load(conn)
        .await?)
}

pub async fn set_final_export(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    export_id: Uuid,
) -> Result<(), DbError> {
    diesel::update(subscriptions::table.find(instance_id))
        .set(subscriptions::final_export_id.eq(export_id))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn customer_id(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
) -> Result<Option<String>, DbError> {
    Ok(billing_customers::table
        .find(account_id)
        .select(billing_customers::stripe_customer_id)
        .first(conn)
        .await
        .optional()?)
}

/// Keeps the account's Stripe customer as first recorded.
pub async fn keep_customer(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
    stripe_customer_id: &str,
) -> Result<String, DbError> {
    diesel::insert_into(billing_customers::table)
        .values((
            billing_customers::account_id.eq(account_id),
            billing_customers::stripe_customer_id.eq(stripe_customer_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    customer_id(conn, account_id)
        .await?
        .ok_or(DbError::Query(diesel::result::Error::NotFound))
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = stripe_events)]
pub struct StripeEvent {
    pub id: String,
    pub type_: String,
    pub created_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub received_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
}

/// Records an event as received; `false` when it was received before.
pub async fn record_event(
    conn: &mut AsyncPgConnection,
    id: &str,
    type_: &str,
    created_at: DateTime<Utc>,
    payload: &serde_json::Value,
) -> Result<bool, DbError> {
    let inserted = diesel::insert_into(stripe_events::table)
        .values((
            stripe_events::id.eq(id),
            stripe_events::type_.eq(type_),
            stripe_events::created_at.eq(created_at),
            stripe_events::payload.eq(payload),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

pub async fn load_event(
    conn: &mut AsyncPgConnection,
    id: &str,
) -> Result<Option<StripeEvent>, DbError> {
    Ok(stripe_events::table
        .find(id)
        .select(StripeEvent::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Marks the event applied; `false` when it was applied before. Run in the
/// transaction of the event's effect, so the effect happens once.
pub async fn mark_applied(conn: &mut AsyncPgConnection, id: &str) -> Result<bool, DbError> {
    let updated = diesel::update(stripe_events::table.find(id))
        .filter(stripe_events::applied_at.is_null())
        .set(stripe_events::applied_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}
