//! Scaling by hand through `herd serve` on the real local stack: an
//! operator's scaling shows in the cluster (replicas, `DB_POOL`, the quota)
//! and in the audit trail; a layout Mastodon does not support changes nothing;
//! of simultaneous requests one starts and the others are told it runs.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ResourceQuota;
use reqwest::Method;
use serde_json::json;
use support::{Installation, unique};

const DEADLINE: Duration = Duration::from_secs(120);

async fn deployment(instance: &str, name: &str) -> Deployment {
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(
        herd_kube::client(None).await.unwrap(),
        &herd_kube::children::namespace_name(instance),
    );
    deployments.get(name).await.unwrap()
}

fn db_pool(deployment: &Deployment) -> Option<String> {
    deployment.spec.template.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|var| var.name == "DB_POOL")?
        .value
        .clone()
}

async fn quota_cpu(instance: &str) -> String {
    let quotas: kube::Api<ResourceQuota> = kube::Api::namespaced(
        herd_kube::client(None).await.unwrap(),
        &herd_kube::children::namespace_name(instance),
    );
    let quota = quotas.get("quota").await.unwrap();
    quota.spec.unwrap().hard.unwrap()["limits.cpu"].0.clone()
}

#[tokio::test]
async fn an_operators_scaling_reaches_replicas_threads_and_quota() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let customer = installation.api(&format!("{}@example.com", unique("busy-")), "customer");
    customer.wait_until_serving().await;
    let (instance, operation) = customer
        .order(&format!("{}.example.social", unique("surge-")))
        .await;
    customer.assert_succeeds(&operation, DEADLINE).await;
    let cpu_before = quota_cpu(&instance).await;

    let scaling = json!({"scaling": {
        "web_replicas": 3,
        "sidekiq": {"default": {"max_replicas": 4, "threads": 20}},
    }});
    let path = format!("/api/v1/instances/{instance}");
    let (status, problem) = customer
        .call(Method::PATCH, &path, Some(scaling.clone()))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("operators_only"))
    );

    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    let refused = json!({"scaling": {"sidekiq": {"scheduler": {"max_replicas": 2}}}});
    let (status, problem) = operator.call(Method::PATCH, &path, Some(refused)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_scaling");
    assert_eq!(
        operator.call(Method::GET, &path, None).await.1["state"],
        "running",
        "a refused scaling changes nothing"
    );

    // Sent together: one starts, the others find it under way.
    let answers = futures::future::join_all(
        (0..4).map(|_| operator.call(Method::PATCH, &path, Some(scaling.clone()))),
    )
    .await;
    let (accepted, refused): (Vec<_>, Vec<_>) =
        answers.into_iter().partition(|(status, _)| *status == 202);
    assert_eq!(accepted.len(), 1, "{refused:?}");
    for (status, problem) in &refused {
        assert_eq!(
            (*status, problem["code"].as_str()),
            (409, Some("operation_in_progress")),
            "{problem}"
        );
    }
    let body = &accepted[0].1;
    assert_eq!(body["operation"]["kind"], "scale");
    operator
        .assert_succeeds(body["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
    let started = Instant::now();
    loop {
        let web = deployment(&instance, "web").await;
        let sidekiq = deployment(&instance, "sidekiq-default").await;
        if web.spec.replicas == Some(3) && db_pool(&sidekiq).as_deref() == Some("20") {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the scaling never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_ne!(quota_cpu(&instance).await, cpu_before, "the quota follows");

    let client = installation.sql().await;
    let audited: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'instance.scale'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    installation.drop_database().await;
}
