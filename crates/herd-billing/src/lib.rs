//! Herd's Stripe adapter.
//!
//! Every POST carries an idempotency key chosen by the caller from the work it
//! belongs to, so a retried job never charges or creates twice.

pub mod event;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use herd_core::billing::{SubscriptionStatus, UnknownStatus};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::Invoice;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::ListInvoice;
use stripe_billing::subscription::{
    CancelSubscription, RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BillingError {
    #[error("invalid Stripe configuration: {0}")]
    Config(String),
    #[error("invalid idempotency key: {0}")]
    IdempotencyKey(String),
    #[error("`{0}` is not a Stripe object id")]
    InvalidId(String),
    #[error("Stripe request failed: {0}")]
    Stripe(#[from] stripe::StripeError),
    #[error("Stripe answered what Herd cannot use: {0}")]
    Unexpected(String),
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

/// A Checkout Session selling one price, as a subscription, to an existing
/// customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    pub customer_id: String,
    pub price_id: String,
    pub success_url: String,
    pub cancel_url: String,
    /// Set on the session and on the subscription it creates, so that the
    /// webhooks of either name the order they belong to.
    pub metadata: BTreeMap<String, String>,
    pub client_reference_id: String,
}

#[derive(Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    /// Where the customer pays.
    pub url: String,
}

// Whoever holds a session's URL can complete that checkout: keep it out of logs.
impl fmt::Debug for CheckoutSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckoutSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A subscription as Stripe has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: String,
    pub customer_id: String,
    pub status: SubscriptionStatus,
    /// The price and item of the subscription's first item: Herd's
    /// subscriptions have exactly one.
    pub price_id: Option<String>,
    pub item_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct InvoiceSummary {
    pub id: String,
    /// Assigned when the invoice is finalized; drafts have none.
    pub number: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub status: Option<String>,
    /// In the currency's smallest unit.
    pub amount_due: i64,
    pub amount_paid: i64,
    /// Lowercase ISO 4217 code.
    pub currency: String,
    /// Unix seconds.
    pub created: i64,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
}

// The invoice links open the customer's invoice to anyone: keep them out of logs.
impl fmt::Debug for InvoiceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvoiceSummary")
            .field("id", &self.id)
            .field("number", &self.number)
            .field("status", &self.status)
            .field("amount_due", &self.amount_due)
            .field("amount_paid", &self.amount_paid)
            .field("currency", &self.currency)
            .field("created", &self.created)
            .finish_non_exhaustive()
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
        let customer = CreateCustomer::new()
            .email(email)
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(customer.id.to_string())
    }

    /// Opens a hosted Checkout Session that subscribes the customer to the
    /// price, one unit of it.
    pub async fn create_checkout_session(
        &self,
        request: &CheckoutRequest,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, BillingError> {
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.price = Some(request.price_id.clone());
        line_item.quantity = Some(1);
        let mut create = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(&request.customer_id)
            .line_items(vec![line_item])
            .success_url(&request.success_url)
            .cancel_url(&request.cancel_url)
            .client_reference_id(&request.client_reference_id);
        // An empty map would go out as `metadata=`, which the API refuses
        // under `subscription_data`.
        if !request.metadata.is_empty() {
            let metadata: HashMap<String, String> = request
                .metadata
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
            subscription_data.metadata = Some(metadata.clone());
            create = create
                .metadata(metadata)
                .subscription_data(subscription_data);
        }
        let session = create
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await?;
        // Only embedded sessions lack a URL, and Herd opens hosted ones.
        let url = session.url.ok_or_else(|| {
            BillingError::Unexpected(format!("checkout session {} has no URL", session.id))
        })?;
        Ok(CheckoutSession {
            id: session.id.to_string(),
            url,
        })
    }

    /// The subscription as Stripe has it now: what entitlements follow from,
    /// whatever order its webhooks arrived in.
    pub async fn subscription(&self, id: &str) -> Result<SubscriptionState, BillingError> {
        let subscription = RetrieveSubscription::new(path_id(id)?)
            .build()
            .customize()
            .send(&self.client)
            .await?;
        subscription_state(subscription)
    }

    /// Moves the subscription's item to another price; Stripe prorates the
    /// rest of the current period onto the next invoice.
    pub async fn change_subscription_price(
        &self,
        subscription_id: &str,
        item_id: &str,
        new_price_id: &str,
        idempotency_key: &str,
    ) -> Result<SubscriptionState, BillingError> {
        let mut item = UpdateSubscriptionItems::new();
        item.id = Some(item_id.to_owned());
        item.price = Some(new_price_id.to_owned());
        let subscription = UpdateSubscription::new(path_id(subscription_id)?)
            .items(vec![item])
            .proration_behavior(UpdateSubscriptionProrationBehavior::CreateProrations)
            .build()
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await?;
        subscription_state(subscription)
    }

    /// Ends the subscription now. A DELETE is idempotent in itself, so it
    /// carries no idempotency key.
    pub async fn cancel_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<SubscriptionState, BillingError> {
        let subscription = CancelSubscription::new(path_id(subscription_id)?)
            .build()
            .customize()
            .send(&self.client)
            .await?;
        subscription_state(subscription)
    }

    /// Opens a billing portal session for the customer and returns its URL,
    /// which signs the customer in: hand it to them, never log it.
    pub async fn portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, BillingError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url)
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(session.url)
    }

    /// The customer's latest invoices, newest first; Stripe answers at most
    /// 100 at a time.
    pub async fn invoices(
        &self,
        customer_id: &str,
        limit: u8,
    ) -> Result<Vec<InvoiceSummary>, BillingError> {
        let invoices = ListInvoice::new()
            .customer(customer_id)
            .limit(i64::from(limit))
            .send(&self.client)
            .await?;
        invoices.data.into_iter().map(invoice_summary).collect()
    }
}

fn idempotent(key: &str) -> Result<RequestStrategy, BillingError> {
    IdempotencyKey::new(key)
        .map(RequestStrategy::Idempotent)
        .map_err(|err| BillingError::IdempotencyKey(err.to_string()))
}

/// Ids are pasted into request paths unescaped: one holding `/`, `?` or `..`
/// would reach another endpoint, so only Stripe's own alphabet passes.
fn path_id(id: &str) -> Result<&str, BillingError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id)
    } else {
        Err(BillingError::InvalidId(id.to_owned()))
    }
}

/// The fields of a subscription Herd reads. async-stripe's full type refuses
/// the whole object when one field it requires is absent (an item's legacy
/// `plan`, which stripe-mock's fixtures lack): drift in fields Herd never reads
/// must not stop billing.
#[derive(miniserde::Deserialize)]
struct WireSubscription {
    id: String,
    /// An id: Herd never expands it.
    customer: String,
    status: String,
    items: WireList<WireItem>,
    metadata: BTreeMap<String, String>,
}

#[derive(miniserde::Deserialize)]
struct WireList<T> {
    data: Vec<T>,
}

#[derive(miniserde::Deserialize)]
struct WireItem {
    id: String,
    price: WirePrice,
}

#[derive(miniserde::Deserialize)]
struct WirePrice {
    id: String,
}

fn subscription_state(subscription: WireSubscription) -> Result<SubscriptionState, BillingError> {
    let status = subscription
        .status
        .parse()
        .map_err(|err: UnknownStatus| BillingError::Unexpected(err.to_string()))?;
    let item = subscription.items.data.into_iter().next();
    let (item_id, price_id) = item.map(|item| (item.id, item.price.id)).unzip();
    Ok(SubscriptionState {
        id: subscription.id,
        customer_id: subscription.customer,
        status,
        price_id,
        item_id,
        metadata: subscription.metadata,
    })
}

fn invoice_summary(invoice: Invoice) -> Result<InvoiceSummary, BillingError> {
    // Only previews of upcoming invoices lack an id, and listings hold none.
    let id = invoice
        .id
        .ok_or_else(|| BillingError::Unexpected("a listed invoice has no id".to_owned()))?;
    Ok(InvoiceSummary {
        id: id.to_string(),
        number: invoice.number,
        status: invoice.status.map(|status| status.as_str().to_owned()),
        amount_due: invoice.amount_due,
        amount_paid: invoice.amount_paid,
        currency: invoice.currency.to_string(),
        created: invoice.created,
        hosted_invoice_url: invoice.hosted_invoice_url,
        invoice_pdf: invoice.invoice_pdf,
    })
}
