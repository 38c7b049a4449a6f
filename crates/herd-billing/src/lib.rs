//! Herd's Stripe adapter.
//!
//! Every POST carries an idempotency key chosen by the caller from the work it
//! belongs to, so a retried job never charges or creates twice.

pub mod webhook;

use std::fmt;
use std::time::Duration;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::customer::CreateCustomer;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BillingError {
    #[error("invalid Stripe configuration: {0}")]
    Config(String),
    #[error("invalid idempotency key: {0}")]
    IdempotencyKey(String),
    #[error("Stripe request failed: {0}")]
    Stripe(#[from] stripe::StripeError),
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Stripe, reached with one secret key at one API base (Stripe itself, or
/// stripe-mock in tests).
#[derive(Clone)]
pub struct Billing {
    client: Client,
}

// The client holds the secret key: keep it out of every Debug output.
impl fmt::Debug for Billing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Billing { .. }")
    }
}

impl Billing {
    pub fn new(api_base: &str, secret_key: &str) -> Result<Self, BillingError> {
        let client = ClientBuilder::new(secret_key)
            .url(api_base)
            .timeout(REQUEST_TIMEOUT)
            .app_info("herd", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()
            .map_err(|err| BillingError::Config(err.to_string()))?;
        Ok(Billing { client })
    }

    /// Creates the Stripe customer for an account and returns its id.
    pub async fn create_customer(
        &self,
        email: &str,
        idempotency_key: &str,
    ) -> Result<String, BillingError> {
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|err| BillingError::IdempotencyKey(err.to_string()))?;
        let customer = CreateCustomer::new()
            .email(email)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await?;
        Ok(customer.id.to_string())
    }
}
