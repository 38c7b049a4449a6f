//! What a subscription's state means for the instance it pays for.
//!
//! Stripe reports a subscription's status; Herd decides from it alone, never
//! from the order in which events arrived, so a late event cannot undo a
//! newer state: the caller reads the subscription's current status from
//! Stripe and asks here what the instance should be.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A Stripe subscription status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Unpaid,
    Canceled,
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{0}` is not a Stripe subscription status")]
pub struct UnknownStatus(pub String);

impl FromStr for SubscriptionStatus {
    type Err = UnknownStatus;

    fn from_str(status: &str) -> Result<Self, Self::Err> {
        Ok(match status {
            "incomplete" => SubscriptionStatus::Incomplete,
            "incomplete_expired" => SubscriptionStatus::IncompleteExpired,
            "trialing" => SubscriptionStatus::Trialing,
            "active" => SubscriptionStatus::Active,
            "past_due" => SubscriptionStatus::PastDue,
            "unpaid" => SubscriptionStatus::Unpaid,
            "canceled" => SubscriptionStatus::Canceled,
            "paused" => SubscriptionStatus::Paused,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

/// What the instance should be, given its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entitlement {
    /// Paid for: provision it, or resume it if suspended.
    Serve,
    /// A payment failed and Stripe is retrying: keep serving, warn the customer.
    ServeWithWarning,
    /// Not paid for: scale to zero, keep the data, allow exports.
    Suspend,
    /// Nothing was ever paid (checkout abandoned): nothing to run.
    Nothing,
}

impl SubscriptionStatus {
    pub fn entitlement(self) -> Entitlement {
        match self {
            SubscriptionStatus::Active | SubscriptionStatus::Trialing => Entitlement::Serve,
            SubscriptionStatus::PastDue => Entitlement::ServeWithWarning,
            SubscriptionStatus::Unpaid
            | SubscriptionStatus::Canceled
            | SubscriptionStatus::Paused => Entitlement::Suspend,
            SubscriptionStatus::Incomplete | SubscriptionStatus::IncompleteExpired => {
                Entitlement::Nothing
            }
        }
    }
}

/// When a suspended instance is deleted: `retention_days` after its
/// suspension (Unix seconds), unless its subscription resumes before.
pub fn deletion_due_at(suspended_at: i64, retention_days: u32) -> i64 {
    suspended_at + i64::from(retention_days) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_an_entitlement() {
        let cases = [
            ("active", Entitlement::Serve),
            ("trialing", Entitlement::Serve),
            ("past_due", Entitlement::ServeWithWarning),
            ("unpaid", Entitlement::Suspend),
            ("canceled", Entitlement::Suspend),
            ("paused", Entitlement::Suspend),
            ("incomplete", Entitlement::Nothing),
            ("incomplete_expired", Entitlement::Nothing),
        ];
        for (status, expected) in cases {
            assert_eq!(
                status.parse::<SubscriptionStatus>().unwrap().entitlement(),
                expected,
                "{status}"
            );
        }
        assert!("cancelled".parse::<SubscriptionStatus>().is_err());
    }

    #[test]
    fn deletion_waits_the_retention_period() {
        assert_eq!(deletion_due_at(1_000, 30), 1_000 + 30 * 86_400);
        assert_eq!(deletion_due_at(1_000, 0), 1_000);
    }
}
