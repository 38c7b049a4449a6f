//! Pure builders: one `MastodonInstance` in, every object of its namespace out.
//!
//! Nothing here reads a clock, a random source or the network, so the same
//! instance always yields the same objects and Server-Side Apply sees no change
//! when nothing changed. Names are short and fixed; the reconciler finds
//! children by their labels.

mod config;
mod disruption;
mod ingress;
mod migrate;
mod namespace;
mod network;
mod pod;
mod quota;
mod redis;
mod setup;
mod sidekiq;
mod streaming;
mod web;
mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use herd_core::spec::InstanceSpec;
use herd_core::version::MastodonVersion;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::ApiResource;

use crate::children::{
    Child, ClusterProfile, InstanceSecrets, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY,
    MANAGED_BY, namespace_name,
};
use crate::crd::MastodonInstance;

pub use migrate::job_name as migration_job_name;

/// Which program a pod runs. NetworkPolicies select pods by it: Mastodon's
/// processes may reach Redis and the internet, Redis neither.
pub const LABEL_APP: &str = "app.kubernetes.io/name";

/// The Job that prepares a fresh instance, the one child to create once and
/// then leave alone: its pod template is immutable, so applying it again after
/// a version or plan change is refused, and it has done its work by then.
pub const SETUP_JOB: &str = "setup";

/// The instance's `.env.production`: the ConfigMap's settings and the
/// Secret's values together, as Mastodon's processes see them.
pub fn environment(
    instance: &MastodonInstance,
    secrets: &InstanceSecrets,
    profile: &ClusterProfile,
) -> BTreeMap<String, String> {
    let tenant = Tenant::new(&instance.spec.instance, secrets, profile);
    let mut environment = config::config_map(&tenant).data.unwrap_or_default();
    environment.extend(secrets.env.clone());
    environment
}

/// Every object the instance needs, in the order they are best applied:
/// the namespace and its guards before anything runs in it.
pub fn desired_children(
    instance: &MastodonInstance,
    secrets: &InstanceSecrets,
    profile: &ClusterProfile,
) -> Vec<Child> {
    let tenant = Tenant::new(&instance.spec.instance, secrets, profile);
    let mut children = vec![Child::from_typed(&namespace::namespace(&tenant, instance))];
    children.push(Child::from_typed(&quota::resource_quota(&tenant)));
    children.push(Child::from_typed(&quota::limit_range(&tenant)));
    children.extend(network::policies(&tenant).iter().map(Child::from_typed));
    children.push(Child::from_typed(&namespace::service_account(&tenant)));
    children.push(Child::from_typed(&config::secret(&tenant)));
    children.push(Child::from_typed(&config::config_map(&tenant)));

    let deployments: Vec<Deployment> = [
        redis::deployment(&tenant),
        web::deployment(&tenant),
        streaming::deployment(&tenant),
    ]
    .into_iter()
    .chain(sidekiq::deployments(&tenant))
    .collect();
    children.extend(deployments.iter().map(Child::from_typed));
    let services = [
        redis::service(&tenant),
        web::service(&tenant),
        streaming::service(&tenant),
    ];
    children.extend(services.iter().map(Child::from_typed));
    children.push(Child::from_typed(&ingress::ingress(&tenant)));
    children.push(Child::from_typed(&setup::job(&tenant)));
    if let Some(run) = &tenant.spec.migration {
        children.push(Child::from_typed(&migrate::job(&tenant, run)));
    }
    children.extend(
        disruption::budgets(&tenant, &deployments)
            .iter()
            .map(Child::from_typed),
    );
    children
}

/// Every kind `desired_children` can produce, so children of a kind that is
/// no longer desired can still be found and pruned.
pub fn child_resources() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<Namespace>(&()),
        ApiResource::erase::<ResourceQuota>(&()),
        ApiResource::erase::<LimitRange>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<Ingress>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
    ]
}

/// The instance as controller of its Namespace, so deleting the instance lets
/// the garbage collector remove the namespace and everything in it.
pub fn owner_reference(instance: &MastodonInstance) -> OwnerReference {
    OwnerReference {
        api_version: MastodonInstance::api_version(&()).into_owned(),
        kind: MastodonInstance::kind(&()).into_owned(),
        name: instance.metadata.name.clone().unwrap_or_default(),
        uid: instance.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What every builder reads: the spec, its secrets, the cluster's facts and
/// the namespace they all live in.
struct Tenant<'a> {
    spec: &'a InstanceSpec,
    secrets: &'a InstanceSecrets,
    profile: &'a ClusterProfile,
    namespace: String,
}

impl<'a> Tenant<'a> {
    fn new(
        spec: &'a InstanceSpec,
        secrets: &'a InstanceSecrets,
        profile: &'a ClusterProfile,
    ) -> Self {
        Tenant {
            spec,
            secrets,
            profile,
            namespace: namespace_name(&spec.instance_id),
        }
    }

    /// The ownership labels, plus the component where there is one.
    fn labels(&self, component: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (LABEL_INSTANCE.to_owned(), self.spec.instance_id.clone()),
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        ]);
        if let Some(component) = component {
            labels.insert(LABEL_COMPONENT.to_owned(), component.to_owned());
        }
        labels
    }

    /// Metadata of a namespaced child.
    fn metadata(&self, name: &str, component: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            ..ObjectMeta::default()
        }
    }

    /// A suspended instance keeps its objects and data but runs no pod.
    fn replicas(&self, wanted: u32) -> i32 {
        if self.spec.suspended {
            0
        } else {
            i32::try_from(wanted).unwrap_or(i32::MAX)
        }
    }

    /// Both Mastodon images are published with the same `v4.5.2` style tags.
    /// The API accepts only parseable versions; a hand-edited one is used as
    /// given, so the failing image pull shows in the instance's status.
    fn image(&self, repository: &str) -> String {
        self.image_of(repository, &self.spec.version)
    }

    fn image_of(&self, repository: &str, version: &str) -> String {
        let tag = version
            .parse::<MastodonVersion>()
            .map(|version| version.image_tag())
            .unwrap_or_else(|_| version.to_owned());
        format!("{repository}:{tag}")
    }
}
