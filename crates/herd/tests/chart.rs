//! The Helm chart in `charts/herd`: it lints and renders, the real API server
//! accepts what it renders, and its managed-cluster permissions are enough
//! for Herd to provision and delete an instance, and no more than that.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use herd_kube::crd::MastodonInstance;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api as KubeApi;
use kube::api::{ListParams, PostParams};
use reqwest::Method;
use serde_json::json;
use support::{Installation, stack_setting, unique};

const PROVISIONING_DEADLINE: Duration = Duration::from_secs(60);

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/herd")
}

/// Runs a command, feeding it `stdin`; returns its output whatever its exit.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", stack_setting("KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{program} runs: {err}"));
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; returns its stdout and stderr.
fn succeed(program: &str, args: &[&str], stdin: Option<&str>) -> (String, String) {
    let output = run(program, args, stdin);
    let (stdout, stderr) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stderr}{stdout}"
    );
    (stdout, stderr)
}

/// `helm template RELEASE charts/herd -n NAMESPACE --set ...`.
fn render(release: &str, namespace: &str, settings: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    for setting in settings {
        args.extend(["--set", setting]);
    }
    succeed(&stack_setting("HERD_HELM"), &args, None).0
}

/// The kinds and names of the objects in a rendered manifest.
fn objects(manifest: &str) -> Vec<(String, String)> {
    let mut objects: Vec<(String, String)> = serde_yaml::Deserializer::from_str(manifest)
        .map(|document| {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            (
                value["kind"].as_str().unwrap_or_default().to_owned(),
                value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .filter(|(kind, _)| !kind.is_empty())
        .collect();
    objects.sort();
    objects
}

fn kinds(objects: &[(String, String)]) -> Vec<&str> {
    let mut kinds: Vec<&str> = objects.iter().map(|(kind, _)| kind.as_str()).collect();
    kinds.dedup();
    kinds
}

async fn admin() -> kube::Client {
    herd_kube::client(None).await.expect("kube client")
}

/// A namespace where pods must meet the `restricted` Pod Security Standard,
/// and anything that would not draws a warning.
fn create_restricted_namespace(name: &str) {
    succeed("kubectl", &["create", "namespace", name], None);
    succeed(
        "kubectl",
        &[
            "label",
            "namespace",
            name,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        None,
    );
}

#[test]
fn the_chart_lints_and_renders_each_part_on_its_own() {
    let helm = stack_setting("HERD_HELM");
    let chart = chart_dir();
    succeed(
        &helm,
        &[
            "lint",
            "--strict",
            chart.to_str().unwrap(),
            "--set",
            "server.existingSecret=herd",
        ],
        None,
    );

    let both = objects(&render("prod", "herd", &["server.existingSecret=herd"]));
    assert_eq!(
        kinds(&both),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount"
        ]
    );
    assert!(both.contains(&("Deployment".into(), "prod-herd".into())));
    assert!(both.contains(&("ClusterRole".into(), "prod-herd-managed-cluster".into())));

    let managed_only = objects(&render("prod", "herd", &["server.enabled=false"]));
    assert_eq!(
        kinds(&managed_only),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Secret",
            "ServiceAccount"
        ]
    );

    let server_only = objects(&render(
        "prod",
        "herd",
        &["server.existingSecret=herd", "managedCluster.enabled=false"],
    ));
    assert_eq!(
        kinds(&server_only),
        ["Deployment", "Service", "ServiceAccount"]
    );

    // Credentials come from a Secret of the operator's: without one named,
    // nothing renders.
    let chart = chart.to_str().unwrap();
    let refused = run(&helm, &["template", "prod", chart], None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("server.existingSecret"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn the_api_server_accepts_everything_the_chart_renders() {
    let namespace = unique("chart-");
    create_restricted_namespace(&namespace);
    let manifest = render(&namespace, &namespace, &["server.existingSecret=herd"]);
    let (stdout, stderr) = succeed(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=helm",
            "-f",
            "-",
        ],
        Some(&manifest),
    );
    println!("{stdout}");
    // The server's pods would run under the restricted Pod Security Standard.
    assert!(!stderr.contains("Warning"), "{stderr}");
    assert_eq!(stdout.lines().count(), objects(&manifest).len(), "{stdout}");
    succeed(
        "kubectl",
        &["delete", "namespace", &namespace, "--wait=false"],
        None,
    );
}

/// A kubeconfig reaching the stack's cluster with `token`, as an operator
/// writes one for `herd fleet add-cluster`.
fn kubeconfig_with_token(token: &str) -> String {
    let admin = kube::config::Kubeconfig::read_from(stack_setting("KUBECONFIG")).unwrap();
    let cluster = admin.clusters[0].cluster.as_ref().unwrap();
    // JSON is YAML: any kubeconfig reader takes it.
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "managed", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": "herd", "user": {"token": token}}],
        "contexts": [{"name": "managed", "context": {"cluster": "managed", "user": "herd"}}],
        "current-context": "managed",
    })
    .to_string()
}

/// The token the cluster writes into the chart's token Secret.
async fn service_account_token(client: &kube::Client, namespace: &str, secret: &str) -> String {
    let secrets: KubeApi<Secret> = KubeApi::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let token = secrets
            .get(secret)
            .await
            .expect("the token Secret")
            .data
            .and_then(|mut data| data.remove("token"));
        if let Some(ByteString(token)) = token {
            return String::from_utf8(token).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cluster never filled {namespace}/{secret}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// What the managed-cluster ServiceAccount may not do, though Herd's own
/// work is all allowed.
async fn assert_confined(managed: &kube::Client, namespace: &str, installation: &str) {
    assert_forbidden(
        "reading a Secret",
        KubeApi::<Secret>::namespaced(managed.clone(), "kube-system")
            .get("anything")
            .await,
    );
    assert_forbidden(
        "listing nodes",
        KubeApi::<Node>::all(managed.clone())
            .list(&ListParams::default())
            .await,
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "intruder"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    assert_forbidden(
        "creating a pod",
        KubeApi::<Pod>::namespaced(managed.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await,
    );
    assert_forbidden(
        "reading another installation's Lease",
        KubeApi::<Lease>::namespaced(managed.clone(), "kube-system")
            .get(&format!("herd-reconciler-not-{installation}"))
            .await,
    );
    assert_forbidden(
        "reading another CRD",
        KubeApi::<CustomResourceDefinition>::all(managed.clone())
            .get("stages.kwok.x-k8s.io")
            .await,
    );
    let escalation: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{namespace}-escalation")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
    }))
    .unwrap();
    assert_forbidden(
        "granting itself more",
        KubeApi::<ClusterRoleBinding>::all(managed.clone())
            .create(&PostParams::default(), &escalation)
            .await,
    );
}

async fn wait_until_ready(client: &kube::Client, name: &str) {
    let instances: KubeApi<MastodonInstance> = KubeApi::all(client.clone());
    let started = Instant::now();
    loop {
        let status = instances.get(name).await.unwrap().status;
        let ready = status.as_ref().is_some_and(|status| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the status of {name} never said Ready: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the chart installed, removed again however the test ends: its
/// cluster-wide objects outlive any namespace.
struct Installed {
    manifest: String,
    namespace: String,
    /// The reconciler's Lease in `kube-system`, left by Herd.
    lease: String,
}

impl Drop for Installed {
    fn drop(&mut self) {
        run(
            "kubectl",
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            Some(&self.manifest),
        );
        run(
            "kubectl",
            &["delete", "namespace", &self.namespace, "--wait=false"],
            None,
        );
        run(
            "kubectl",
            &[
                "delete",
                "--ignore-not-found",
                "--namespace=kube-system",
                "lease",
                &self.lease,
            ],
            None,
        );
    }
}

#[tokio::test]
async fn herd_provisions_and_deletes_an_instance_with_the_managed_cluster_permissions_only() {
    let installation = Installation::new().await;
    let release = installation.name.clone();
    let namespace = installation.name.clone();
    let admin = admin().await;

    // The chart for a cluster Herd only manages, installed as an operator would.
    create_restricted_namespace(&namespace);
    let manifest = render(
        &release,
        &namespace,
        &[
            "server.enabled=false",
            &format!("managedCluster.installations={{{}}}", installation.name),
        ],
    );
    let installed = Installed {
        manifest,
        namespace: namespace.clone(),
        lease: format!("herd-reconciler-{}", installation.name),
    };
    succeed(
        "kubectl",
        &["apply", "--server-side", "--field-manager=helm", "-f", "-"],
        Some(&installed.manifest),
    );
    let account = format!("{release}-herd-managed-cluster");
    let token = service_account_token(&admin, &namespace, &format!("{account}-token")).await;
    let kubeconfig = kubeconfig_with_token(&token);
    let managed = herd_kube::client_from_yaml(&kubeconfig)
        .await
        .expect("a client of the ServiceAccount");
    assert_confined(&managed, &namespace, &installation.name).await;

    // Herd knows the cluster only by that kubeconfig, and its own process
    // talks to the API server as the same account.
    let kubeconfig_file = std::env::temp_dir().join(format!("{release}.kubeconfig"));
    std::fs::write(&kubeconfig_file, &kubeconfig).unwrap();
    let kubeconfig_path = kubeconfig_file.to_str().unwrap();
    installation.set_up_fleet_reaching_cluster_by(kubeconfig_path);
    let api = installation.api("customer@example.org", "customer");
    let log = std::env::temp_dir().join(format!("{release}.log"));
    let server = installation.serve_with(&[("KUBECONFIG", kubeconfig_path)], Some(&log));
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

    let instance_namespace = herd_kube::children::namespace_name(&instance_id);
    let mut deployments: Vec<String> =
        KubeApi::<Deployment>::namespaced(admin.clone(), &instance_namespace)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect();
    deployments.sort();
    assert_eq!(
        deployments,
        [
            "redis",
            "sidekiq-default",
            "sidekiq-scheduler",
            "streaming",
            "web"
        ]
    );
    // The reconciler tells the database before it writes the resource's
    // status, so "running" alone does not prove the status write was allowed.
    wait_until_ready(&admin, &instance_namespace).await;
    let lease = KubeApi::<Lease>::namespaced(admin.clone(), "kube-system")
        .get(&format!("herd-reconciler-{}", installation.name))
        .await
        .expect("the reconciler's Lease");
    assert!(lease.spec.unwrap().holder_identity.is_some());

    // Deletion runs the finalizer: the namespace goes, then the resource.
    let (status, deleted) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/instances/{instance_id}"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{deleted}");
    api.assert_succeeds(
        deleted["operation"]["id"].as_str().unwrap(),
        PROVISIONING_DEADLINE,
    )
    .await;
    assert!(
        KubeApi::<Namespace>::all(admin.clone())
            .get_opt(&instance_namespace)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        KubeApi::<MastodonInstance>::all(admin.clone())
            .get_opt(&instance_namespace)
            .await
            .unwrap()
            .is_none()
    );

    // Herd stops before its Lease is removed, or it would take it again.
    drop(server);
    // Every refusal the API server gave Herd is in its log, as a warning of
    // the reconciler, the autoscaler, a job or the lease.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("forbidden"), "{logged}");
    let _ = std::fs::remove_file(&log);
    drop(installed);
    let _ = std::fs::remove_file(&kubeconfig_file);
    installation.drop_database().await;
}
