//! Writing an instance's children with Server-Side Apply, and deleting the
//! ones it no longer wants, so the namespace holds exactly what the builders
//! describe: nothing missing, nothing left over.

use std::collections::{HashMap, HashSet};

use k8s_openapi::Resource as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::ReconcileError;
use super::applied::{ChildKey, Written, child_digest};
use super::stores::ChildStores;
use crate::children::Child;
use crate::crd::FIELD_MANAGER;

fn is_namespace(resource: &ApiResource) -> bool {
    resource.group.is_empty() && resource.kind == Namespace::KIND
}

fn describe(resource: &ApiResource, name: &str) -> String {
    format!("{} {name}", resource.kind)
}

/// Jobs are created once and then left alone: their pod template is
/// immutable, so applying a changed one is refused, and a Job that ran has
/// done its work. Deleting a Job by hand makes the next pass create it anew.
fn is_create_once(resource: &ApiResource) -> bool {
    resource.group == Job::GROUP && resource.kind == Job::KIND
}

fn written(child: &Child, metadata: &ObjectMeta) -> Written {
    Written {
        uid: metadata.uid.clone().unwrap_or_default(),
        generation: metadata.generation,
        resource_version: metadata.resource_version.clone(),
        digest: child_digest(child),
    }
}

/// Applies `children`, namespaces first: nothing can be created in a
/// namespace that does not exist yet. Returns each child as the API server
/// answered, to tell later whether a watch has caught up with the write.
pub(crate) async fn apply_all(
    client: &Client,
    stores: &ChildStores,
    children: &[&Child],
) -> Result<HashMap<ChildKey, Written>, ReconcileError> {
    let (namespaces, rest): (Vec<&Child>, Vec<&Child>) =
        children.iter().partition(|c| is_namespace(&c.resource));
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = HashMap::with_capacity(children.len());
    for child in namespaces.into_iter().chain(rest) {
        let api: Api<DynamicObject> = match child.namespace() {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &child.resource),
            None => Api::all_with(client.clone(), &child.resource),
        };
        let metadata = if is_create_once(&child.resource) {
            create_once(&api, stores, child).await?
        } else {
            api.patch(child.name(), &apply, &Patch::Apply(&child.object))
                .await
                .map_err(ReconcileError::api(format!(
                    "applying {}",
                    describe(&child.resource, child.name())
                )))?
                .metadata
        };
        applied.insert(ChildKey::of(child), written(child, &metadata));
    }
    Ok(applied)
}

/// Creates `child` when it is missing. Of an existing one only `spec.suspend`
/// follows the desired object: it is the one mutable field that matters, and
/// it lets a Job made for a suspended instance run once the instance resumes.
/// Whether it exists is first asked of the watch (a Job it shows was there
/// moments ago; if it is gone by now, its deletion wakes the instance and the
/// next pass creates it), then of the API server by creating it. Returns the
/// Job's metadata as it now stands.
async fn create_once(
    api: &Api<DynamicObject>,
    stores: &ChildStores,
    child: &Child,
) -> Result<ObjectMeta, ReconcileError> {
    let what = describe(&child.resource, child.name());
    let namespace = child.namespace().unwrap_or_default();
    let (metadata, suspended) = match stores.job(namespace, child.name()) {
        Some(seen) => (
            seen.metadata.clone(),
            seen.spec.as_ref().and_then(|spec| spec.suspend),
        ),
        None => {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            let existing = match api.create(&params, &child.object).await {
                Ok(created) => return Ok(created.metadata),
                Err(kube::Error::Api(status)) if status.is_already_exists() => api
                    .get(child.name())
                    .await
                    .map_err(ReconcileError::api(format!("reading {what}")))?,
                Err(err) => return Err(ReconcileError::api(format!("creating {what}"))(err)),
            };
            let suspended = existing
                .data
                .pointer("/spec/suspend")
                .and_then(|s| s.as_bool());
            (existing.metadata, suspended)
        }
    };
    let suspend = child
        .object
        .data
        .pointer("/spec/suspend")
        .and_then(|s| s.as_bool());
    if suspend.is_none() || suspended == suspend {
        return Ok(metadata);
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patched = api
        .patch(
            child.name(),
            &params,
            &Patch::Merge(json!({ "spec": { "suspend": suspend } })),
        )
        .await
        .map_err(ReconcileError::api(format!(
            "suspending or resuming {what}"
        )))?;
    Ok(patched.metadata)
}

/// Deletes every child of the instance the watches show in `namespace` that
/// is not among `applied`, and returns what it deleted as `Kind name`. The
/// stores, not a list per kind, are the source: a child created moments ago
/// and not yet in its store is missed here, but its arrival there wakes the
/// instance and the next pass deletes it.
pub(crate) async fn prune(
    client: &Client,
    stores: &ChildStores,
    namespace: &str,
    instance_id: &str,
    applied: &[Child],
) -> Result<Vec<String>, ReconcileError> {
    let wanted: HashSet<(&str, &str, &str)> = applied
        .iter()
        .map(|c| {
            (
                c.resource.group.as_str(),
                c.resource.kind.as_str(),
                c.name(),
            )
        })
        .collect();
    let mut deleted = Vec::new();
    for (resource, name) in stores.unwanted(namespace, instance_id, &wanted) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(describe(&resource, &name)),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(err) => {
                return Err(ReconcileError::api(format!(
                    "pruning {}",
                    describe(&resource, &name)
                ))(err));
            }
        }
    }
    Ok(deleted)
}
