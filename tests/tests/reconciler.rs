//! The reconciler against the real control plane: kwok's nodes make pods
//! Ready and Job pods Succeeded, the controller-manager runs Deployments and
//! deletes namespaces. Each test runs a reconciler of its own that selects
//! only that test's instances, so the tests run in parallel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::plan::{QueueWeight, Resources, SidekiqGroup, starter_plans};
use herd_core::spec::{DatabaseEndpoint, InstanceSpec, ObjectStoreEndpoint};
use herd_e2e::{eventually, unique_name};
use herd_kube::children::{
    ClusterProfile, InstanceSecrets, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY,
    namespace_name,
};
use herd_kube::crd::{MastodonInstance, MastodonInstanceSpec, MastodonInstanceStatus};
use herd_kube::reconciler::{BackendError, Reconciler, TenantBackend, install_crd};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const READY_WITHIN: Duration = Duration::from_secs(60);
const RUN_LABEL: &str = "e2e.herd.dev/run";
const EXTRA_GROUP: &str = "extra";
const CONFIG_MAP: &str = "mastodon-config";

/// Knows the secrets of the instances it was told about and records what the
/// reconciler asked of it.
#[derive(Default)]
struct TestBackend {
    secrets: Mutex<BTreeMap<String, InstanceSecrets>>,
    cleanups: Mutex<Vec<String>>,
    statuses: Mutex<Vec<(String, MastodonInstanceStatus)>>,
    /// How many of the next status reports to refuse, as a database outage would.
    refused_statuses: AtomicU32,
    /// Every pass reads the secrets first, so this counts passes per instance.
    secret_reads: Mutex<BTreeMap<String, u32>>,
}

impl TestBackend {
    fn register(&self, instance_id: &str) {
        let env = BTreeMap::from([
            ("SECRET_KEY_BASE".to_owned(), unique_name("secret")),
            ("DB_PASS".to_owned(), unique_name("password")),
        ]);
        self.secrets
            .lock()
            .unwrap()
            .insert(instance_id.to_owned(), InstanceSecrets { env });
    }

    fn passes(&self, instance_id: &str) -> u32 {
        self.secret_reads
            .lock()
            .unwrap()
            .get(instance_id)
            .copied()
            .unwrap_or(0)
    }

    fn cleanups(&self) -> Vec<String> {
        self.cleanups.lock().unwrap().clone()
    }

    fn last_status(&self, instance_id: &str) -> Option<MastodonInstanceStatus> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(id, _)| id == instance_id)
            .map(|(_, status)| status.clone())
    }

    fn reported_phases(&self, instance_id: &str) -> Vec<String> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id == instance_id)
            .filter_map(|(_, status)| status.phase.clone())
            .collect()
    }
}

fn id_of(instance: &MastodonInstance) -> String {
    instance.spec.instance.instance_id.clone()
}

impl TenantBackend for TestBackend {
    async fn secrets(&self, instance: &MastodonInstance) -> Result<InstanceSecrets, BackendError> {
        let id = id_of(instance);
        *self
            .secret_reads
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default() += 1;
        self.secrets
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| BackendError::new(format!("no secrets for {id}")))
    }

    async fn cleanup(&self, instance: &MastodonInstance) -> Result<(), BackendError> {
        self.cleanups.lock().unwrap().push(id_of(instance));
        Ok(())
    }

    async fn status_changed(
        &self,
        instance: &MastodonInstance,
        status: &MastodonInstanceStatus,
    ) -> Result<(), BackendError> {
        let refuse = self
            .refused_statuses
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return Err(BackendError::new("the database is unreachable"));
        }
        self.statuses
            .lock()
            .unwrap()
            .push((id_of(instance), status.clone()));
        Ok(())
    }
}

/// A reconciler of this test's own, stopped when the test ends: dropping
/// `_stop` resolves its shutdown future.
struct Harness {
    client: Client,
    backend: Arc<TestBackend>,
    run: String,
    _stop: oneshot::Sender<()>,
}

impl Harness {
    async fn start() -> Harness {
        // The reconciler's own log, shown for failing tests or with --show-output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("HERD_LOG")
                    .unwrap_or_else(|_| "herd_kube=info".into()),
            )
            .with_test_writer()
            .try_init();
        let client = herd_kube::client(None)
            .await
            .expect("a client from the stack's KUBECONFIG");
        install_crd(&client).await.expect("CRD installed");
        let backend = Arc::new(TestBackend::default());
        let run = unique_name("run");
        let (stop, stopped) = oneshot::channel::<()>();
        let reconciler =
            Reconciler::new(client.clone(), backend.clone(), ClusterProfile::default())
                .instance_selector(format!("{RUN_LABEL}={run}"));
        tokio::spawn(reconciler.run(async move {
            let _ = stopped.await;
        }));
        Harness {
            client,
            backend,
            run,
            _stop: stop,
        }
    }

    fn instances(&self) -> Api<MastodonInstance> {
        Api::all(self.client.clone())
    }

    async fn create_instance(&self) -> MastodonInstance {
        self.create(&self.new_instance()).await
    }

    async fn create(&self, instance: &MastodonInstance) -> MastodonInstance {
        self.instances()
            .create(&PostParams::default(), instance)
            .await
            .expect("instance created")
    }

    /// An instance of this test on the small starter plan, with a third
    /// Sidekiq group a plan change can take away.
    fn new_instance(&self) -> MastodonInstance {
        let id = unique_name("rec");
        self.backend.register(&id);
        let mut plan = starter_plans().remove(0);
        plan.sidekiq.push(SidekiqGroup {
            name: EXTRA_GROUP.into(),
            queues: vec![QueueWeight {
                name: "pull".into(),
                weight: 1,
            }],
            threads: 5,
            min_replicas: 1,
            max_replicas: 1,
            resources: Resources {
                cpu_millis: 250,
                memory_mib: 512,
            },
        });
        plan.database_connection_limit = plan.database_connections_needed();
        plan.validate().expect("a valid plan");
        let mut instance = MastodonInstance::new(
            &id,
            MastodonInstanceSpec {
                instance: InstanceSpec {
                    instance_id: id.clone(),
                    local_domain: format!("{id}.example.social"),
                    web_domain: format!("{id}.example.social"),
                    version: "4.5.2".into(),
                    owner_email: "owner@example.org".into(),
                    plan,
                    suspended: false,
                    origin: Default::default(),
                    database: DatabaseEndpoint {
                        host: "10.0.0.5".into(),
                        port: 5432,
                        name: id.clone(),
                        user: id.clone(),
                    },
                    object_store: ObjectStoreEndpoint {
                        endpoint: "http://10.0.0.6:3900".into(),
                        region: "garage".into(),
                        bucket: id.clone(),
                    },
                    migration: None,
                },
            },
        );
        instance
            .labels_mut()
            .insert(RUN_LABEL.into(), self.run.clone());
        instance
    }

    /// Merges `spec` into the instance's spec, as an operator's edit would.
    async fn change_spec(&self, name: &str, spec: Value) {
        self.instances()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("spec changed");
    }

    /// Waits until the instance reports Ready for its current generation.
    async fn ready(&self, name: &str) -> MastodonInstance {
        let instances = self.instances();
        eventually("the instance to turn Ready", READY_WITHIN, || async {
            let instance = instances.get(name).await.ok()?;
            let status = instance.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.observed_generation == instance.metadata.generation)
                .then_some(instance)
        })
        .await
    }

    fn namespaced<K>(&self, instance: &MastodonInstance) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &namespace_name(&id_of(instance)))
    }
}

fn selector(instance: &MastodonInstance) -> String {
    format!(
        "{LABEL_INSTANCE}={},{LABEL_MANAGED_BY}={MANAGED_BY}",
        id_of(instance)
    )
}

async fn uid_of<K>(api: &Api<K>, name: &str) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.ok()??.uid()
}

fn kubectl_get(instance: &str) -> String {
    let output = std::process::Command::new("kubectl")
        .args(["get", "mastodoninstances", instance])
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

#[tokio::test]
async fn instance_becomes_ready_with_every_child_kind() {
    let harness = Harness::start().await;
    harness.backend.refused_statuses.store(1, Ordering::SeqCst);
    let created = harness.create_instance().await;
    let name = created.name_any();
    let instance = harness.ready(&name).await;

    let status = instance.status.clone().expect("a status");
    let namespace = namespace_name(&id_of(&instance));
    assert_eq!(status.namespace.as_deref(), Some(namespace.as_str()));
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(
        instance
            .finalizers()
            .iter()
            .any(|f| f == herd_kube::crd::FINALIZER)
    );

    let namespaces: Api<Namespace> = Api::all(harness.client.clone());
    assert!(namespaces.get_opt(&namespace).await.unwrap().is_some());
    let secrets = harness.backend.secrets(&instance).await.unwrap();
    let mut desired: Vec<(String, String)> =
        herd_kube::manifests::desired_children(&instance, &secrets, &ClusterProfile::default())
            .iter()
            .filter(|child| child.resource.kind != "Namespace")
            .map(|child| (child.resource.kind.clone(), child.name().to_owned()))
            .collect();
    desired.sort();
    let params = ListParams::default().labels(&selector(&instance));
    let mut present = Vec::new();
    for resource in herd_kube::manifests::child_resources() {
        if resource.kind == "Namespace" {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(harness.client.clone(), &namespace, &resource);
        let listed = api
            .list_metadata(&params)
            .await
            .unwrap_or_else(|err| panic!("listing {}: {err}", resource.plural));
        present.extend(
            listed
                .items
                .iter()
                .map(|object| (resource.kind.clone(), object.name_any())),
        );
    }
    present.sort();
    println!("children in {namespace}: {present:?}");
    assert_eq!(
        present, desired,
        "the namespace holds exactly the desired children"
    );

    let table = kubectl_get(&name);
    println!("{table}");
    let row = table.lines().nth(1).expect("a row for the instance");
    assert!(row.contains("True") && row.contains("Running"), "{row}");

    // The first report was refused, and the status reached the cluster only
    // after the backend took it: the two agree.
    assert_eq!(harness.backend.refused_statuses.load(Ordering::SeqCst), 0);
    let phases = harness.backend.reported_phases(&id_of(&instance));
    println!("phases reported to the backend: {phases:?}");
    assert_eq!(
        harness.backend.last_status(&id_of(&instance)).as_ref(),
        Some(&status)
    );
}

#[tokio::test]
async fn deleted_children_are_recreated() {
    let harness = Harness::start().await;
    let name = harness.create_instance().await.name_any();
    let instance = harness.ready(&name).await;

    let deployments: Api<Deployment> = harness.namespaced(&instance);
    let policies: Api<NetworkPolicy> = harness.namespaced(&instance);
    let web_before = uid_of(&deployments, "web").await.expect("web Deployment");
    let policy_before = uid_of(&policies, "default-deny")
        .await
        .expect("default-deny NetworkPolicy");
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .expect("web deleted");
    policies
        .delete("default-deny", &DeleteParams::default())
        .await
        .expect("policy deleted");

    eventually(
        "web and default-deny to be recreated",
        Duration::from_secs(30),
        || async {
            let web = uid_of(&deployments, "web").await?;
            let policy = uid_of(&policies, "default-deny").await?;
            (web != web_before && policy != policy_before).then_some(())
        },
    )
    .await;
    harness.ready(&name).await;
}

/// Sets `S3_PROTOCOL` of the instance's ConfigMap as another field manager,
/// which takes the field from Herd: Herd applies with force, so any apply of
/// the ConfigMap by Herd takes it back.
async fn take_over_config(config_maps: &Api<ConfigMap>, value: &str) {
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "data": {"S3_PROTOCOL": value},
    });
    config_maps
        .patch(
            CONFIG_MAP,
            &PatchParams::apply("e2e-hand").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("ConfigMap taken over");
}

async fn s3_protocol(config_maps: &Api<ConfigMap>) -> Option<String> {
    config_maps
        .get(CONFIG_MAP)
        .await
        .ok()?
        .data?
        .remove("S3_PROTOCOL")
}

/// Sets web's component label as another field manager. A label is no part
/// of the spec: its generation stays, and only a write of web takes it back.
async fn take_over_web_label(deployments: &Api<Deployment>, value: &str) {
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"labels": {LABEL_COMPONENT: value}},
    });
    deployments
        .patch(
            "web",
            &PatchParams::apply("e2e-hand").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("web's label taken over");
}

async fn web_label(deployments: &Api<Deployment>) -> Option<String> {
    deployments
        .get("web")
        .await
        .ok()?
        .metadata
        .labels?
        .remove(LABEL_COMPONENT)
}

#[tokio::test]
async fn a_config_map_edited_by_hand_is_repaired() {
    let harness = Harness::start().await;
    let name = harness.create_instance().await.name_any();
    let instance = harness.ready(&name).await;
    let config_maps: Api<ConfigMap> = harness.namespaced(&instance);
    let original = s3_protocol(&config_maps).await.expect("S3_PROTOCOL");

    // Nothing but Herd writes a ConfigMap: a new version of it is an edit,
    // taken back once the watch has surely caught up with Herd's own write.
    take_over_config(&config_maps, "by-hand").await;
    eventually(
        "the ConfigMap to be taken back",
        Duration::from_secs(60),
        || async { (s3_protocol(&config_maps).await? == original).then_some(()) },
    )
    .await;
    harness.ready(&name).await;
}

#[tokio::test]
async fn status_changes_of_children_write_no_child() {
    let harness = Harness::start().await;
    let name = harness.create_instance().await.name_any();
    let instance = harness.ready(&name).await;
    let id = id_of(&instance);
    let deployments: Api<Deployment> = harness.namespaced(&instance);
    let original = web_label(&deployments)
        .await
        .expect("web's component label");

    // The takeover is itself a change of a child that wakes a pass.
    let before = harness.backend.passes(&id);
    take_over_web_label(&deployments, "by-hand").await;
    eventually("a pass after the edit", Duration::from_secs(30), || async {
        (harness.backend.passes(&id) > before).then_some(())
    })
    .await;

    // A status-only change, as the Deployment controller makes them: web is
    // briefly reported unavailable until the controller corrects it.
    let before = harness.backend.passes(&id);
    deployments
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"availableReplicas": 0, "readyReplicas": 0}})),
        )
        .await
        .expect("web's status patched");
    eventually(
        "a pass after the status change",
        Duration::from_secs(30),
        || async { (harness.backend.passes(&id) > before).then_some(()) },
    )
    .await;
    harness.ready(&name).await;
    println!(
        "{} passes after Ready, none of them applied web",
        harness.backend.passes(&id)
    );
    assert_eq!(
        web_label(&deployments).await.as_deref(),
        Some("by-hand"),
        "no pass since the takeover applied web"
    );

    // A spec change writes only the children it changes: the owner's
    // address is the setup Job's business, so web stays as edited.
    let before = harness.backend.passes(&id);
    harness
        .change_spec(&name, json!({"ownerEmail": "new-owner@example.org"}))
        .await;
    eventually(
        "a pass after the change",
        Duration::from_secs(30),
        || async { (harness.backend.passes(&id) > before).then_some(()) },
    )
    .await;
    harness.ready(&name).await;
    assert_eq!(
        web_label(&deployments).await.as_deref(),
        Some("by-hand"),
        "a change elsewhere applied web"
    );

    // A change of web writes it, which takes the label back.
    harness
        .change_spec(&name, json!({"version": "4.5.3"}))
        .await;
    eventually(
        "web to be applied again",
        Duration::from_secs(30),
        || async { (web_label(&deployments).await? == original).then_some(()) },
    )
    .await;
    harness.ready(&name).await;
}

#[tokio::test]
async fn a_child_scaled_by_hand_is_repaired() {
    let harness = Harness::start().await;
    let name = harness.create_instance().await.name_any();
    let instance = harness.ready(&name).await;
    let deployments: Api<Deployment> = harness.namespaced(&instance);
    let replicas = deployments.get("web").await.expect("web").spec.replicas;

    // A new generation of a child's spec is a change by someone else.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("web scaled");
    eventually("web to be scaled back", Duration::from_secs(30), || async {
        let web = deployments.get("web").await.ok()?;
        (web.spec.replicas == replicas).then_some(())
    })
    .await;
    harness.ready(&name).await;
}

#[tokio::test]
async fn plan_change_scales_and_prunes() {
    let harness = Harness::start().await;
    let name = harness.create_instance().await.name_any();
    let instance = harness.ready(&name).await;

    let deployments: Api<Deployment> = harness.namespaced(&instance);
    let quotas: Api<ResourceQuota> = harness.namespaced(&instance);
    let extra = format!("sidekiq-{EXTRA_GROUP}");
    assert!(deployments.get_opt(&extra).await.unwrap().is_some());
    let quota_before = quotas.get("quota").await.expect("quota").spec;

    let mut plan = instance.spec.instance.plan.clone();
    plan.web.replicas = 2;
    plan.sidekiq.retain(|group| group.name != EXTRA_GROUP);
    plan.database_connection_limit = plan.database_connections_needed();
    plan.validate().expect("a valid plan");
    harness.change_spec(&name, json!({"plan": plan})).await;

    eventually(
        "web to scale to 2 and the extra group to go",
        Duration::from_secs(30),
        || async {
            let web = deployments.get("web").await.ok()?;
            let gone = deployments.get_opt(&extra).await.ok()?.is_none();
            (web.spec.replicas == Some(2) && gone).then_some(())
        },
    )
    .await;
    let quota_after = quotas.get("quota").await.expect("quota").spec;
    assert_ne!(quota_before, quota_after, "the quota follows the plan");
    let instance = harness.ready(&name).await;
    println!(
        "generation {:?} Ready after the plan change",
        instance.metadata.generation
    );
}

#[tokio::test]
async fn deletion_cleans_up_once_and_releases_the_resource() {
    let harness = Harness::start().await;
    let name = harness.create_instance().await.name_any();
    let instance = harness.ready(&name).await;
    let id = id_of(&instance);

    harness
        .instances()
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deletion accepted");
    let instances = harness.instances();
    eventually(
        "the instance to be gone",
        Duration::from_secs(90),
        || async { instances.get_opt(&name).await.ok()?.is_none().then_some(()) },
    )
    .await;

    let namespaces: Api<Namespace> = Api::all(harness.client.clone());
    assert!(
        namespaces
            .get_opt(&namespace_name(&id))
            .await
            .unwrap()
            .is_none(),
        "the namespace is gone before the finalizer is released"
    );
    assert_eq!(harness.backend.cleanups(), [id]);
}

#[tokio::test]
async fn suspension_scales_to_zero_and_resuming_runs_setup() {
    let harness = Harness::start().await;
    let mut instance = harness.new_instance();
    instance.spec.instance.suspended = true;
    let name = harness.create(&instance).await.name_any();
    let instance = harness.ready(&name).await;
    let status = instance.status.clone().expect("a status");
    assert_eq!(status.phase.as_deref(), Some("Suspended"));

    let deployments: Api<Deployment> = harness.namespaced(&instance);
    let jobs: Api<Job> = harness.namespaced(&instance);
    let listed = deployments.list(&ListParams::default()).await.unwrap();
    assert!(
        listed.items.iter().all(|d| d.spec.replicas == Some(0)),
        "every Deployment is scaled to zero"
    );
    let setup = jobs.get("setup").await.expect("setup Job");
    assert_eq!(setup.spec.as_ref().and_then(|s| s.suspend), Some(true));

    harness
        .change_spec(&name, json!({"suspended": false}))
        .await;
    let instance = harness.ready(&name).await;
    assert_eq!(
        instance.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    let setup = jobs.get("setup").await.expect("setup Job");
    let complete = setup
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Complete" && c.status == "True");
    assert!(complete, "the setup Job ran once the instance resumed");
}
