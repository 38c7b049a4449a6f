//! Herd's Stripe adapter against stripe-mock, the server Stripe's own SDKs test against.

use herd_billing::Billing;
use herd_e2e::stack_setting;

#[tokio::test]
async fn stripe_mock_answers_a_customer_creation() {
    let billing = Billing::new(
        &stack_setting("HERD_STRIPE_API_BASE"),
        &stack_setting("HERD_STRIPE_SECRET_KEY"),
    )
    .expect("billing client");
    let key = uuid::Uuid::new_v4().to_string();
    let customer = billing
        .create_customer("owner@example.org", &key)
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
    let key = uuid::Uuid::new_v4().to_string();
    assert!(
        billing
            .create_customer("owner@example.org", &key)
            .await
            .is_err()
    );
}
