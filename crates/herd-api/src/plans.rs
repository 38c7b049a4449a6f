//! `GET /api/v1/plans`.

use actix_web::web;

use crate::auth::Principal;
use crate::dto::{PlanList, PlanView};
use crate::openapi::{ServerError, Unauthenticated, Unavailable};
use crate::{ApiState, Problem};

/// The plans on offer, by name. Operators also see each plan's Stripe price.
#[utoipa::path(
    get,
    path = "/api/v1/plans",
    operation_id = "list_plans",
    tag = "plans",
    responses(
        (status = 200, description = "The plans on offer", body = PlanList),
        Unauthenticated,
        ServerError,
        Unavailable,
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    principal: Principal,
) -> Result<web::Json<PlanList>, Problem> {
    let mut conn = state.connection().await?;
    let plans = herd_db::plans::offered_plans(&mut conn).await?;
    let plans = plans
        .into_iter()
        .map(|plan| PlanView::new(plan, principal.is_operator()))
        .collect();
    Ok(web::Json(PlanList { plans }))
}
