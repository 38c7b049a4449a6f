//! Version upgrades through `herd serve` on the real local stack: a backup,
//! the pre-deploy migrations, the rollout and the post-deploy migrations in
//! that order; a rollout that never becomes ready (a kwok Stage keeps the
//! new pods unready) rolls back to the old version with the data intact; a
//! jump Mastodon does not support is refused and changes nothing.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herd_core::spec::MigrationPhase;
use herd_core::tenant::TenantNames;
use herd_kube::crd::MastodonInstance;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api as KubeApi;
use kube::runtime::{WatchStreamExt, watcher};
use reqwest::Method;
use serde_json::{Value, json};
use support::stages::NeverReady;
use support::{Api, Installation, unique};

const PROVISIONING_DEADLINE: Duration = Duration::from_secs(120);
const UPGRADE_DEADLINE: Duration = Duration::from_secs(240);
const OLD: &str = "4.4.3";
const NEW: &str = "4.5.2";

async fn kube_client() -> kube::Client {
    herd_kube::client(None).await.unwrap()
}

async fn running_instance_at(api: &Api, version: &str) -> String {
    let domain = format!("{}.example.social", unique("upgrade-"));
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/instances",
            Some(json!({
                "domain": domain,
                "plan": "small",
                "owner_email": "owner@example.org",
                "version": version,
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.assert_succeeds(
        body["operation"]["id"].as_str().unwrap(),
        PROVISIONING_DEADLINE,
    )
    .await;
    body["instance"]["id"].as_str().unwrap().to_owned()
}

async fn upgrade(api: &Api, instance: &str, request: Value) -> (u16, Value) {
    api.call(
        Method::POST,
        &format!("/api/v1/instances/{instance}/upgrade"),
        Some(request),
    )
    .await
}

async fn instance_view(api: &Api, instance: &str) -> Value {
    let (status, body) = api
        .call(Method::GET, &format!("/api/v1/instances/{instance}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The images of the instance's Mastodon Deployments (web, streaming,
/// sidekiq), by name.
async fn mastodon_images(instance: &str) -> BTreeMap<String, String> {
    let deployments: KubeApi<Deployment> = KubeApi::namespaced(
        kube_client().await,
        &herd_kube::children::namespace_name(instance),
    );
    deployments
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|deployment| {
            let name = deployment.metadata.name.clone()?;
            let image = image_of(&deployment)?;
            image.contains("/mastodon").then_some((name, image))
        })
        .collect()
}

fn image_of(deployment: &Deployment) -> Option<String> {
    deployment.spec.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

async fn resource_spec(instance: &str) -> herd_core::spec::InstanceSpec {
    let resources: KubeApi<MastodonInstance> = KubeApi::all(kube_client().await);
    resources
        .get(&herd_jobs::resource::resource_name(
            instance.parse().unwrap(),
        ))
        .await
        .unwrap()
        .spec
        .instance
}

async fn audited(installation: &Installation, instance: &str) -> Vec<String> {
    installation
        .sql()
        .await
        .query(
            "SELECT action FROM audit_log WHERE object_id = $1 AND action LIKE 'instance.upgrade%' ORDER BY id",
            &[&instance],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// When things were first seen to happen in a namespace, as watches report them.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<BTreeMap<String, Instant>>>);

impl Timeline {
    fn saw(&self, what: String) {
        self.0
            .lock()
            .unwrap()
            .entry(what)
            .or_insert_with(Instant::now);
    }

    fn when(&self, what: &str) -> Instant {
        *self
            .0
            .lock()
            .unwrap()
            .get(what)
            .unwrap_or_else(|| panic!("never saw {what}: {:?}", self.0.lock().unwrap().keys()))
    }

    fn all_starting(&self, prefix: &str) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(what, _)| what.starts_with(prefix))
            .map(|(_, at)| *at)
            .collect()
    }

    /// Watches the namespace's Jobs and Deployments from now on.
    async fn watch(namespace: &str) -> Timeline {
        let timeline = Timeline::default();
        let client = kube_client().await;
        let jobs: KubeApi<Job> = KubeApi::namespaced(client.clone(), namespace);
        let seen = timeline.clone();
        tokio::spawn(async move {
            let mut events = watcher(jobs, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(job)) = events.next().await {
                let name = job.metadata.name.clone().unwrap_or_default();
                seen.saw(format!("job created: {name}"));
                let complete = job
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Complete" && c.status == "True");
                if complete {
                    seen.saw(format!("job complete: {name}"));
                }
            }
        });
        let deployments: KubeApi<Deployment> = KubeApi::namespaced(client, namespace);
        let seen = timeline.clone();
        tokio::spawn(async move {
            let mut events = watcher(deployments, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(deployment)) = events.next().await {
                let tag = format!(":v{NEW}");
                if image_of(&deployment).is_some_and(|image| image.ends_with(&tag)) {
                    let name = deployment.metadata.name.clone().unwrap_or_default();
                    seen.saw(format!("new image: {name}"));
                }
            }
        });
        timeline
    }
}

/// The images `images` become at `version`.
fn images_at(images: &BTreeMap<String, String>, version: &str) -> BTreeMap<String, String> {
    images
        .iter()
        .map(|(name, image)| {
            let repository = image.rsplit_once(':').unwrap().0;
            (name.clone(), format!("{repository}:v{version}"))
        })
        .collect()
}

#[tokio::test]
async fn an_upgrade_migrates_rolls_out_and_migrates_again_in_order_after_a_backup() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let owner = installation.api(&format!("{}@example.com", unique("owner-")), "customer");
    owner.wait_until_serving().await;
    let instance = running_instance_at(&owner, OLD).await;
    let old_images = mastodon_images(&instance).await;
    assert!(old_images.contains_key("streaming"), "{old_images:?}");

    let namespace = herd_kube::children::namespace_name(&instance);
    let timeline = Timeline::watch(&namespace).await;
    let (status, body) = upgrade(&owner, &instance, json!({"version": NEW})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["operation"]["kind"], "upgrade");
    assert_eq!(body["instance"]["state"], "updating");
    assert_eq!(body["instance"]["version"], OLD, "on record only once done");
    let operation = owner
        .wait_for_operation(body["operation"]["id"].as_str().unwrap(), UPGRADE_DEADLINE)
        .await;
    assert_eq!(operation["state"], "succeeded", "{operation}");

    let view = instance_view(&owner, &instance).await;
    assert_eq!(
        (view["state"].as_str(), view["version"].as_str()),
        (Some("running"), Some(NEW))
    );
    assert_eq!(
        mastodon_images(&instance).await,
        images_at(&old_images, NEW)
    );
    let spec = resource_spec(&instance).await;
    assert_eq!(spec.version, NEW);
    assert_eq!(
        spec.migration.map(|run| (run.version, run.phase)),
        Some((NEW.to_owned(), MigrationPhase::PostDeploy)),
        "the completed post-deploy Job stays until the next change"
    );

    // Mastodon's order: the pre-deploy migrations complete before any
    // Deployment changes image; the post-deploy ones start after all did.
    let pre = timeline.when(&format!(
        "job complete: migrate-pre-{}",
        NEW.replace('.', "-")
    ));
    assert!(
        timeline.when(&format!(
            "job created: migrate-pre-{}",
            NEW.replace('.', "-")
        )) <= pre
    );
    let rolled = timeline.all_starting("new image: ");
    assert_eq!(
        rolled.len(),
        old_images.len(),
        "every Mastodon Deployment rolled"
    );
    let post = timeline.when(&format!(
        "job created: migrate-post-{}",
        NEW.replace('.', "-")
    ));
    assert!(rolled.iter().all(|at| pre < *at && *at < post));

    // The backup: an export of the old version that verifies.
    let (status, exports) = owner
        .call(
            Method::GET,
            &format!("/api/v1/instances/{instance}/exports"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{exports}");
    let backup = &exports["exports"][0];
    assert_eq!(backup["state"], "complete", "{exports}");
    let response = owner
        .http
        .get(format!(
            "{}/api/v1/exports/{}/download",
            owner.base,
            backup["id"].as_str().unwrap()
        ))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(backup["file_name"].as_str().unwrap());
    std::fs::write(&path, response.bytes().await.unwrap()).unwrap();
    let verified = herd_portability::verify(&path, None).expect("the backup verifies");
    assert_eq!(
        verified.manifest.description.mastodon_version.to_string(),
        OLD
    );

    assert_eq!(
        audited(&installation, &instance).await,
        ["instance.upgrade", "instance.upgrade.succeeded"]
    );
    installation.drop_database().await;
}

#[tokio::test]
async fn an_upgrade_killed_mid_way_resumes_where_it_was() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let owner_email = format!("{}@example.com", unique("owner-"));
    let owner = installation.api(&owner_email, "customer");
    let instance = {
        let _server = installation.serve(None);
        owner.wait_until_serving().await;
        running_instance_at(&owner, OLD).await
    };

    // Dies with the new version Ready, before that is recorded.
    let mut crashing = installation.serve(Some("upgrade_instance/rollout/before-checkpoint"));
    owner.wait_until_serving().await;
    let (status, body) = upgrade(&owner, &instance, json!({"version": NEW})).await;
    assert_eq!(status, 202, "{body}");
    let status = crashing.wait_for_exit(UPGRADE_DEADLINE);
    assert!(!status.success(), "the crash point was reached");

    let _server = installation.serve(None);
    owner.wait_until_serving().await;
    owner
        .assert_succeeds(body["operation"]["id"].as_str().unwrap(), UPGRADE_DEADLINE)
        .await;
    let view = instance_view(&owner, &instance).await;
    assert_eq!(
        (view["state"].as_str(), view["version"].as_str()),
        (Some("running"), Some(NEW))
    );
    let (_, exports) = owner
        .call(
            Method::GET,
            &format!("/api/v1/instances/{instance}/exports"),
            None,
        )
        .await;
    assert_eq!(
        exports["exports"].as_array().unwrap().len(),
        1,
        "one backup: {exports}"
    );
    assert_eq!(
        audited(&installation, &instance).await,
        ["instance.upgrade", "instance.upgrade.succeeded"]
    );
    installation.drop_database().await;
}

#[tokio::test]
async fn a_rollout_that_never_becomes_ready_rolls_back_to_the_old_version() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let owner = installation.api(&format!("{}@example.com", unique("owner-")), "customer");
    owner.wait_until_serving().await;
    let instance = running_instance_at(&owner, OLD).await;
    let old_images = mastodon_images(&instance).await;
    let new_images: Vec<String> = images_at(&old_images, NEW).into_values().collect();

    // A row of the tenant's, written before the upgrade.
    let placed = installation.database_server_of(&instance).await.unwrap();
    let names = TenantNames::for_instance(&instance);
    let mut config: tokio_postgres::Config = placed.admin_url.parse().unwrap();
    config.dbname(&names.database);
    let (tenant, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    tenant
        .batch_execute(&format!(
            "CREATE TABLE statuses_canary (text text NOT NULL);
             INSERT INTO statuses_canary VALUES ('written before the upgrade');
             ALTER TABLE statuses_canary OWNER TO \"{}\";",
            names.role
        ))
        .await
        .unwrap();

    let namespace = herd_kube::children::namespace_name(&instance);
    let never_ready = NeverReady::create(&namespace, &new_images).await;
    let (status, body) = upgrade(
        &owner,
        &instance,
        json!({"version": NEW, "rollout_timeout_seconds": 20}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let upgrading = body["operation"]["id"].as_str().unwrap();

    // While the upgrade runs, no other change starts on the instance: each
    // is refused, naming the upgrade, and changes nothing.
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    let path = format!("/api/v1/instances/{instance}");
    let refused = [
        (&operator, Method::POST, format!("{path}/suspend"), None),
        (
            &operator,
            Method::PATCH,
            path.clone(),
            Some(json!({"plan": "medium"})),
        ),
        (
            &operator,
            Method::PATCH,
            path.clone(),
            Some(json!({"scaling": {"web_replicas": 2}})),
        ),
        (
            &owner,
            Method::POST,
            format!("{path}/upgrade"),
            Some(json!({"version": NEW})),
        ),
    ];
    for (caller, method, path, request) in refused {
        let (status, problem) = caller.call(method, &path, request).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (409, Some("operation_in_progress")),
            "{path}: {problem}"
        );
        assert_eq!(problem["operation_id"], upgrading, "{problem}");
        assert_eq!(problem["operation_kind"], "upgrade", "{problem}");
    }
    let view = instance_view(&owner, &instance).await;
    assert_eq!(
        (view["state"].as_str(), view["plan"].as_str()),
        (Some("updating"), Some("small"))
    );

    let operation = owner.wait_for_operation(upgrading, UPGRADE_DEADLINE).await;
    never_ready.delete().await;

    assert_eq!(operation["state"], "failed", "{operation}");
    let error = operation["error"].as_str().unwrap();
    assert!(error.starts_with("rolled back:"), "{error}");
    for workload in ["web", "streaming", "sidekiq-default"] {
        assert!(
            error.contains(workload),
            "names what was not ready: {error}"
        );
    }
    let view = instance_view(&owner, &instance).await;
    assert_eq!(
        (view["state"].as_str(), view["version"].as_str()),
        (Some("running"), Some(OLD))
    );
    assert_eq!(mastodon_images(&instance).await, old_images);
    let spec = resource_spec(&instance).await;
    assert_eq!((spec.version.as_str(), spec.migration), (OLD, None));
    let kept: String = tenant
        .query_one("SELECT text FROM statuses_canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "written before the upgrade");
    assert_eq!(
        audited(&installation, &instance).await,
        ["instance.upgrade", "instance.upgrade.rolled_back"]
    );
    let kinds: Vec<String> = installation
        .sql()
        .await
        .query(
            "SELECT kind FROM operations WHERE instance_id::text = $1 ORDER BY kind",
            &[&instance],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        kinds,
        ["export", "provision", "upgrade"],
        "the provisioning, the upgrade and its backup only"
    );

    // The upgrade over, the instance takes changes again.
    let (status, body) = operator
        .call(Method::POST, &format!("{path}/suspend"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    installation.drop_database().await;
}

#[tokio::test]
async fn a_jump_mastodon_does_not_support_is_refused_and_changes_nothing() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let owner = installation.api(&format!("{}@example.com", unique("owner-")), "customer");
    owner.wait_until_serving().await;
    let instance = running_instance_at(&owner, "4.3.2").await;

    for (version, code) in [
        ("4.5.2", "upgrade_refused"),
        ("4.3.1", "upgrade_refused"),
        ("5.0.0", "upgrade_refused"),
        ("latest", "invalid_version"),
    ] {
        let (status, problem) = upgrade(&owner, &instance, json!({"version": version})).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some(code)),
            "{version}: {problem}"
        );
    }
    let (status, problem) = upgrade(
        &owner,
        &instance,
        json!({"version": "4.4.3", "rollout_timeout_seconds": 0}),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_rollout_timeout"))
    );
    let stranger = installation.api(&format!("{}@example.com", unique("stranger-")), "customer");
    let (status, _) = upgrade(&stranger, &instance, json!({"version": "4.4.3"})).await;
    assert_eq!(
        status, 404,
        "another customer's instance does not exist for them"
    );

    let view = instance_view(&owner, &instance).await;
    assert_eq!(
        (view["state"].as_str(), view["version"].as_str()),
        (Some("running"), Some("4.3.2"))
    );
    let client = installation.sql().await;
    let upgrades: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM operations WHERE kind = 'upgrade')
                  + (SELECT count(*) FROM instance_upgrades)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(upgrades, 0);
    assert!(audited(&installation, &instance).await.is_empty());
    installation.drop_database().await;
}
