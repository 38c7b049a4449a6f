//! From an order to a running, isolated instance and back to nothing, through
//! `herd serve` on the real local stack: PostgreSQL, Garage, and a Kubernetes
//! control plane whose simulated nodes run the pods.

mod support;

use std::time::Duration;

use herd_core::tenant::TenantNames;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api as KubeApi;
use kube::api::ListParams;
use reqwest::Method;
use serde_json::Value;
use support::{Api, Installation, stack_setting, unique};

const PROVISIONING_DEADLINE: Duration = Duration::from_secs(60);

async fn kube() -> kube::Client {
    herd_kube::client(None).await.expect("kube client")
}

async fn names_in<K>(client: &kube::Client, namespace: &str) -> Vec<String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: KubeApi<K> = KubeApi::namespaced(client.clone(), namespace);
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .collect();
    names.sort();
    names
}

/// Whether the tenant's database, role and bucket exist, on any of the
/// stack's database servers.
async fn tenant_state(instance_id: &str) -> (bool, bool, bool) {
    let names = TenantNames::for_instance(instance_id);
    let (mut database, mut role) = (false, false);
    for admin_url in ["HERD_PG_ADMIN_URL", "HERD_PG2_ADMIN_URL"] {
        let server = herd_tenancy::DatabaseServer::new(&stack_setting(admin_url)).unwrap();
        let state = server
            .inspect_tenant(&names.database, &names.role)
            .await
            .expect("inspect tenant");
        database |= state.database.is_some();
        role |= state.role.is_some();
    }
    let garage = herd_tenancy::GarageAdmin::new(
        &stack_setting("HERD_GARAGE_ADMIN_URL"),
        stack_setting("HERD_GARAGE_ADMIN_TOKEN"),
    )
    .unwrap();
    let bucket = garage
        .find_bucket(&names.bucket)
        .await
        .expect("find bucket");
    (database, role, bucket.is_some())
}

/// Asks for an instance's deletion: the answer's status and body.
async fn delete(api: &Api, instance_id: &str) -> (u16, Value) {
    api.call(
        Method::DELETE,
        &format!("/api/v1/instances/{instance_id}"),
        None,
    )
    .await
}

#[tokio::test]
async fn an_order_becomes_a_running_isolated_instance_and_deletion_leaves_nothing() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let api = installation.api("customer@example.org", "customer");
    let _server = installation.serve(None);
    api.wait_until_serving().await;

    let domain = format!("{}.example.social", unique("i"));
    let (instance_id, operation_id) = api.order(&domain).await;
    api.assert_succeeds(&operation_id, PROVISIONING_DEADLINE)
        .await;
    let (_, instance) = api
        .call(
            Method::GET,
            &format!("/api/v1/instances/{instance_id}"),
            None,
        )
        .await;
    assert_eq!(instance["state"], "running", "{instance}");

    // Everything an instance is made of, in its own namespace.
    let client = kube().await;
    let namespace = herd_kube::children::namespace_name(&instance_id);
    let ns = KubeApi::<Namespace>::all(client.clone())
        .get(&namespace)
        .await
        .expect("namespace");
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    assert_eq!(
        names_in::<Deployment>(&client, &namespace).await,
        [
            "redis",
            "sidekiq-default",
            "sidekiq-scheduler",
            "streaming",
            "web"
        ]
    );
    assert!(names_in::<Service>(&client, &namespace).await.len() >= 3);
    assert_eq!(names_in::<Ingress>(&client, &namespace).await.len(), 1);
    assert!(names_in::<NetworkPolicy>(&client, &namespace).await.len() >= 4);
    assert_eq!(
        names_in::<ResourceQuota>(&client, &namespace).await.len(),
        1
    );
    assert_eq!(names_in::<LimitRange>(&client, &namespace).await.len(), 1);
    assert!(
        names_in::<ServiceAccount>(&client, &namespace)
            .await
            .contains(&"mastodon".to_owned())
    );
    assert!(!names_in::<Secret>(&client, &namespace).await.is_empty());
    assert!(!names_in::<ConfigMap>(&client, &namespace).await.is_empty());
    assert_eq!(names_in::<Job>(&client, &namespace).await, ["setup"]);
    // The small plan runs one web replica: no disruption budget is needed.
    assert!(
        names_in::<PodDisruptionBudget>(&client, &namespace)
            .await
            .is_empty()
    );

    let printed = std::process::Command::new("kubectl")
        .args(["get", "mastodoninstances", &namespace, "--no-headers"])
        .env("KUBECONFIG", stack_setting("KUBECONFIG"))
        .output()
        .expect("kubectl");
    let row = String::from_utf8_lossy(&printed.stdout);
    println!("kubectl get mastodoninstances: {row}");
    assert!(
        row.contains(&domain) && row.contains("small") && row.contains("True"),
        "{row}"
    );

    assert_eq!(tenant_state(&instance_id).await, (true, true, true));

    // Deletion removes the namespace, the database, the role and the bucket.
    let (status, deleted) = delete(&api, &instance_id).await;
    assert_eq!(status, 202, "{deleted}");
    let operation_id = deleted["operation"]["id"].as_str().unwrap().to_owned();
    let (again, _) = delete(&api, &instance_id).await;
    assert!(
        matches!(again, 202 | 404 | 410),
        "a repeated delete answered {again}"
    );
    api.assert_succeeds(&operation_id, PROVISIONING_DEADLINE)
        .await;
    assert!(
        KubeApi::<Namespace>::all(client.clone())
            .get_opt(&namespace)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(tenant_state(&instance_id).await, (false, false, false));

    installation.drop_database().await;
}

/// Steps of provisioning at which the process is killed, one after the other.
const CRASH_POINTS: [&str; 6] = [
    "provision_instance/place/before-checkpoint",
    "provision_instance/secrets/after-checkpoint",
    "provision_instance/tenant_database/before-checkpoint",
    "provision_instance/tenant_bucket/before-checkpoint",
    "provision_instance/apply/before-checkpoint",
    "provision_instance/apply/after-checkpoint",
];

#[tokio::test]
async fn a_process_killed_at_every_step_still_ends_in_one_running_instance() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let api = installation.api("crash@example.org", "customer");

    let domain = format!("{}.example.social", unique("c"));
    let mut ordered: Option<(String, String)> = None;
    for point in CRASH_POINTS {
        let mut server = installation.serve(Some(point));
        api.wait_until_serving().await;
        if ordered.is_none() {
            ordered = Some(api.order(&domain).await);
        }
        let status = server.wait_for_exit(Duration::from_secs(60));
        assert!(
            !status.success(),
            "herd was to crash at {point} but exited with {status}"
        );
        println!("killed at {point}");
    }

    let (instance_id, operation_id) = ordered.unwrap();
    let _server = installation.serve(None);
    api.wait_until_serving().await;
    api.assert_succeeds(&operation_id, PROVISIONING_DEADLINE)
        .await;

    let (_, list) = api.call(Method::GET, "/api/v1/instances", None).await;
    let instances = list["instances"].as_array().expect("a list of instances");
    assert_eq!(instances.len(), 1, "{list}");
    assert_eq!(instances[0]["state"], "running");
    assert_eq!(tenant_state(&instance_id).await, (true, true, true));

    // Exactly one namespace and one resource carry this installation's instance.
    let resources: KubeApi<herd_kube::crd::MastodonInstance> = KubeApi::all(kube().await);
    let mine = resources
        .list(&ListParams::default().labels(&format!(
            "hosting.herd.dev/installation={}",
            installation.name
        )))
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 1);

    let (status, deleted) = delete(&api, &instance_id).await;
    assert_eq!(status, 202, "{deleted}");
    api.assert_succeeds(
        deleted["operation"]["id"].as_str().unwrap(),
        PROVISIONING_DEADLINE,
    )
    .await;
    installation.drop_database().await;
}

#[tokio::test]
async fn deleting_while_provisioning_leaves_nothing_behind() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let api = installation.api("impatient@example.org", "customer");
    let _server = installation.serve(None);
    api.wait_until_serving().await;

    for pause in [
        Duration::ZERO,
        Duration::from_millis(300),
        Duration::from_millis(1500),
    ] {
        let (instance_id, provisioning) =
            api.order(&format!("{}.example.social", unique("d"))).await;
        tokio::time::sleep(pause).await;
        let (status, deleted) = delete(&api, &instance_id).await;
        assert_eq!(status, 202, "{deleted}");
        api.assert_succeeds(
            deleted["operation"]["id"].as_str().unwrap(),
            PROVISIONING_DEADLINE,
        )
        .await;
        // Provisioning ends too, finished or cancelled, and nothing it made survives.
        let ended = api
            .wait_for_operation(&provisioning, PROVISIONING_DEADLINE)
            .await;
        println!("provisioning after {pause:?}: {}", ended["state"]);
        let namespace = herd_kube::children::namespace_name(&instance_id);
        let namespaces: KubeApi<Namespace> = KubeApi::all(kube().await);
        assert!(
            namespaces.get_opt(&namespace).await.unwrap().is_none(),
            "{namespace} survived"
        );
        assert_eq!(
            tenant_state(&instance_id).await,
            (false, false, false),
            "data services survived"
        );
    }
    installation.drop_database().await;
}
