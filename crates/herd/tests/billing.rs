//! Billing through `herd serve` on the real local stack, with stripe-mock as
//! Stripe and webhooks signed as Stripe signs them: paid orders provision,
//! cancellation suspends, renewal resumes, retention ends in a final export
//! and the deletion; no event applies twice, out of order or not; no secret
//! reaches the log.

mod support;

use std::time::{Duration, Instant};

use herd_core::tenant::TenantNames;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use reqwest::Method;
use serde_json::{Value, json};
use support::stages::NeverReady;
use support::{Api, Installation, Server, stack_setting, unique};

const DEADLINE: Duration = Duration::from_secs(120);
const WEBHOOK_SECRET: &str = "whsec_current_0123456789";
const RETIRED_WEBHOOK_SECRET: &str = "whsec_retired_0123456789";

/// Billing on, against stripe-mock, with two webhook secrets as during a rotation.
fn serve_billing(
    installation: &Installation,
    retention_days: &str,
    log: Option<&std::path::Path>,
) -> Server {
    let key = stack_setting("HERD_STRIPE_SECRET_KEY");
    let base = stack_setting("HERD_STRIPE_API_BASE");
    let secrets = format!("{WEBHOOK_SECRET},{RETIRED_WEBHOOK_SECRET}");
    installation.serve_with(
        &[
            ("HERD_BILLING", "stripe"),
            ("HERD_STRIPE_SECRET_KEY", &key),
            ("HERD_STRIPE_API_BASE", &base),
            ("HERD_STRIPE_WEBHOOK_SECRETS", &secrets),
            ("HERD_PUBLIC_URL", "https://hosting.example.net/"),
            ("HERD_BILLING_RETENTION_DAYS", retention_days),
            ("HERD_LOG", "debug"),
        ],
        log,
    )
}

async fn count(installation: &Installation, query: &str) -> i64 {
    installation
        .sql()
        .await
        .query_one(query, &[])
        .await
        .unwrap()
        .get(0)
}

/// Puts the plans on sale as an operator does.
fn price_plans(installation: &Installation) {
    for plan in ["small", "medium"] {
        installation.run(&["plan", "price", plan, &format!("price_{plan}")], &[]);
    }
}

fn event(id: &str, type_: &str, created: i64, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "object": "event",
        "type": type_,
        "created": created,
        "livemode": false,
        "data": { "object": object },
    }))
    .unwrap()
}

async fn deliver(api: &Api, payload: &[u8], signature: &str) -> (u16, Value) {
    let response = api
        .http
        .post(format!("{}/webhooks/stripe", api.base))
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json")
        .body(payload.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deliver_signed(api: &Api, payload: &[u8]) -> (u16, Value) {
    let now = chrono::Utc::now().timestamp();
    let signature = herd_billing::webhook::sign(payload, now, WEBHOOK_SECRET);
    deliver(api, payload, &signature).await
}

fn subscription_event(
    id: &str,
    created: i64,
    subscription: &str,
    instance: &str,
    status: &str,
) -> Vec<u8> {
    event(
        id,
        "customer.subscription.updated",
        created,
        json!({
            "id": subscription,
            "object": "subscription",
            "status": status,
            "metadata": { "instance_id": instance },
        }),
    )
}

async fn instance_state(api: &Api, instance: &str) -> Value {
    let (status, body) = api
        .call(Method::GET, &format!("/api/v1/instances/{instance}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_for_state(api: &Api, instance: &str, wanted: &str) {
    let started = Instant::now();
    loop {
        let body = instance_state(api, instance).await;
        if body["state"] == wanted {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "never {wanted}: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The replicas the instance's web Deployment asks for.
async fn web_replicas(instance: &str) -> i32 {
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(
        herd_kube::client(None).await.unwrap(),
        &herd_kube::children::namespace_name(instance),
    );
    deployments
        .get("web")
        .await
        .unwrap()
        .spec
        .replicas
        .unwrap_or(1)
}

/// Waits until the web Deployment is scaled to zero (`false`) or up again (`true`).
async fn wait_for_web_serving(instance: &str, serving: bool) {
    let started = Instant::now();
    while (web_replicas(instance).await > 0) != serving {
        let wanted = if serving { "scaled up" } else { "at zero" };
        assert!(started.elapsed() < DEADLINE, "web never {wanted}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Orders an instance (at `version`, or the default) and pays for it with a
/// signed `checkout.session.completed`.
async fn paid_instance(
    api: &Api,
    domain: &str,
    subscription: &str,
    version: Option<&str>,
) -> String {
    let mut request =
        json!({"domain": domain, "plan": "small", "owner_email": "owner@example.org"});
    if let Some(version) = version {
        request["version"] = json!(version);
    }
    let (status, order) = api
        .call(Method::POST, "/api/v1/instances", Some(request))
        .await;
    assert_eq!(status, 202, "{order}");
    assert!(order["checkout"]["url"].as_str().is_some(), "{order}");
    let instance = order["instance"]["id"].as_str().unwrap().to_owned();
    let completed = event(
        &unique("evt_"),
        "checkout.session.completed",
        chrono::Utc::now().timestamp(),
        json!({
            "id": order["checkout"]["id"],
            "object": "checkout.session",
            "mode": "subscription",
            "subscription": subscription,
            "metadata": { "instance_id": instance },
        }),
    );
    let (status, _) = deliver_signed(api, &completed).await;
    assert_eq!(status, 200);
    api.assert_succeeds(order["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
    instance
}

#[tokio::test]
async fn payments_drive_the_lifecycle_and_no_event_applies_twice() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    price_plans(&installation);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("herd.log");
    let _server = serve_billing(&installation, "30", Some(&log));
    let api = installation.api(&format!("{}@example.com", unique("payer-")), "customer");
    api.wait_until_serving().await;

    // An order waits for its payment: the redirect back provisions nothing.
    let domain = format!("{}.example.social", unique("paid-"));
    let (status, order) = api
        .call(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"domain": domain, "plan": "small", "owner_email": "owner@example.org"})),
        )
        .await;
    assert_eq!(status, 202, "{order}");
    let instance = order["instance"]["id"].as_str().unwrap().to_owned();
    assert_eq!(order["instance"]["state"], "pending");
    assert!(
        order["checkout"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(instance_state(&api, &instance).await["state"], "pending");
    assert_eq!(
        count(
            &installation,
            "SELECT count(*) FROM jobs WHERE kind = 'provision_instance'"
        )
        .await,
        0
    );

    let subscription = unique("sub_");
    let now = chrono::Utc::now().timestamp();
    let completed = event(
        &unique("evt_"),
        "checkout.session.completed",
        now,
        json!({
            "id": order["checkout"]["id"],
            "object": "checkout.session",
            "mode": "subscription",
            "subscription": subscription,
            "metadata": { "instance_id": instance },
        }),
    );

    // Forged and stale deliveries answer 400 and record nothing.
    let forged = herd_billing::webhook::sign(&completed, now, "whsec_someone_else");
    let (status, problem) = deliver(&api, &completed, &forged).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "invalid_signature");
    let stale = herd_billing::webhook::sign(&completed, now - 301, WEBHOOK_SECRET);
    assert_eq!(deliver(&api, &completed, &stale).await.0, 400);
    assert_eq!(deliver(&api, &completed, "t=1,v1=zz").await.0, 400);
    assert_eq!(
        count(&installation, "SELECT count(*) FROM stripe_events").await,
        0
    );

    // The same event three times, once under the retired secret: one effect.
    let retired = herd_billing::webhook::sign(&completed, now, RETIRED_WEBHOOK_SECRET);
    assert_eq!(deliver(&api, &completed, &retired).await.0, 200);
    assert_eq!(deliver_signed(&api, &completed).await.0, 200);
    assert_eq!(deliver_signed(&api, &completed).await.0, 200);
    api.assert_succeeds(order["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
    assert_eq!(
        count(&installation, "SELECT count(*) FROM stripe_events").await,
        1
    );
    assert_eq!(
        count(
            &installation,
            "SELECT count(*) FROM jobs WHERE kind = 'provision_instance'"
        )
        .await,
        1
    );

    // Unknown types are acknowledged and change nothing.
    let unknown = event(
        &unique("evt_"),
        "customer.tax_id.created",
        now,
        json!({"id": "txi_1"}),
    );
    let (status, body) = deliver_signed(&api, &unknown).await;
    assert_eq!(status, 200);
    assert_eq!(body["handled"], false);
    assert_eq!(
        count(&installation, "SELECT count(*) FROM stripe_events").await,
        1
    );

    // Data written before the suspension is there after the renewal.
    let names = TenantNames::for_instance(&instance);
    let admin_url = installation
        .database_server_of(&instance)
        .await
        .expect("placed")
        .admin_url;
    let mut tenant_url = url::Url::parse(&admin_url).unwrap();
    tenant_url.set_path(&names.database);
    let (tenant, connection) = tokio_postgres::connect(tenant_url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    tenant
        .batch_execute("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('kept')")
        .await
        .unwrap();

    // Out of order: the cancellation (later) arrives before an update (earlier).
    let canceled = event(
        &unique("evt_"),
        "customer.subscription.deleted",
        now + 20,
        json!({"id": subscription, "object": "subscription", "status": "canceled",
               "metadata": {"instance_id": instance}}),
    );
    let earlier = subscription_event(
        &unique("evt_"),
        now + 10,
        &subscription,
        &instance,
        "active",
    );
    assert_eq!(deliver_signed(&api, &canceled).await.0, 200);
    assert_eq!(deliver_signed(&api, &earlier).await.0, 200);
    wait_for_state(&api, &instance, "suspended").await;
    wait_for_web_serving(&instance, false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(instance_state(&api, &instance).await["state"], "suspended");
    let suspended_row: i64 = tenant
        .query_one("SELECT count(*) FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(suspended_row, 1, "the database is intact while suspended");
    let suspended = instance_state(&api, &instance).await;
    assert_eq!(suspended["billing"]["status"], "canceled", "{suspended}");
    assert!(
        suspended["billing"]["deletion_due_at"].as_str().is_some(),
        "{suspended}"
    );

    // A suspended instance may still be exported.
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/exports"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // Renewal resumes it with the same data.
    let renewed = subscription_event(
        &unique("evt_"),
        now + 30,
        &subscription,
        &instance,
        "active",
    );
    assert_eq!(deliver_signed(&api, &renewed).await.0, 200);
    wait_for_state(&api, &instance, "running").await;
    wait_for_web_serving(&instance, true).await;
    let note: String = tenant
        .query_one("SELECT note FROM marker", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "kept");

    // Past due: still running, and the customer is warned.
    let past_due = subscription_event(
        &unique("evt_"),
        now + 40,
        &subscription,
        &instance,
        "past_due",
    );
    assert_eq!(deliver_signed(&api, &past_due).await.0, 200);
    let started = Instant::now();
    while count(
        &installation,
        "SELECT count(*) FROM outbox WHERE topic = 'billing.payment_failed'",
    )
    .await
        == 0
    {
        assert!(started.elapsed() < DEADLINE, "no warning");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let warned = instance_state(&api, &instance).await;
    assert_eq!(warned["state"], "running");
    assert_eq!(warned["billing"]["status"], "past_due", "{warned}");
    assert!(warned["billing"]["warning"].as_str().is_some(), "{warned}");

    // A plan change goes through Stripe, then resizes the instance.
    let (status, body) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/instances/{instance}"),
            Some(json!({"plan": "medium"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.assert_succeeds(body["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
    wait_for_state(&api, &instance, "running").await;
    assert_eq!(instance_state(&api, &instance).await["plan"], "medium");

    // The portal and the invoices come from Stripe.
    let (status, portal) = api.call(Method::POST, "/api/v1/billing/portal", None).await;
    assert_eq!(status, 200, "{portal}");
    assert!(portal["url"].as_str().unwrap().starts_with("http"));
    let (status, invoices) = api
        .call(Method::GET, "/api/v1/billing/invoices", None)
        .await;
    assert_eq!(status, 200, "{invoices}");
    assert!(invoices["invoices"].is_array());

    // Deleting ends the subscription.
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/instances/{instance}"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.assert_succeeds(body["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;

    // Not a byte of Stripe's key or the webhook secrets in the log.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("herd"), "the log was captured");
    for secret in [
        stack_setting("HERD_STRIPE_SECRET_KEY").as_str(),
        WEBHOOK_SECRET,
        RETIRED_WEBHOOK_SECRET,
    ] {
        assert!(!logged.contains(secret), "a secret reached the log");
    }
    installation.drop_database().await;
}

/// The images of the instance's Mastodon Deployments as they would be at `version`.
async fn mastodon_images_at(instance: &str, version: &str) -> Vec<String> {
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(
        herd_kube::client(None).await.unwrap(),
        &herd_kube::children::namespace_name(instance),
    );
    deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|deployment| {
            deployment.spec.template.spec.as_ref()?.containers[0]
                .image
                .clone()
        })
        .filter(|image| image.contains("/mastodon"))
        .map(|image| format!("{}:v{version}", image.rsplit_once(':').unwrap().0))
        .collect()
}

#[tokio::test]
async fn an_unpaid_invoice_during_an_upgrade_suspends_once_the_upgrade_has_ended() {
    const OLD: &str = "4.4.3";
    const NEW: &str = "4.5.2";
    let installation = Installation::new().await;
    installation.set_up_fleet();
    price_plans(&installation);
    let _server = serve_billing(&installation, "30", None);
    let api = installation.api(&format!("{}@example.com", unique("busy-")), "customer");
    api.wait_until_serving().await;
    let subscription = unique("sub_");
    let domain = format!("{}.example.social", unique("busy-"));
    let instance = paid_instance(&api, &domain, &subscription, Some(OLD)).await;

    // An upgrade whose new version never becomes ready, so it runs until it rolls back.
    let new_images = mastodon_images_at(&instance, NEW).await;
    let namespace = herd_kube::children::namespace_name(&instance);
    let never_ready = NeverReady::create(&namespace, &new_images).await;
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/upgrade"),
            Some(json!({"version": NEW, "rollout_timeout_seconds": 20})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let upgrading = body["operation"]["id"].as_str().unwrap().to_owned();

    let unpaid = subscription_event(
        &unique("evt_"),
        chrono::Utc::now().timestamp() + 5,
        &subscription,
        &instance,
        "unpaid",
    );
    assert_eq!(deliver_signed(&api, &unpaid).await.0, 200);

    // The suspension waits for the upgrade, and the wait uses up no attempt.
    let waiting = "SELECT count(*) FROM jobs WHERE kind = 'stripe_event' AND state = 'queued' \
                   AND attempts = 0 AND last_error LIKE '%upgrade operation%under way%'";
    let started = Instant::now();
    while count(&installation, waiting).await == 0 {
        assert!(started.elapsed() < DEADLINE, "the event never waited");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(instance_state(&api, &instance).await["state"], "updating");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let attempts: i32 = installation
        .sql()
        .await
        .query_one(
            "SELECT max(attempts) FROM jobs WHERE kind = 'stripe_event'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(attempts <= 1, "waiting used up {attempts} attempts");

    let upgrade = api.wait_for_operation(&upgrading, DEADLINE).await;
    never_ready.delete().await;
    assert_eq!(upgrade["state"], "failed", "{upgrade}");
    wait_for_state(&api, &instance, "suspended").await;
    wait_for_web_serving(&instance, false).await;
    let suspended = count(
        &installation,
        "SELECT count(*) FROM audit_log WHERE action = 'instance.suspend' AND actor = 'billing'",
    )
    .await;
    assert_eq!(suspended, 1);
    installation.drop_database().await;
}

#[tokio::test]
async fn retention_ends_in_a_final_export_and_the_deletion() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    price_plans(&installation);
    let _server = serve_billing(&installation, "0", None);
    let api = installation.api(&format!("{}@example.com", unique("leaver-")), "customer");
    api.wait_until_serving().await;
    let subscription = unique("sub_");
    let domain = format!("{}.example.social", unique("unpaid-"));
    let instance = paid_instance(&api, &domain, &subscription, None).await;

    let unpaid = subscription_event(
        &unique("evt_"),
        chrono::Utc::now().timestamp() + 5,
        &subscription,
        &instance,
        "unpaid",
    );
    assert_eq!(deliver_signed(&api, &unpaid).await.0, 200);
    wait_for_state(&api, &instance, "deleted").await;

    let (status, listed) = api
        .call(
            Method::GET,
            &format!("/api/v1/instances/{instance}/exports"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let final_export = &listed["exports"][0];
    assert_eq!(final_export["state"], "complete", "{listed}");
    let response = api
        .http
        .get(format!(
            "{}/api/v1/exports/{}/download",
            api.base,
            final_export["id"].as_str().unwrap()
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("final.tar.zst");
    std::fs::write(&path, response.bytes().await.unwrap()).unwrap();
    herd_portability::verify(&path, None).expect("the final export verifies");

    let names = TenantNames::for_instance(&instance);
    let garage = herd_tenancy::GarageAdmin::new(
        &stack_setting("HERD_GARAGE_ADMIN_URL"),
        stack_setting("HERD_GARAGE_ADMIN_TOKEN"),
    )
    .unwrap();
    assert!(garage.find_bucket(&names.bucket).await.unwrap().is_none());
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(herd_kube::client(None).await.unwrap());
    let remaining = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ns| {
            ns.metadata.name.as_deref() == Some(&herd_kube::children::namespace_name(&instance))
        })
        .count();
    assert_eq!(remaining, 0);
    installation.drop_database().await;
}

#[tokio::test]
async fn without_billing_operators_assign_plans_and_suspend_and_resume() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let customer = installation.api(&format!("{}@example.com", unique("free-")), "customer");
    customer.wait_until_serving().await;
    let (instance, operation) = customer
        .order(&format!("{}.example.social", unique("free-")))
        .await;
    customer.assert_succeeds(&operation, DEADLINE).await;

    let (status, problem) = customer
        .call(
            Method::PATCH,
            &format!("/api/v1/instances/{instance}"),
            Some(json!({"plan": "medium"})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "billing_disabled");
    let (status, problem) = customer
        .call(Method::GET, "/api/v1/billing/invoices", None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("billing_disabled"))
    );

    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    let (status, body) = operator
        .call(
            Method::PATCH,
            &format!("/api/v1/instances/{instance}"),
            Some(json!({"plan": "medium"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    operator
        .assert_succeeds(body["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
    wait_for_state(&operator, &instance, "running").await;
    assert_eq!(instance_state(&operator, &instance).await["plan"], "medium");
    let audited = count(
        &installation,
        "SELECT count(*) FROM audit_log WHERE action = 'instance.plan_change'",
    )
    .await;
    assert_eq!(audited, 1);

    // Suspension and resumption are an operator's, and keep the workloads' data.
    let (status, problem) = customer
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/suspend"),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("operators_only"))
    );
    let (status, body) = operator
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/suspend"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["instance"]["state"], "suspended");
    operator
        .assert_succeeds(body["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
    wait_for_web_serving(&instance, false).await;
    let (status, problem) = operator
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/suspend"),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_state"))
    );
    let (status, body) = operator
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/resume"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_for_state(&operator, &instance, "running").await;
    wait_for_web_serving(&instance, true).await;
    let audited = count(
        &installation,
        "SELECT count(*) FROM audit_log WHERE action IN ('instance.suspend', 'instance.resume')",
    )
    .await;
    assert_eq!(audited, 2);
    installation.drop_database().await;
}
