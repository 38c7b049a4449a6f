//! The Kubernetes control plane is real: the scheduler places pods on kwok's
//! nodes, the controller-manager turns Deployments into pods and deletes
//! namespaces, and Herd's client talks to all of it over TLS.

use std::time::Duration;

use herd_e2e::{eventually, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

const FIELD_MANAGER: &str = "herd-e2e";
const DEADLINE: Duration = Duration::from_secs(120);

async fn client() -> kube::Client {
    herd_kube::client(None)
        .await
        .expect("a client from the stack's KUBECONFIG")
}

async fn apply<K>(api: &Api<K>, name: &str, manifest: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(manifest),
    )
    .await
    .unwrap_or_else(|err| panic!("applying {name}: {err}"));
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    apply(
        &namespaces,
        name,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await;
}

fn pod_template(app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [{"name": app, "image": "registry.invalid/smoke:1",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
        }
    })
}

#[tokio::test]
async fn deployment_becomes_available_and_namespace_deletion_completes() {
    let client = client().await;
    let version = herd_kube::server_version(&client)
        .await
        .expect("API server version");
    println!("kube-apiserver version: {version}");
    assert!(
        version.starts_with("v1.37."),
        "expected a v1.37 API server, got {version}"
    );

    let namespace = unique_name("herd-smoke");
    create_namespace(&client, &namespace).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let mut template = pod_template("web");
    template["spec"]["restartPolicy"] = json!("Always");
    apply(
        &deployments,
        "web",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template}
        }),
    )
    .await;

    let available = eventually("the Deployment to become Available", DEADLINE, || async {
        let deployment = deployments.get("web").await.ok()?;
        let status = deployment.status?;
        let available = status.conditions?.into_iter().any(|c| {
            c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
        });
        (available && status.available_replicas == Some(3)).then_some(status.available_replicas)
    })
    .await;
    println!("Deployment web in {namespace}: {available:?} replicas available");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .expect("namespace deletion accepted");
    eventually("the namespace to be gone", DEADLINE, || async {
        match namespaces.get_opt(&namespace).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
    println!("namespace {namespace} deleted by the namespace controller");
}

#[tokio::test]
async fn job_pods_succeed_on_simulated_nodes() {
    let client = client().await;
    let namespace = unique_name("herd-smoke");
    create_namespace(&client, &namespace).await;

    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let mut template = pod_template("setup");
    template["spec"]["restartPolicy"] = json!("Never");
    apply(
        &jobs,
        "setup",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "setup"},
            "spec": {"backoffLimit": 0, "template": template}
        }),
    )
    .await;

    eventually("the Job to complete", DEADLINE, || async {
        let status = jobs.get("setup").await.ok()?.status?;
        (status.succeeded == Some(1)).then_some(())
    })
    .await;

    Api::<Namespace>::all(client)
        .delete(&namespace, &DeleteParams::default())
        .await
        .expect("cleanup");
}
