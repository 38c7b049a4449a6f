//! What an instance is made of in its cluster, as the builders produce it and
//! the reconciler applies and prunes it.

use std::collections::BTreeMap;
use std::fmt;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

/// Every child carries these labels: the reconciler finds, applies and prunes
/// children by them, never by name.
pub const LABEL_INSTANCE: &str = "hosting.herd.dev/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "herd";
/// Which process of Mastodon a pod runs: web, streaming, sidekiq-<group>, redis, setup.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// The secret environment of an instance: Mastodon's generated keys, the
/// database and S3 credentials, the Redis password. Generated once by Herd,
/// stored encrypted, never rotated; the builders only copy it into a Secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InstanceSecrets {
    pub env: BTreeMap<String, String>,
}

// Values are credentials: only the names may be printed.
impl fmt::Debug for InstanceSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSecrets")
            .field("keys", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Facts about a cluster the manifests depend on, set per fleet member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterProfile {
    /// `spec.ingressClassName` of every instance's Ingress.
    pub ingress_class: String,
    /// The namespace the ingress controller runs in; NetworkPolicies admit it.
    pub ingress_namespace: String,
    /// cert-manager ClusterIssuer named in the Ingress annotation.
    pub cluster_issuer: String,
    /// Mastodon images, without tag: the tag is the instance's version.
    pub mastodon_image: String,
    pub streaming_image: String,
    pub redis_image: String,
    /// CIDRs the tenant's pods may reach for their database and S3 store,
    /// which sit outside the cluster on private addresses in most fleets.
    pub data_service_cidrs: Vec<String>,
}

impl Default for ClusterProfile {
    fn default() -> Self {
        ClusterProfile {
            ingress_class: "nginx".into(),
            ingress_namespace: "ingress-nginx".into(),
            cluster_issuer: "letsencrypt".into(),
            mastodon_image: "ghcr.io/mastodon/mastodon".into(),
            streaming_image: "ghcr.io/mastodon/mastodon-streaming".into(),
            redis_image: "docker.io/library/redis:7.4-alpine".into(),
            data_service_cidrs: Vec::new(),
        }
    }
}

/// One object to apply, with what the API needs to address it.
#[derive(Debug, Clone)]
pub struct Child {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl Child {
    /// Wraps a typed k8s-openapi object.
    pub fn from_typed<K>(object: &K) -> Child
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let mut value = serde_json::to_value(object).expect("Kubernetes objects always serialise");
        value["apiVersion"] = resource.api_version.clone().into();
        value["kind"] = resource.kind.clone().into();
        let object = serde_json::from_value(value).expect("a serialised object is a DynamicObject");
        Child { resource, object }
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    /// The child's namespace: `None` for the namespace itself.
    pub fn namespace(&self) -> Option<&str> {
        self.object.metadata.namespace.as_deref()
    }

    pub fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(
            &self.resource.group,
            &self.resource.version,
            &self.resource.kind,
        )
    }
}

/// The namespace of an instance: derived from its id, never from its domain,
/// so it is unique across the fleet and says nothing about the customer.
pub fn namespace_name(instance_id: &str) -> String {
    format!("mi-{instance_id}")
}
