//! Herd's Stripe adapter against stripe-mock, the server Stripe's own SDKs test against.
//!
//! stripe-mock checks every request against Stripe's OpenAPI document and
//! answers fixture objects, not the objects asked for: the tests check the
//! requests are accepted and the answers read, not the values Stripe would give.

use std::collections::BTreeMap;

use herd_billing::{Billing, BillingError, CheckoutRequest};
use herd_e2e::stack_setting;

fn billing() -> Billing {
    Billing::new(
        &stack_setting("HERD_STRIPE_API_BASE"),
        &stack_setting("HERD_STRIPE_SECRET_KEY"),
    )
    .expect("billing client")
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn checkout_request(metadata: BTreeMap<String, String>) -> CheckoutRequest {
    CheckoutRequest {
        customer_id: "cus_herd".to_owned(),
        price_id: "price_herd".to_owned(),
        success_url: "https://herd.example/orders/ord_1/paid".to_owned(),
        cancel_url: "https://herd.example/orders/ord_1".to_owned(),
        metadata,
        client_reference_id: "ord_1".to_owned(),
    }
}

#[tokio::test]
async fn stripe_mock_answers_a_customer_creation() {
    let customer = billing()
        .create_customer("owner@example.org", &key())
        .await
        .expect("customer created");
    assert!(
        customer.starts_with("cus_"),
        "unexpected customer id {customer}"
    );
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused() {
    let billing = Billing::new(&stack_setting("HERD_STRIPE_API_BASE"), "not-a-stripe-key")
        .expect("billing client");
    assert!(
        billing
            .create_customer("owner@example.org", &key())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_checkout_session_is_opened() {
    let billing = billing();
    let metadata = BTreeMap::from([("order".to_owned(), "ord_1".to_owned())]);
    for request in [
        checkout_request(metadata),
        checkout_request(BTreeMap::new()),
    ] {
        let session = billing
            .create_checkout_session(&request, &key())
            .await
            .expect("checkout session");
        assert!(session.id.starts_with("cs_"), "{}", session.id);
        assert!(session.url.starts_with("https://"), "{}", session.url);
        let debug = format!("{session:?}");
        assert!(debug.contains(&session.id), "{debug}");
        assert!(!debug.contains(&session.url), "{debug}");
    }
}

#[tokio::test]
async fn a_request_outside_stripes_api_is_refused() {
    // Stripe metadata keys cannot hold brackets: the form body reads `][` as
    // one level of nesting, which makes the value an object where the API
    // expects a string.
    let metadata = BTreeMap::from([("order][id".to_owned(), "ord_1".to_owned())]);
    let err = billing()
        .create_checkout_session(&checkout_request(metadata), &key())
        .await
        .expect_err("refused by stripe-mock");
    assert!(matches!(err, BillingError::Stripe(_)), "{err}");
}

#[tokio::test]
async fn a_subscription_is_read() {
    let subscription = billing()
        .subscription("sub_herd")
        .await
        .expect("subscription");
    assert_eq!(subscription.id, "sub_herd");
    assert!(
        subscription.customer_id.starts_with("cus_"),
        "{subscription:?}"
    );
    let price = subscription.price_id.expect("price");
    assert!(price.starts_with("price_"), "{price}");
    let item = subscription.item_id.expect("item");
    assert!(item.starts_with("si_"), "{item}");
}

#[tokio::test]
async fn ids_that_would_leave_the_subscription_path_are_refused() {
    let billing = billing();
    for id in ["", "sub_1/../../customers/cus_1", "sub_1?expand[]=customer"] {
        let err = billing.subscription(id).await.expect_err(id);
        assert!(matches!(err, BillingError::InvalidId(_)), "{id}: {err}");
        let err = billing.cancel_subscription(id).await.expect_err(id);
        assert!(matches!(err, BillingError::InvalidId(_)), "{id}: {err}");
    }
}

#[tokio::test]
async fn a_subscription_changes_price() {
    let subscription = billing()
        .change_subscription_price("sub_herd", "si_herd", "price_bigger", &key())
        .await
        .expect("subscription updated");
    assert_eq!(subscription.id, "sub_herd");
    assert!(subscription.item_id.is_some(), "{subscription:?}");
}

#[tokio::test]
async fn a_subscription_is_canceled() {
    let subscription = billing()
        .cancel_subscription("sub_herd")
        .await
        .expect("subscription canceled");
    assert_eq!(subscription.id, "sub_herd");
}

#[tokio::test]
async fn a_billing_portal_session_is_opened() {
    let url = billing()
        .portal_session("cus_herd", "https://herd.example/account", &key())
        .await
        .expect("portal session");
    assert!(url.starts_with("https://"), "{url}");
}

#[tokio::test]
async fn a_customers_invoices_are_listed() {
    let invoices = billing().invoices("cus_herd", 10).await.expect("invoices");
    assert!(!invoices.is_empty());
    for invoice in invoices {
        assert!(invoice.id.starts_with("in_"), "{invoice:?}");
        assert_eq!(invoice.currency.len(), 3, "{invoice:?}");
        assert!(invoice.created > 0, "{invoice:?}");
        assert!(invoice.status.is_some(), "{invoice:?}");
    }
}
