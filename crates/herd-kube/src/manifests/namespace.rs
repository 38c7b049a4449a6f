//! The tenant's namespace and the identity its pods run as.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Tenant, owner_reference};
use crate::crd::MastodonInstance;

pub(super) const SERVICE_ACCOUNT_NAME: &str = "mastodon";
const POD_SECURITY_MODES: [&str; 3] = ["enforce", "audit", "warn"];

/// Pod Security `restricted` is enforced by the API server itself, so no
/// object in the namespace can run a pod weaker than the builders make.
pub(super) fn namespace(tenant: &Tenant, instance: &MastodonInstance) -> Namespace {
    let mut labels = tenant.labels(None);
    labels.extend(POD_SECURITY_MODES.map(|mode| {
        (
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".to_owned(),
        )
    }));
    Namespace {
        metadata: ObjectMeta {
            name: Some(tenant.namespace.clone()),
            labels: Some(labels),
            owner_references: instance
                .metadata
                .uid
                .is_some()
                .then(|| vec![owner_reference(instance)]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Mastodon never talks to the Kubernetes API: the account exists only so
/// pods do not run as `default`, and it carries no token.
pub(super) fn service_account(tenant: &Tenant) -> ServiceAccount {
    ServiceAccount {
        metadata: tenant.metadata(SERVICE_ACCOUNT_NAME, None),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
