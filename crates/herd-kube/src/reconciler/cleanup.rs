//! Tearing an instance down when its resource is deleted.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::{Api, Client};

use super::{ReconcileError, TenantBackend};
use crate::children::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, namespace_name};
use crate::crd::MastodonInstance;

/// Deletes the instance's namespace and waits until the namespace controller
/// has removed it, then drops the tenant's data through the backend. In that
/// order because a database cannot be dropped while pods still hold
/// connections to it. Returns `NamespaceTerminating` while waiting, which
/// keeps the finalizer in place.
pub(crate) async fn cleanup<B: TenantBackend>(
    client: &Client,
    backend: &B,
    instance: &MastodonInstance,
) -> Result<Action, ReconcileError> {
    let instance_id = &instance.spec.instance.instance_id;
    let name = namespace_name(instance_id);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let existing = namespaces
        .get_opt(&name)
        .await
        .map_err(ReconcileError::api(format!("reading namespace {name}")))?;
    if let Some(namespace) = existing.filter(|ns| is_instance_namespace(ns, instance_id)) {
        if namespace.metadata.deletion_timestamp.is_none() {
            tracing::info!(namespace = %name, "deleting the instance namespace");
            match namespaces.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(err) => {
                    return Err(ReconcileError::api(format!("deleting namespace {name}"))(
                        err,
                    ));
                }
            }
        }
        return Err(ReconcileError::NamespaceTerminating(name));
    }
    backend.cleanup(instance).await?;
    tracing::info!("tenant data removed");
    Ok(Action::await_change())
}

/// A namespace of the same name that Herd did not make for this instance is
/// left alone.
fn is_instance_namespace(namespace: &Namespace, instance_id: &str) -> bool {
    let labels = namespace.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label(LABEL_INSTANCE) == Some(instance_id) && label(LABEL_MANAGED_BY) == Some(MANAGED_BY)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn namespace(labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(namespace_name("i1")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn only_the_instances_own_namespace_is_deleted() {
        let own = namespace(&[(LABEL_INSTANCE, "i1"), (LABEL_MANAGED_BY, MANAGED_BY)]);
        assert!(is_instance_namespace(&own, "i1"));
        assert!(!is_instance_namespace(&own, "i2"));
        let foreign = namespace(&[(LABEL_INSTANCE, "i1"), (LABEL_MANAGED_BY, "someone-else")]);
        assert!(!is_instance_namespace(&foreign, "i1"));
        assert!(!is_instance_namespace(&namespace(&[]), "i1"));
    }
}
