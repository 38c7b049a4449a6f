//! Writing an instance's children with Server-Side Apply, and deleting the
//! ones it no longer wants, so the namespace holds exactly what the builders
//! describe: nothing missing, nothing left over.

use std::collections::HashSet;

use k8s_openapi::Resource as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::ReconcileError;
use crate::children::{Child, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY};
use crate::crd::FIELD_MANAGER;

/// Selects every child of one instance, and nothing another manager made.
pub(crate) fn instance_selector(instance_id: &str) -> String {
    format!("{LABEL_INSTANCE}={instance_id},{LABEL_MANAGED_BY}={MANAGED_BY}")
}

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

/// Applies every child, namespaces first: nothing can be created in a
/// namespace that does not exist yet.
pub(crate) async fn apply_all(client: &Client, children: &[Child]) -> Result<(), ReconcileError> {
    let (namespaces, rest): (Vec<&Child>, Vec<&Child>) =
        children.iter().partition(|c| is_namespace(&c.resource));
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for child in namespaces.into_iter().chain(rest) {
        let api: Api<DynamicObject> = match child.object.metadata.namespace.as_deref() {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &child.resource),
            None => Api::all_with(client.clone(), &child.resource),
        };
        if is_create_once(&child.resource) {
            create_once(&api, child).await?;
        } else {
            api.patch(child.name(), &apply, &Patch::Apply(&child.object))
                .await
                .map_err(ReconcileError::api(format!(
                    "applying {}",
                    describe(&child.resource, child.name())
                )))?;
        }
    }
    Ok(())
}

/// Creates `child` when it is missing. Of an existing one only `spec.suspend`
/// follows the desired object: it is the one mutable field that matters, and
/// it lets a Job made for a suspended instance run once the instance resumes.
async fn create_once(api: &Api<DynamicObject>, child: &Child) -> Result<(), ReconcileError> {
    let what = describe(&child.resource, child.name());
    let existing = api
        .get_opt(child.name())
        .await
        .map_err(ReconcileError::api(format!("reading {what}")))?;
    let Some(existing) = existing else {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        return match api.create(&params, &child.object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(err) => Err(ReconcileError::api(format!("creating {what}"))(err)),
        };
    };
    let suspend = child.object.data.pointer("/spec/suspend");
    if suspend.is_none() || existing.data.pointer("/spec/suspend") == suspend {
        return Ok(());
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(
        child.name(),
        &params,
        &Patch::Merge(json!({ "spec": { "suspend": suspend } })),
    )
    .await
    .map_err(ReconcileError::api(format!(
        "suspending or resuming {what}"
    )))?;
    Ok(())
}

/// Deletes every object of `kinds` in `namespace` that matches `selector` but
/// is not among `applied`, and returns what it deleted as `Kind name`.
pub(crate) async fn prune(
    client: &Client,
    namespace: &str,
    selector: &str,
    kinds: &[ApiResource],
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
    let params = ListParams::default().labels(selector);
    let mut deleted = Vec::new();
    for resource in kinds.iter().filter(|r| !is_namespace(r)) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
        let listed = api
            .list_metadata(&params)
            .await
            .map_err(ReconcileError::api(format!(
                "listing {} in {namespace}",
                resource.plural
            )))?;
        for object in listed.items {
            let name = object.name_any();
            if wanted.contains(&(
                resource.group.as_str(),
                resource.kind.as_str(),
                name.as_str(),
            )) || object.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(describe(resource, &name)),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(err) => {
                    return Err(ReconcileError::api(format!(
                        "pruning {}",
                        describe(resource, &name)
                    ))(err));
                }
            }
        }
    }
    Ok(deleted)
}
