//! Ordering and deleting instances.
//!
//! Each is one transaction that changes the instance, enqueues the job doing
//! the work, records the operation people follow, announces the change on
//! the outbox and writes the audit trail: all of it happens or none, so a
//! worker never sees a job without its instance, nor a customer an instance
//! nobody will provision.

use actix_web::http::StatusCode;
use std::collections::BTreeMap;

use diesel_async::AsyncConnection;
use diesel_async::AsyncPgConnection;
use herd_core::domain::Domain;
use herd_core::lifecycle::{InstanceState, LifecycleEvent, Request};
use herd_core::scaling::Scaling;
use herd_core::spec::InstanceOrigin;
use herd_core::version::{DEFAULT_VERSION, MastodonVersion, OLDEST_SUPPORTED};
use herd_db::DbError;
use herd_db::audit::{self, Actor, AuditEntry};
use herd_db::idempotency::{self, StoredResponse};
use herd_db::instances::{self, Instance, NewInstance};
use herd_db::jobs::{self, JobId, NewJob};
use herd_db::operations::{self, NewOperation, Operation};
use herd_db::{Sealer, outbox, plans};
use herd_jobs::{InstanceJob, StagedArchive};
use serde_json::json;
use uuid::Uuid;

use crate::auth::Principal;
use crate::body::HashedJson;
use crate::dto::{Accepted, CreateInstanceRequest, UpgradeInstanceRequest};
use crate::email::check_email;
use crate::{ApiState, Problem};

/// Attempts a provisioning or deletion job gets before an operator must look:
/// enough to ride out a cluster or database restart under backoff.
const JOB_ATTEMPTS: i32 = 10;

/// One kind of background work on an instance: the job doing it, the
/// operation people follow it by, and how the change is announced.
struct Work {
    job_kind: &'static str,
    /// Keeps one job of this kind per instance however often it is asked for.
    dedupe_prefix: &'static str,
    operation_kind: &'static str,
    /// The steps of the job in the order they run, so an operation lists its
    /// progress as the work proceeds.
    steps: &'static [&'static str],
    outbox_topic: &'static str,
    audit_action: &'static str,
}

const PROVISION: Work = Work {
    job_kind: herd_jobs::kinds::PROVISION_INSTANCE,
    dedupe_prefix: "provision",
    operation_kind: "provision",
    steps: &[
        "place",
        "secrets",
        "tenant_database",
        "tenant_bucket",
        "apply",
        "ready",
    ],
    outbox_topic: "instance.created",
    audit_action: "instance.create",
};

const IMPORT: Work = Work {
    job_kind: herd_jobs::kinds::PROVISION_INSTANCE,
    dedupe_prefix: "provision",
    operation_kind: "import",
    steps: &[
        "place",
        "secrets",
        "tenant_database",
        "tenant_bucket",
        "restore",
        "apply",
        "ready",
    ],
    outbox_topic: "instance.imported",
    audit_action: "instance.import",
};

const DELETE: Work = Work {
    job_kind: herd_jobs::kinds::DELETE_INSTANCE,
    dedupe_prefix: "delete",
    operation_kind: "delete",
    steps: herd_jobs::DELETE_STEPS,
    outbox_topic: "instance.deletion_requested",
    audit_action: "instance.delete",
};

impl Work {
    async fn enqueue(
        &self,
        conn: &mut AsyncPgConnection,
        instance_id: Uuid,
        operation_id: Uuid,
        archive: Option<&StagedArchive>,
    ) -> Result<JobId, DbError> {
        let payload = InstanceJob {
            instance_id,
            operation_id,
            archive: archive.cloned(),
        };
        jobs::enqueue(
            conn,
            NewJob {
                kind: self.job_kind,
                payload: serde_json::to_value(payload).expect("a job payload always serialises"),
                dedupe_key: Some(&format!("{}:{instance_id}", self.dedupe_prefix)),
                max_attempts: JOB_ATTEMPTS,
            },
        )
        .await
    }

    async fn start_operation(
        &self,
        conn: &mut AsyncPgConnection,
        principal: &Principal,
        instance_id: Uuid,
        operation_id: Uuid,
        job: Option<JobId>,
    ) -> Result<Operation, DbError> {
        operations::create_operation(
            conn,
            NewOperation {
                id: operation_id,
                instance_id,
                kind: self.operation_kind,
                steps: self.steps,
                started_by: Some(principal.0.account_id),
                job_id: job.map(|job| job.0),
            },
        )
        .await
    }

    /// Publishes the change on the outbox and records it in the audit trail.
    async fn announce(
        &self,
        conn: &mut AsyncPgConnection,
        principal: &Principal,
        instance_id: Uuid,
        facts: serde_json::Value,
    ) -> Result<(), DbError> {
        outbox::publish(conn, self.outbox_topic, facts.clone()).await?;
        audit::record(
            conn,
            AuditEntry {
                actor: Actor::Account(principal.0),
                action: self.audit_action,
                object_kind: "instance",
                object_id: instance_id.to_string(),
                details: facts,
            },
        )
        .await
    }
}

/// A status and JSON body, as first answered and as replayed for an idempotency key.
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

pub(crate) fn accepted(instance: Instance, operation: Operation) -> Answer {
    let body = Accepted {
        instance: instance.into(),
        operation: operation.into(),
        checkout: None,
    };
    Answer {
        status: StatusCode::ACCEPTED,
        body: serde_json::to_value(body).expect("API types always serialise"),
    }
}

/// An order that passed every check that needs no lock.
pub(crate) struct Order {
    pub(crate) domain: Domain,
    pub(crate) web_domain: Domain,
    pub(crate) plan: String,
    pub(crate) version: MastodonVersion,
    pub(crate) owner_email: String,
}

pub(crate) fn unprocessable(
    code: &'static str,
    title: &str,
    field: &str,
    detail: String,
) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, title, detail)
        .with_extensions(json!({ "field": field }))
}

fn domain_unavailable(domain: &Domain) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "domain_unavailable",
        "Domain unavailable",
        format!("the domain {domain} cannot be ordered"),
    )
}

fn parse_domain(field: &str, input: &str) -> Result<Domain, Problem> {
    Domain::parse(input)
        .map_err(|err| unprocessable("invalid_domain", "Invalid domain", field, err.to_string()))
}

fn parse_version(input: Option<&str>) -> Result<MastodonVersion, Problem> {
    let Some(input) = input else {
        return Ok(DEFAULT_VERSION);
    };
    let invalid =
        |detail: String| unprocessable("invalid_version", "Invalid version", "version", detail);
    let version: MastodonVersion = input.parse().map_err(|err| invalid(format!("{err}")))?;
    if !version.is_supported() {
        return Err(invalid(format!(
            "Mastodon {version} is not hosted; the oldest hosted version is {OLDEST_SUPPORTED}"
        )));
    }
    Ok(version)
}

pub(crate) async fn check_order(
    conn: &mut AsyncPgConnection,
    request: &CreateInstanceRequest,
) -> Result<Order, Problem> {
    let domain = parse_domain("domain", &request.domain)?;
    let web_domain = match &request.web_domain {
        Some(web_domain) => parse_domain("web_domain", web_domain)?,
        None => domain.clone(),
    };
    if plans::find_offered_plan(conn, &request.plan)
        .await?
        .is_none()
    {
        return Err(unprocessable(
            "unknown_plan",
            "Unknown plan",
            "plan",
            format!("no plan named `{}` is offered", request.plan),
        ));
    }
    let version = parse_version(request.version.as_deref())?;
    let owner_email = check_email(&request.owner_email).map_err(|reason| {
        unprocessable("invalid_email", "Invalid e-mail", "owner_email", reason)
    })?;
    for name in [&domain, &web_domain] {
        if instances::is_reserved(conn, name.as_str()).await? {
            return Err(domain_unavailable(name));
        }
    }
    Ok(Order {
        domain,
        web_domain,
        plan: request.plan.clone(),
        version,
        owner_email,
    })
}

/// Places an order for `principal`. With an idempotency key, a retry with the
/// same body gets the first answer and changes nothing.
pub async fn place(
    state: &ApiState,
    principal: &Principal,
    request: HashedJson<CreateInstanceRequest>,
    key: Option<String>,
) -> Result<Answer, Problem> {
    let account = principal.0.account_id;
    let mut conn = state.connection().await?;
    if let Some(key) = &key
        && let Some(stored) = idempotency::find_response(&mut conn, account, key).await?
    {
        return replay(stored, &request.sha256);
    }
    let order = check_order(&mut conn, &request.value).await?;
    let source = if state.billing.is_some() {
        let priced = plans::find_offered_plan(&mut conn, &order.plan)
            .await?
            .and_then(|plan| plan.stripe_price_id)
            .is_some();
        if !priced {
            return Err(crate::billing::plan_not_for_sale(&order.plan));
        }
        Source::Unpaid
    } else {
        Source::Fresh
    };
    let created = conn
        .transaction(async |conn| {
            let (instance, operation) = create(conn, principal, &order, &source).await?;
            let answer = accepted(instance, operation);
            if let Some(key) = &key {
                let stored = StoredResponse {
                    request_sha256: request.sha256.clone(),
                    status: answer.status.as_u16(),
                    body: answer.body.clone(),
                };
                idempotency::store_response(conn, account, key, &stored).await?;
            }
            Ok::<_, DbError>(answer)
        })
        .await;
    match created {
        Ok(answer) => Ok(answer),
        Err(err) => {
            // A concurrent request with the same key committed first (this
            // one then collides on the domain or the key): its answer is ours.
            if let Some(key) = &key
                && let Some(stored) = idempotency::find_response(&mut conn, account, key).await?
            {
                return replay(stored, &request.sha256);
            }
            Err(err.into())
        }
    }
}

fn replay(stored: StoredResponse, request_sha256: &[u8]) -> Result<Answer, Problem> {
    if stored.request_sha256 != request_sha256 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency key reused",
            "the Idempotency-Key was used before with a different request body",
        ));
    }
    Ok(Answer {
        status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body: stored.body,
    })
}

/// Where a new instance's data comes from.
pub(crate) enum Source<'a> {
    /// Nothing: the setup creates an empty server.
    Fresh,
    /// Nothing, once paid for: provisioning waits for Stripe to report the
    /// checkout completed.
    Unpaid,
    /// A verified archive, with the secrets it carries over.
    Archive {
        staged: &'a StagedArchive,
        secrets: &'a BTreeMap<String, String>,
        sealer: &'a Sealer,
    },
}

pub(crate) async fn create(
    conn: &mut AsyncPgConnection,
    principal: &Principal,
    order: &Order,
    source: &Source<'_>,
) -> Result<(Instance, Operation), DbError> {
    let instance_id = Uuid::now_v7();
    let operation_id = Uuid::now_v7();
    let version = order.version.to_string();
    let (work, origin, archive) = match source {
        Source::Fresh | Source::Unpaid => (&PROVISION, InstanceOrigin::Ordered, None),
        Source::Archive { staged, .. } => (&IMPORT, InstanceOrigin::Imported, Some(*staged)),
    };
    let instance = instances::create_instance(
        conn,
        NewInstance {
            id: instance_id,
            owner_id: principal.0.account_id,
            domain: order.domain.as_str(),
            web_domain: order.web_domain.as_str(),
            owner_email: &order.owner_email,
            plan_name: &order.plan,
            version: &version,
            origin,
        },
    )
    .await?;
    if let Source::Archive {
        secrets, sealer, ..
    } = source
    {
        instances::keep_secrets(conn, sealer, instance_id, secrets).await?;
    }
    let job = match source {
        Source::Unpaid => {
            herd_db::billing::create_subscription(conn, instance_id).await?;
            None
        }
        _ => Some(
            work.enqueue(conn, instance_id, operation_id, archive)
                .await?,
        ),
    };
    let operation = work
        .start_operation(conn, principal, instance_id, operation_id, job)
        .await?;
    let facts = json!({
        "instance_id": instance_id,
        "operation_id": operation_id,
        "owner_id": principal.0.account_id,
        "domain": order.domain,
        "web_domain": order.web_domain,
        "plan": order.plan,
        "version": version,
        "origin": origin.name(),
    });
    work.announce(conn, principal, instance_id, facts).await?;
    Ok((instance, operation))
}

fn gone() -> Problem {
    Problem::new(
        StatusCode::GONE,
        "gone",
        "Gone",
        "the instance has been deleted",
    )
}

/// Starts deleting an instance the principal may see. Asking again while the
/// deletion runs answers with the running deletion and changes nothing.
pub async fn delete(state: &ApiState, principal: &Principal, id: Uuid) -> Result<Answer, Problem> {
    let mut conn = state.connection().await?;
    conn.transaction(async |conn| {
        let instance = instances::find_instance(conn, &principal.0, id)
            .await?
            .ok_or_else(Problem::not_found)?;
        if instance.state == InstanceState::Deleted {
            return Err(gone());
        }
        herd_jobs::changes::ensure_free(conn, id, Request::Deletion).await?;
        let operation_id = Uuid::now_v7();
        // A concurrent first request holds the dedupe key until it commits,
        // so this waits for it and then finds its job and operation.
        let job = DELETE.enqueue(conn, id, operation_id, None).await?;
        if let Some(operation) = operations::find_operation_by_job(conn, job.0).await? {
            return Ok(accepted(instance, operation));
        }
        let previous = instance.state.name();
        let instance = instances::transition(conn, id, &LifecycleEvent::DeletionRequested).await?;
        let operation = DELETE
            .start_operation(conn, principal, id, operation_id, Some(job))
            .await?;
        let facts = json!({
            "instance_id": id,
            "operation_id": operation_id,
            "domain": instance.domain,
            "previous_state": previous,
        });
        DELETE.announce(conn, principal, id, facts).await?;
        Ok(accepted(instance, operation))
    })
    .await
}

impl From<Answer> for actix_web::HttpResponse {
    fn from(answer: Answer) -> Self {
        actix_web::HttpResponse::build(answer.status).json(answer.body)
    }
}

/// Moves an instance to another plan. With billing, the customer's
/// subscription moves to the plan's price first, prorated, and the instance
/// is resized once Stripe accepted; without billing, only operators may.
pub async fn change_plan(
    state: &ApiState,
    principal: &Principal,
    id: Uuid,
    plan: &str,
) -> Result<Answer, Problem> {
    let (instance, price, subscription) = {
        let mut conn = state.connection().await?;
        let instance = instances::find_instance(&mut conn, &principal.0, id)
            .await?
            .ok_or_else(Problem::not_found)?;
        // Checked before Stripe changes the price: a refused change changes nothing.
        herd_jobs::changes::ensure_free(&mut conn, id, Request::Change).await?;
        let offered = plans::find_offered_plan(&mut conn, plan)
            .await?
            .ok_or_else(|| {
                unprocessable(
                    "unknown_plan",
                    "Unknown plan",
                    "plan",
                    format!("no plan named `{plan}` is offered"),
                )
            })?;
        let subscription = herd_db::billing::find_subscription(&mut conn, id).await?;
        (instance, offered.stripe_price_id, subscription)
    };
    if instance.state != InstanceState::Running {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "Instance not resizable",
            format!(
                "an instance that is {} cannot change its plan now",
                instance.state.name()
            ),
        ));
    }
    if instance.plan_name == plan {
        return Err(unprocessable(
            "same_plan",
            "Same plan",
            "plan",
            format!("the instance is on `{plan}` already"),
        ));
    }
    match &state.billing {
        Some(billing) => {
            let price = price.ok_or_else(|| crate::billing::plan_not_for_sale(plan))?;
            let subscription_id = subscription
                .and_then(|s| s.stripe_subscription_id)
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::CONFLICT,
                        "invalid_state",
                        "No subscription",
                        "the instance has no subscription to change",
                    )
                })?;
            let current = billing
                .stripe
                .subscription(&subscription_id)
                .await
                .map_err(|err| crate::billing::stripe_failed(&err))?;
            let item = current.item_id.ok_or_else(|| {
                Problem::internal(&format!("subscription {subscription_id} has no item"))
            })?;
            billing
                .stripe
                .change_subscription_price(
                    &subscription_id,
                    &item,
                    &price,
                    &format!(
                        "plan:{id}:{plan}:{}",
                        instance.updated_at.timestamp_micros()
                    ),
                )
                .await
                .map_err(|err| crate::billing::stripe_failed(&err))?;
        }
        None if !principal.is_operator() => {
            return Err(crate::billing::settings(state).expect_err("billing is off"));
        }
        None => {}
    }
    let previous = instance.plan_name;
    let mut conn = state.connection().await?;
    conn.transaction(async |conn| {
        instances::set_plan(conn, id, plan).await?;
        instances::set_scaling(conn, id, &Scaling::default()).await?;
        let (instance, operation) = herd_jobs::changes::start(
            conn,
            id,
            &herd_jobs::changes::RESIZE,
            Actor::Account(principal.0),
            json!({ "from": previous, "plan": plan }),
        )
        .await?;
        Ok::<_, Problem>(accepted(instance, operation))
    })
    .await
}

pub enum Suspension {
    Suspend,
    Resume,
}

/// Suspends or resumes an instance by an operator's hand.
pub async fn suspension(
    state: &ApiState,
    principal: &Principal,
    id: Uuid,
    change: Suspension,
) -> Result<Answer, Problem> {
    let mut conn = state.connection().await?;
    conn.transaction(async |conn| {
        instances::find_instance(conn, &principal.0, id)
            .await?
            .ok_or_else(Problem::not_found)?;
        principal.require_operator()?;
        let change = match change {
            Suspension::Suspend => &herd_jobs::changes::SUSPEND,
            Suspension::Resume => &herd_jobs::changes::RESUME,
        };
        let (instance, operation) =
            herd_jobs::changes::start(conn, id, change, Actor::Account(principal.0), json!({}))
                .await?;
        Ok::<_, Problem>(accepted(instance, operation))
    })
    .await
}

/// The bounds of a rollout's timeout, in seconds.
const ROLLOUT_TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 5..=86_400;

/// The rollout timeout asked for, or the default; checked against the bounds.
pub(crate) fn rollout_timeout(seconds: Option<u32>) -> Result<std::time::Duration, Problem> {
    match seconds {
        None => Ok(herd_jobs::upgrade::DEFAULT_ROLLOUT_TIMEOUT),
        Some(seconds) if ROLLOUT_TIMEOUT_SECONDS.contains(&seconds) => {
            Ok(std::time::Duration::from_secs(seconds.into()))
        }
        Some(seconds) => Err(unprocessable(
            "invalid_rollout_timeout",
            "Invalid rollout timeout",
            "rollout_timeout_seconds",
            format!(
                "{seconds} is not between {} and {} seconds",
                ROLLOUT_TIMEOUT_SECONDS.start(),
                ROLLOUT_TIMEOUT_SECONDS.end()
            ),
        )),
    }
}

/// Upgrades an instance to a newer Mastodon version, by its owner or an operator.
pub async fn upgrade(
    state: &ApiState,
    principal: &Principal,
    id: Uuid,
    request: &UpgradeInstanceRequest,
) -> Result<Answer, Problem> {
    let to: MastodonVersion = request.version.parse().map_err(|err| {
        unprocessable(
            "invalid_version",
            "Invalid version",
            "version",
            format!("{err}"),
        )
    })?;
    let rollout_timeout = rollout_timeout(request.rollout_timeout_seconds)?;
    let request = herd_jobs::upgrade::UpgradeRequest {
        to,
        rollout_timeout,
    };
    let mut conn = state.connection().await?;
    conn.transaction(async |conn| {
        instances::find_instance(conn, &principal.0, id)
            .await?
            .ok_or_else(Problem::not_found)?;
        let (instance, operation) =
            herd_jobs::upgrade::start(conn, id, &request, Actor::Account(principal.0)).await?;
        Ok::<_, Problem>(accepted(instance, operation))
    })
    .await
}

/// Scales an instance by hand on top of its plan. Operators only: what the
/// customer pays for is the plan.
pub async fn scale(
    state: &ApiState,
    principal: &Principal,
    id: Uuid,
    change: Scaling,
) -> Result<Answer, Problem> {
    let mut conn = state.connection().await?;
    conn.transaction(async |conn| {
        let instance = instances::find_instance(conn, &principal.0, id)
            .await?
            .ok_or_else(Problem::not_found)?;
        principal.require_operator()?;
        let plan = plans::find_plan(conn, &instance.plan_name)
            .await?
            .ok_or_else(|| Problem::internal(&"the instance's plan is gone"))?
            .plan;
        let scaling = instances::load_scaling(conn, id).await?.merged(&change);
        plan.scaled(&scaling).map_err(|err| {
            unprocessable(
                "invalid_scaling",
                "Invalid scaling",
                "scaling",
                err.to_string(),
            )
        })?;
        instances::set_scaling(conn, id, &scaling).await?;
        let (instance, operation) = herd_jobs::changes::start(
            conn,
            id,
            &herd_jobs::changes::SCALE,
            Actor::Account(principal.0),
            json!({ "scaling": scaling }),
        )
        .await?;
        Ok::<_, Problem>(accepted(instance, operation))
    })
    .await
}
