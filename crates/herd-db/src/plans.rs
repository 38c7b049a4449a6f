//! The plans on offer.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use herd_core::plan::Plan;

use crate::DbError;
use crate::schema::plans;

#[derive(Debug, Clone, PartialEq)]
pub struct OfferedPlan {
    pub plan: Plan,
    pub stripe_price_id: Option<String>,
}

fn decode(sizing: serde_json::Value) -> Result<Plan, DbError> {
    serde_json::from_value(sizing).map_err(|err| DbError::Corrupt {
        what: "plan sizing",
        message: err.to_string(),
    })
}

/// Stores a plan, replacing its sizing if it exists. Only validated plans
/// reach the database, so every instance is built from a layout Mastodon supports.
pub async fn upsert_plan(
    conn: &mut AsyncPgConnection,
    plan: &Plan,
    stripe_price_id: Option<&str>,
) -> Result<(), DbError> {
    plan.validate().map_err(|err| DbError::Corrupt {
        what: "plan",
        message: err.to_string(),
    })?;
    let sizing = serde_json::to_value(plan).expect("a plan always serialises");
    diesel::insert_into(plans::table)
        .values((
            plans::name.eq(&plan.name),
            plans::sizing.eq(&sizing),
            plans::stripe_price_id.eq(stripe_price_id),
        ))
        .on_conflict(plans::name)
        .do_update()
        .set((
            plans::sizing.eq(&sizing),
            plans::stripe_price_id.eq(stripe_price_id),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts the given plans where no plan exists yet: a first start gets plans
/// to offer, an operator's later changes are never overwritten.
pub async fn seed_plans(
    conn: &mut AsyncPgConnection,
    plans_to_seed: &[Plan],
) -> Result<usize, DbError> {
    let existing: i64 = plans::table.count().get_result(conn).await?;
    if existing > 0 {
        return Ok(0);
    }
    for plan in plans_to_seed {
        upsert_plan(conn, plan, None).await?;
    }
    Ok(plans_to_seed.len())
}

/// The stored columns an `OfferedPlan` is read from.
type PlanRow = (serde_json::Value, Option<String>);

fn offered_plan((sizing, stripe_price_id): PlanRow) -> Result<OfferedPlan, DbError> {
    Ok(OfferedPlan {
        plan: decode(sizing)?,
        stripe_price_id,
    })
}

pub async fn offered_plans(conn: &mut AsyncPgConnection) -> Result<Vec<OfferedPlan>, DbError> {
    let rows: Vec<PlanRow> = plans::table
        .filter(plans::offered.eq(true))
        .order(plans::name)
        .select((plans::sizing, plans::stripe_price_id))
        .load(conn)
        .await?;
    rows.into_iter().map(offered_plan).collect()
}

pub async fn find_offered_plan(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<Option<OfferedPlan>, DbError> {
    find(conn, name, true).await
}

/// A plan by name whether offered or not: instances keep the plan they were
/// ordered with after it is withdrawn from sale.
pub async fn find_plan(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<Option<OfferedPlan>, DbError> {
    find(conn, name, false).await
}

async fn find(
    conn: &mut AsyncPgConnection,
    name: &str,
    offered_only: bool,
) -> Result<Option<OfferedPlan>, DbError> {
    let mut query = plans::table
        .filter(plans::name.eq(name))
        .select((plans::sizing, plans::stripe_price_id))
        .into_boxed();
    if offered_only {
        query = query.filter(plans::offered.eq(true));
    }
    let row: Option<PlanRow> = query.first(conn).await.optional()?;
    row.map(offered_plan).transpose()
}

/// Sells the plan at a Stripe Price, or at none. `false` when no plan has the name.
pub async fn set_price(
    conn: &mut AsyncPgConnection,
    name: &str,
    stripe_price_id: Option<&str>,
) -> Result<bool, DbError> {
    let updated = diesel::update(plans::table.find(name))
        .set(plans::stripe_price_id.eq(stripe_price_id))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}
