//! Billing through Stripe: checkout for orders, the webhook Stripe reports
//! to, the customer portal and the invoices. With billing off these answer
//! `409 billing_disabled` (the webhook `404`): operators assign plans by hand.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{TimeZone, Utc};
use diesel_async::AsyncConnection;
use herd_billing::CheckoutRequest;
use herd_core::lifecycle::InstanceState;
use herd_jobs::billing::{BillingSettings, HANDLED_EVENTS};
use serde_json::json;
use uuid::Uuid;

use crate::auth::Principal;
use crate::dto::{CheckoutView, InvoiceList, InvoiceView, PortalView};
use crate::openapi::{Conflict, NotFound, ServerError, Unauthenticated, Unavailable};
use crate::orders::Answer;
use crate::{ApiState, Problem};

/// Invoices listed at most.
const INVOICES: u8 = 24;

pub(crate) fn settings(state: &ApiState) -> Result<&BillingSettings, Problem> {
    state.billing.as_deref().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "billing_disabled",
            "Billing disabled",
            "this installation bills nothing; operators assign plans",
        )
    })
}

pub(crate) fn stripe_failed(err: &herd_billing::BillingError) -> Problem {
    tracing::warn!(error = %err, "Stripe request failed");
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "payment_provider_unavailable",
        "Payment provider unavailable",
        "Stripe could not be reached or refused the request; retry later",
    )
}

/// The account's Stripe customer, created the first time it is needed.
pub(crate) async fn customer(
    state: &ApiState,
    billing: &BillingSettings,
    principal: &Principal,
) -> Result<String, Problem> {
    let account = principal.0.account_id;
    let mut conn = state.connection().await?;
    if let Some(customer) = herd_db::billing::customer_id(&mut conn, account).await? {
        return Ok(customer);
    }
    let email = herd_db::accounts::find_account(&mut conn, account)
        .await?
        .ok_or_else(Problem::not_found)?
        .email;
    let created = billing
        .stripe
        .create_customer(&email, &format!("customer:{account}"))
        .await
        .map_err(|err| stripe_failed(&err))?;
    Ok(herd_db::billing::keep_customer(&mut conn, account, &created).await?)
}

/// The checkout of a pending order: the same session however often it is
/// asked for, since its idempotency key is the instance's.
pub(crate) async fn checkout(
    state: &ApiState,
    principal: &Principal,
    instance_id: Uuid,
) -> Result<CheckoutView, Problem> {
    let billing = settings(state)?;
    let (instance, price) = {
        let mut conn = state.connection().await?;
        let instance = herd_db::instances::find_instance(&mut conn, &principal.0, instance_id)
            .await?
            .ok_or_else(Problem::not_found)?;
        let price = herd_db::plans::find_plan(&mut conn, &instance.plan_name)
            .await?
            .and_then(|plan| plan.stripe_price_id);
        (instance, price)
    };
    if instance.state != InstanceState::Pending {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "Already paid",
            format!(
                "the instance is {}, not waiting for payment",
                instance.state.name()
            ),
        ));
    }
    let price = price.ok_or_else(|| plan_not_for_sale(&instance.plan_name))?;
    let customer = customer(state, billing, principal).await?;
    let back = |outcome: &str| {
        let mut url = billing.public_url.clone();
        url.set_path(&format!("/instances/{instance_id}"));
        url.query_pairs_mut().append_pair("checkout", outcome);
        url.to_string()
    };
    let session = billing
        .stripe
        .create_checkout_session(
            &CheckoutRequest {
                customer_id: customer,
                price_id: price,
                success_url: back("success"),
                cancel_url: back("cancelled"),
                metadata: [
                    ("instance_id".to_owned(), instance_id.to_string()),
                    ("domain".to_owned(), instance.domain.clone()),
                    ("plan".to_owned(), instance.plan_name.clone()),
                    ("owner_email".to_owned(), instance.owner_email.clone()),
                ]
                .into(),
                client_reference_id: instance_id.to_string(),
            },
            &format!("checkout:{instance_id}"),
        )
        .await
        .map_err(|err| stripe_failed(&err))?;
    let mut conn = state.connection().await?;
    herd_db::billing::set_checkout_session(&mut conn, instance_id, &session.id).await?;
    Ok(CheckoutView {
        id: session.id,
        url: session.url,
    })
}

/// An order's answer with the checkout the customer pays at, when billing is on.
pub(crate) async fn with_checkout(
    state: &ApiState,
    principal: &Principal,
    mut answer: Answer,
) -> Result<Answer, Problem> {
    if state.billing.is_none() || answer.status != StatusCode::ACCEPTED {
        return Ok(answer);
    }
    let Some(id) = answer.body["instance"]["id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return Ok(answer);
    };
    match checkout(state, principal, id).await {
        Ok(checkout) => {
            answer.body["checkout"] =
                serde_json::to_value(checkout).expect("API types always serialise");
            Ok(answer)
        }
        // A replayed order that was paid for since needs no checkout.
        Err(problem) if problem.code == "invalid_state" => Ok(answer),
        Err(problem) => Err(problem),
    }
}

pub(crate) fn plan_not_for_sale(plan: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "plan_not_for_sale",
        "Plan not for sale",
        format!("the plan `{plan}` has no Stripe price; an operator must set one"),
    )
    .with_extensions(json!({ "field": "plan" }))
}

/// The checkout of an order not paid yet: where to send the customer.
#[utoipa::path(
    post,
    path = "/api/v1/instances/{id}/checkout",
    operation_id = "create_checkout",
    tag = "billing",
    params(("id" = Uuid, Path, description = "The instance's id")),
    responses(
        (status = 200, description = "The Stripe Checkout page to send the customer to", body = CheckoutView),
        Unauthenticated,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn create_checkout(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<CheckoutView>, Problem> {
    Ok(web::Json(checkout(&state, &principal, *id).await?))
}

/// A link to Stripe's customer portal: payment methods, plan, cancellation.
#[utoipa::path(
    post,
    path = "/api/v1/billing/portal",
    operation_id = "create_portal_session",
    tag = "billing",
    responses(
        (status = 200, description = "The portal, valid for a short while", body = PortalView),
        Unauthenticated,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn portal(
    state: web::Data<ApiState>,
    principal: Principal,
) -> Result<web::Json<PortalView>, Problem> {
    let billing = settings(&state)?;
    let customer = customer(&state, billing, &principal).await?;
    let url = billing
        .stripe
        .portal_session(
            &customer,
            billing.public_url.as_str(),
            &format!("portal:{}", Uuid::now_v7()),
        )
        .await
        .map_err(|err| stripe_failed(&err))?;
    Ok(web::Json(PortalView { url }))
}

/// The caller's invoices, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/billing/invoices",
    operation_id = "list_invoices",
    tag = "billing",
    responses(
        (status = 200, description = "The invoices", body = InvoiceList),
        Unauthenticated,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn invoices(
    state: web::Data<ApiState>,
    principal: Principal,
) -> Result<web::Json<InvoiceList>, Problem> {
    let billing = settings(&state)?;
    let customer = customer(&state, billing, &principal).await?;
    let invoices = billing
        .stripe
        .invoices(&customer, INVOICES)
        .await
        .map_err(|err| stripe_failed(&err))?;
    Ok(web::Json(InvoiceList {
        invoices: invoices.into_iter().map(InvoiceView::from).collect(),
    }))
}

/// Where Stripe reports. Only a genuine, recent signature is accepted; the
/// event is recorded with the job applying it and answered at once.
#[utoipa::path(
    post,
    path = "/webhooks/stripe",
    operation_id = "stripe_webhook",
    tag = "billing",
    security(()),
    request_body(content = String, content_type = "application/json", description = "A Stripe event"),
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the body")),
    responses(
        (status = 200, description = "Received (possibly before: then it has no second effect)"),
        (status = 400, description = "`invalid_signature` or `malformed_event`: nothing was recorded", content_type = "application/problem+json"),
        NotFound,
        ServerError,
        Unavailable,
    )
)]
pub async fn webhook(
    state: web::Data<ApiState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let Some(billing) = state.billing.as_deref() else {
        return Err(Problem::not_found());
    };
    let header = request
        .headers()
        .get("Stripe-Signature")
        .and_then(|value| value.to_str().ok());
    herd_billing::webhook::verify(
        &body,
        header,
        &billing.webhook_secrets,
        Utc::now().timestamp(),
    )
    .map_err(|err| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            "Invalid signature",
            err.to_string(),
        )
    })?;
    let event = herd_billing::event::parse(&body).map_err(|err| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_event",
            "Malformed event",
            err.to_string(),
        )
    })?;
    if !HANDLED_EVENTS.contains(&event.type_.as_str()) {
        return Ok(HttpResponse::Ok().json(json!({ "received": true, "handled": false })));
    }
    let created = Utc
        .timestamp_opt(event.created, 0)
        .single()
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_event",
                "Malformed event",
                format!("`created` {} is not a time", event.created),
            )
        })?;
    let payload: serde_json::Value = serde_json::from_slice(&body).map_err(|err| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_event",
            "Malformed event",
            err.to_string(),
        )
    })?;
    let mut conn = state.connection().await?;
    let first = conn
        .transaction(async |conn| {
            herd_jobs::billing::receive_event(conn, &event.id, &event.type_, created, &payload)
                .await
                .map_err(Problem::from)
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "received": true, "handled": true, "first": first })))
}
