//! Billing: Stripe's events applied to instances, and what follows from a
//! subscription's state. Paid: provision, or resume a suspended instance.
//! Past due: keep serving and warn. Unpaid or canceled: suspend (workloads at
//! zero, data kept). Suspended past the retention period: a final export,
//! then the deletion.
//!
//! The webhook endpoint records each event with the job applying it; the job
//! marks the event applied in the transaction of its effect, so an event
//! delivered again has no second effect. Stripe delivers out of order: a
//! subscription's status is applied only if it was reported later than the
//! one applied before, and when two reports carry the same second the
//! subscription's current state is read from Stripe.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use herd_core::billing::{Entitlement, SubscriptionStatus};
use herd_core::lifecycle::InstanceState;
use herd_db::audit::{Actor, AuditEntry};
use herd_db::billing::StripeEvent;
use herd_db::jobs::NewJob;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use crate::{InstanceJob, JobError, Services};

pub const EVENT_KIND: &str = "stripe_event";

/// The events Herd acts on; every other type is acknowledged and ignored.
pub const HANDLED_EVENTS: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
];

/// Attempts of an event's job: Stripe itself retries for days, Herd's own
/// attempts only need to outlast a restart of the database.
const EVENT_ATTEMPTS: i32 = 10;
/// Attempts of a paid order's provisioning, as for any order.
const PROVISION_ATTEMPTS: i32 = 10;
/// How often suspended instances are checked against the retention period.
const RETENTION_SWEEP: Duration = Duration::from_secs(30);

/// Billing as configured; without it, operators assign plans by hand.
pub struct BillingSettings {
    pub stripe: herd_billing::Billing,
    /// Every secret a webhook may be signed with (several during a rotation).
    pub webhook_secrets: Vec<String>,
    /// Herd's address as customers reach it: checkout and the portal send them back here.
    pub public_url: Url,
    /// How long a suspended instance is kept before its final export and deletion.
    pub retention: chrono::Duration,
}

impl fmt::Debug for BillingSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BillingSettings")
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("public_url", &self.public_url.as_str())
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventJob {
    pub event_id: String,
}

/// Records a received event and queues the job applying it, in the caller's
/// transaction. `false` when the event was received before.
pub async fn receive_event(
    conn: &mut AsyncPgConnection,
    id: &str,
    type_: &str,
    created: DateTime<Utc>,
    payload: &Value,
) -> Result<bool, JobError> {
    if !herd_db::billing::record_event(conn, id, type_, created, payload).await? {
        return Ok(false);
    }
    herd_db::jobs::enqueue(
        conn,
        NewJob {
            kind: EVENT_KIND,
            payload: json!({ "event_id": id }),
            dedupe_key: Some(&format!("stripe:{id}")),
            max_attempts: EVENT_ATTEMPTS,
        },
    )
    .await?;
    Ok(true)
}

/// What an event means for Herd.
#[derive(Debug, Clone, PartialEq)]
enum Effect {
    /// A checkout completed: the order is paid for.
    Paid {
        instance_id: Uuid,
        subscription_id: Option<String>,
    },
    /// A checkout expired unpaid: the order is dropped.
    Abandoned {
        instance_id: Uuid,
    },
    /// A subscription reports its status.
    Status {
        subscription_id: String,
        /// From the metadata the checkout gave the subscription.
        instance_id: Option<Uuid>,
        status: SubscriptionStatus,
    },
    Nothing,
}

fn effect_of(event: &StripeEvent) -> Result<Effect, JobError> {
    let object = &event.payload["data"]["object"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let instance_id = object["metadata"]["instance_id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok());
    let malformed = |what: &str| JobError::Payload(format!("event {}: {what}", event.id));
    Ok(match event.type_.as_str() {
        "checkout.session.completed" => Effect::Paid {
            instance_id: instance_id.ok_or_else(|| malformed("no instance in its metadata"))?,
            subscription_id: text(&object["subscription"]),
        },
        "checkout.session.expired" => Effect::Abandoned {
            instance_id: instance_id.ok_or_else(|| malformed("no instance in its metadata"))?,
        },
        "invoice.paid" => match text(&object["subscription"])
            .or_else(|| text(&object["parent"]["subscription_details"]["subscription"]))
        {
            Some(subscription_id) => Effect::Status {
                subscription_id,
                instance_id: None,
                status: SubscriptionStatus::Active,
            },
            None => Effect::Nothing,
        },
        type_ if type_.starts_with("customer.subscription.") => Effect::Status {
            subscription_id: text(&object["id"]).ok_or_else(|| malformed("no subscription id"))?,
            instance_id,
            status: object["status"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(|err| malformed(&format!("{err}")))?,
        },
        _ => Effect::Nothing,
    })
}

/// Applies one recorded event, once.
pub async fn apply_event(services: &Services, job: &EventJob) -> Result<(), JobError> {
    let event = {
        let mut conn = services.conn().await?;
        herd_db::billing::load_event(&mut conn, &job.event_id)
            .await?
            .ok_or_else(|| JobError::Payload(format!("event {} is not recorded", job.event_id)))?
    };
    if event.applied_at.is_some() {
        return Ok(());
    }
    let effect = settle_tie(services, effect_of(&event)?, event.created_at).await?;
    let (id, at) = (event.id.clone(), event.created_at);
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async move |conn| {
        if herd_db::billing::mark_applied(conn, &id).await? {
            apply(conn, effect, at, &id).await?;
        }
        Ok(())
    })
    .await
}

/// Two reports of one second cannot be ordered by their time: Stripe's
/// current state decides.
async fn settle_tie(
    services: &Services,
    effect: Effect,
    at: DateTime<Utc>,
) -> Result<Effect, JobError> {
    let Effect::Status {
        subscription_id,
        instance_id,
        status,
    } = effect
    else {
        return Ok(effect);
    };
    let applied_at = {
        let mut conn = services.conn().await?;
        herd_db::billing::find_by_stripe_subscription(&mut conn, &subscription_id)
            .await?
            .and_then(|s| s.status_at)
    };
    let status = match (&services.billing, applied_at) {
        (Some(billing), Some(applied)) if applied == at => {
            billing.stripe.subscription(&subscription_id).await?.status
        }
        _ => status,
    };
    Ok(Effect::Status {
        subscription_id,
        instance_id,
        status,
    })
}

async fn apply(
    conn: &mut AsyncPgConnection,
    effect: Effect,
    at: DateTime<Utc>,
    event_id: &str,
) -> Result<(), JobError> {
    match effect {
        Effect::Nothing => Ok(()),
        Effect::Paid {
            instance_id,
            subscription_id,
        } => {
            if herd_db::billing::find_subscription(conn, instance_id)
                .await?
                .is_none()
            {
                return Ok(());
            }
            if let Some(subscription_id) = &subscription_id {
                herd_db::billing::link_subscription(conn, instance_id, subscription_id, None)
                    .await?;
            }
            herd_db::billing::apply_status(conn, instance_id, "active", at).await?;
            entitled(conn, instance_id, Entitlement::Serve, event_id).await
        }
        Effect::Abandoned { instance_id } => {
            let Some(instance) = herd_db::instances::load_instance(conn, instance_id).await? else {
                return Ok(());
            };
            if instance.state != InstanceState::Pending {
                return Ok(());
            }
            crate::delete::request(
                conn,
                instance_id,
                "billing",
                "instance.checkout_expired",
                json!({ "event": event_id }),
            )
            .await
        }
        Effect::Status {
            subscription_id,
            instance_id,
            status,
        } => {
            let known =
                herd_db::billing::find_by_stripe_subscription(conn, &subscription_id).await?;
            let instance_id = match (known, instance_id) {
                (Some(subscription), _) => subscription.instance_id,
                // The subscription's own event came before the checkout's.
                (None, Some(instance_id))
                    if herd_db::billing::find_subscription(conn, instance_id)
                        .await?
                        .is_some() =>
                {
                    herd_db::billing::link_subscription(conn, instance_id, &subscription_id, None)
                        .await?;
                    instance_id
                }
                // Not a subscription of Herd's.
                _ => return Ok(()),
            };
            let stored = serde_json::to_value(status).expect("a status serialises");
            let name = stored.as_str().unwrap_or_default();
            if !herd_db::billing::apply_status(conn, instance_id, name, at).await? {
                return Ok(());
            }
            entitled(conn, instance_id, status.entitlement(), event_id).await
        }
    }
}

/// Brings the instance where its subscription says it should be.
async fn entitled(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    entitlement: Entitlement,
    event_id: &str,
) -> Result<(), JobError> {
    let Some(instance) = herd_db::instances::load_instance(conn, instance_id).await? else {
        return Ok(());
    };
    let facts = json!({ "instance_id": instance_id, "event": event_id });
    match (entitlement, &instance.state) {
        (Entitlement::Serve, InstanceState::Pending) => start_provisioning(conn, instance_id).await,
        (Entitlement::Serve, InstanceState::Suspended) => {
            herd_db::billing::set_suspended_at(conn, instance_id, None).await?;
            crate::changes::start(
                conn,
                instance_id,
                &crate::changes::RESUME,
                Actor::System("billing"),
                facts,
            )
            .await?;
            Ok(())
        }
        (Entitlement::ServeWithWarning, _) => {
            herd_db::outbox::publish(conn, "billing.payment_failed", facts.clone()).await?;
            record(conn, "billing.past_due", facts).await
        }
        (
            Entitlement::Suspend,
            InstanceState::Running | InstanceState::Updating | InstanceState::Failed { .. },
        ) => {
            herd_db::billing::set_suspended_at(conn, instance_id, Some(Utc::now())).await?;
            crate::changes::start(
                conn,
                instance_id,
                &crate::changes::SUSPEND,
                Actor::System("billing"),
                facts,
            )
            .await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn record(
    conn: &mut AsyncPgConnection,
    action: &'static str,
    facts: Value,
) -> Result<(), JobError> {
    let object_id = facts["instance_id"].as_str().unwrap_or_default().to_owned();
    herd_db::audit::record(
        conn,
        AuditEntry {
            actor: Actor::System("billing"),
            action,
            object_kind: "instance",
            object_id,
            details: facts,
        },
    )
    .await?;
    Ok(())
}

/// Queues the provisioning an order paid for: the operation the order
/// started gets its job now.
async fn start_provisioning(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
) -> Result<(), JobError> {
    let Some(operation_id) =
        herd_db::operations::waiting_operation(conn, instance_id, "provision").await?
    else {
        return Ok(());
    };
    let job = herd_db::jobs::enqueue(
        conn,
        NewJob {
            kind: crate::provision::KIND,
            payload: serde_json::to_value(InstanceJob {
                instance_id,
                operation_id,
                archive: None,
            })
            .expect("a job payload always serialises"),
            dedupe_key: Some(&format!("provision:{instance_id}")),
            max_attempts: PROVISION_ATTEMPTS,
        },
    )
    .await?;
    herd_db::operations::set_job(conn, operation_id, job.0).await?;
    Ok(())
}

/// Starts the final export of every instance suspended past the retention
/// period; the export deletes the instance once it is complete.
pub async fn run_retention(services: Arc<Services>, shutdown: CancellationToken) {
    let Some(billing) = services.billing.clone() else {
        return;
    };
    while !shutdown.is_cancelled() {
        if let Err(err) = sweep_retention(&services, &billing).await {
            tracing::warn!(error = %err, "cannot check suspended instances yet");
        }
        tokio::select! {
            () = tokio::time::sleep(RETENTION_SWEEP) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

async fn sweep_retention(services: &Services, billing: &BillingSettings) -> Result<(), JobError> {
    let due = {
        let mut conn = services.conn().await?;
        herd_db::billing::due_for_final_export(&mut conn, Utc::now() - billing.retention, 100)
            .await?
    };
    for subscription in due {
        let instance_id = subscription.instance_id;
        let sealer = services.sealer.clone();
        let mut conn = services.conn().await?;
        conn.transaction::<_, JobError, _>(async move |conn| {
            let (export, _) = crate::export::start(
                conn,
                &sealer,
                crate::export::StartExport {
                    instance_id,
                    requested_by: None,
                    compressed: true,
                    recipient: None,
                    push: None,
                    final_export: true,
                },
            )
            .await?;
            herd_db::billing::set_final_export(conn, instance_id, export.id).await?;
            record(
                conn,
                "instance.final_export",
                json!({ "instance_id": instance_id, "export_id": export.id }),
            )
            .await
        })
        .await?;
    }
    Ok(())
}
