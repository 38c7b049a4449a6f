//! The children of every instance as their watches last reported them.
//!
//! The same watches wake the reconciler, and each event reaches its store
//! before the pass it wakes, so a pass woken by a Deployment turning
//! Available finds it Available here without asking the API server.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PodTemplateSpec};
use kube::api::{ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{ReconcileReason, ReconcileRequest, trigger_with};
use kube::runtime::reflector::store::{Writer, WriterDropped};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::applied::{AppliedSets, ChildKey};
use crate::children::{Child, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY};
use crate::crd::MastodonInstance;
use crate::manifests;

/// Requests to reconcile an instance, one stream per watched kind.
pub(crate) type Triggers =
    BoxStream<'static, Result<ReconcileRequest<MastodonInstance>, watcher::Error>>;

pub(crate) fn is_kind<K: k8s_openapi::Resource>(resource: &ApiResource) -> bool {
    resource.group == K::GROUP && resource.kind == K::KIND
}

/// Deployments and Jobs in full, for their status; every other kind by its
/// metadata only, which is all a pass needs of it, and Secret values never
/// reach this process through a watch.
#[derive(Clone)]
pub(crate) struct ChildStores {
    metadata: Vec<(ApiResource, Store<PartialObjectMeta<DynamicObject>>)>,
    deployments: Store<Deployment>,
    jobs: Store<Job>,
}

/// What a watch last showed of one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
}

impl Seen {
    fn of<K: Resource>(object: &K) -> Seen {
        Seen {
            uid: object.meta().uid.clone(),
            generation: object.meta().generation,
            resource_version: object.meta().resource_version.clone(),
        }
    }
}

impl ChildStores {
    /// Starts nothing by itself: the stores fill as the returned streams are
    /// polled, and each item of those wakes the instance the child belongs to.
    /// A child's deletion is also told to `applied`, so the next pass writes.
    pub(crate) fn watch(
        client: &Client,
        instances: &Store<MastodonInstance>,
        applied: &Arc<AppliedSets>,
    ) -> (ChildStores, Vec<Triggers>) {
        let watch = Watch {
            instances: instances.clone(),
            applied: applied.clone(),
        };
        let mut triggers = Vec::new();
        let mut metadata = Vec::new();
        for resource in manifests::child_resources() {
            if is_kind::<Deployment>(&resource) || is_kind::<Job>(&resource) {
                continue;
            }
            let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &resource);
            let (store, trigger) = watch.reflect(api, resource.clone(), resource.clone(), |_| {});
            metadata.push((resource, store));
            triggers.push(trigger);
        }
        // The pod template is most of a workload's size, and judging the
        // status never reads it.
        let (deployments, trigger) = watch.reflect(
            Api::all(client.clone()),
            (),
            ApiResource::erase::<Deployment>(&()),
            |deployment: &mut Deployment| deployment.spec.template = PodTemplateSpec::default(),
        );
        triggers.push(trigger);
        let (jobs, trigger) = watch.reflect(
            Api::all(client.clone()),
            (),
            ApiResource::erase::<Job>(&()),
            |job: &mut Job| {
                if let Some(spec) = job.spec.as_mut() {
                    spec.template = PodTemplateSpec::default();
                }
            },
        );
        triggers.push(trigger);
        let stores = ChildStores {
            metadata,
            deployments,
            jobs,
        };
        (stores, triggers)
    }

    /// Resolves once every watch has listed its kind: before that, a child
    /// missing from a store may only not be listed yet.
    pub(crate) async fn ready(&self) -> Result<(), WriterDropped> {
        for (_, store) in &self.metadata {
            store.wait_until_ready().await?;
        }
        self.deployments.wait_until_ready().await?;
        self.jobs.wait_until_ready().await
    }

    pub(crate) fn seen(&self, child: &Child) -> Option<Seen> {
        let name = child.name();
        let namespace = child.namespace();
        if is_kind::<Deployment>(&child.resource) {
            get(&self.deployments, ObjectRef::new(name), namespace).map(|d| Seen::of(&*d))
        } else if is_kind::<Job>(&child.resource) {
            get(&self.jobs, ObjectRef::new(name), namespace).map(|j| Seen::of(&*j))
        } else {
            let (resource, store) = self.metadata.iter().find(|(r, _)| *r == child.resource)?;
            get(
                store,
                ObjectRef::new_with(name, resource.clone()),
                namespace,
            )
            .map(|object| Seen::of(&*object))
        }
    }

    pub(crate) fn deployments(&self) -> Store<Deployment> {
        self.deployments.clone()
    }

    pub(crate) fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments
            .get(&ObjectRef::new(name).within(namespace))
    }

    pub(crate) fn job(&self, namespace: &str, name: &str) -> Option<Arc<Job>> {
        self.jobs.get(&ObjectRef::new(name).within(namespace))
    }

    /// The instance's children in `namespace` that `wanted` does not hold
    /// and that are not already being deleted, as kind and name. The
    /// namespace itself is never among them.
    pub(crate) fn unwanted(
        &self,
        namespace: &str,
        instance_id: &str,
        wanted: &HashSet<(&str, &str, &str)>,
    ) -> Vec<(ApiResource, String)> {
        let scope = Scope {
            namespace,
            instance_id,
            wanted,
        };
        let mut unwanted = Vec::new();
        for (resource, store) in &self.metadata {
            if !is_kind::<Namespace>(resource) {
                unwanted.extend(scope.unwanted(store, resource));
            }
        }
        unwanted.extend(scope.unwanted(&self.deployments, &ApiResource::erase::<Deployment>(&())));
        unwanted.extend(scope.unwanted(&self.jobs, &ApiResource::erase::<Job>(&())));
        unwanted
    }
}

fn get<K>(store: &Store<K>, key: ObjectRef<K>, namespace: Option<&str>) -> Option<Arc<K>>
where
    K: Resource + Clone,
    K::DynamicType: Clone + Eq + Hash,
{
    let key = match namespace {
        Some(namespace) => key.within(namespace),
        None => key,
    };
    store.get(&key)
}

struct Scope<'a> {
    namespace: &'a str,
    instance_id: &'a str,
    wanted: &'a HashSet<(&'a str, &'a str, &'a str)>,
}

impl Scope<'_> {
    fn unwanted<K>(&self, store: &Store<K>, resource: &ApiResource) -> Vec<(ApiResource, String)>
    where
        K: Resource + Clone,
        K::DynamicType: Clone + Eq + Hash,
    {
        let kind = (resource.group.as_str(), resource.kind.as_str());
        store
            .state_filter(|object| {
                let meta = object.meta();
                meta.namespace.as_deref() == Some(self.namespace)
                    && object.labels().get(LABEL_INSTANCE).map(String::as_str)
                        == Some(self.instance_id)
                    && meta.deletion_timestamp.is_none()
                    && !self.wanted.contains(&(
                        kind.0,
                        kind.1,
                        meta.name.as_deref().unwrap_or_default(),
                    ))
            })
            .iter()
            .map(|object| (resource.clone(), object.name_any()))
            .collect()
    }
}

struct Watch {
    instances: Store<MastodonInstance>,
    applied: Arc<AppliedSets>,
}

impl Watch {
    /// A store of every child of one kind Herd manages, and the stream that
    /// fills it and wakes the owning instances. `trim` drops what a pass never
    /// reads; managed fields go in every case.
    fn reflect<K>(
        &self,
        api: Api<K>,
        dyntype: K::DynamicType,
        resource: ApiResource,
        mut trim: impl FnMut(&mut K) + Send + 'static,
    ) -> (Store<K>, Triggers)
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Clone + Eq + Hash + Send + Sync + 'static,
    {
        let writer = Writer::new(dyntype.clone());
        let store = writer.as_reader();
        let config = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let applied = self.applied.clone();
        let deleted_kind = resource.clone();
        let events = watcher(api, config)
            .default_backoff()
            .modify(move |object: &mut K| {
                object.meta_mut().managed_fields = None;
                trim(object);
            })
            .reflect(writer)
            .inspect_ok(move |event| {
                if let watcher::Event::Delete(object) = event
                    && let Some(instance_id) = object.labels().get(LABEL_INSTANCE)
                {
                    let key = ChildKey {
                        group: deleted_kind.group.clone(),
                        kind: deleted_kind.kind.clone(),
                        name: object.name_any(),
                    };
                    applied.child_deleted(instance_id, &key, object.meta().uid.as_deref());
                }
            })
            .touched_objects();
        let instances = self.instances.clone();
        let triggers = trigger_with(events, move |child: K| {
            let related = ObjectRef::from_obj_with(&child, dyntype.clone()).erase();
            owning_instance(&instances, &child).map(|obj_ref| ReconcileRequest {
                obj_ref,
                reason: ReconcileReason::RelatedObjectUpdated {
                    obj_ref: Box::new(related),
                },
            })
        });
        (store, triggers.boxed())
    }
}

fn owning_instance<K: Resource>(
    instances: &Store<MastodonInstance>,
    child: &K,
) -> Option<ObjectRef<MastodonInstance>> {
    let instance_id = child.labels().get(LABEL_INSTANCE)?;
    instances
        .find(|instance| &instance.spec.instance.instance_id == instance_id)
        .map(|instance| ObjectRef::from_obj(&*instance))
}

/// Stores filled by hand, as the watches would fill them.
#[cfg(test)]
pub(crate) mod fake {
    use kube::core::PartialObjectMetaExt;

    use super::*;

    pub(crate) struct FakeStores {
        metadata: Vec<(ApiResource, Writer<PartialObjectMeta<DynamicObject>>)>,
        deployments: Writer<Deployment>,
        jobs: Writer<Job>,
    }

    impl FakeStores {
        pub(crate) fn new() -> FakeStores {
            FakeStores {
                metadata: manifests::child_resources()
                    .into_iter()
                    .map(|resource| (resource.clone(), Writer::new(resource)))
                    .collect(),
                deployments: Writer::default(),
                jobs: Writer::default(),
            }
        }

        pub(crate) fn stores(&self) -> ChildStores {
            ChildStores {
                metadata: self
                    .metadata
                    .iter()
                    .map(|(resource, writer)| (resource.clone(), writer.as_reader()))
                    .collect(),
                deployments: self.deployments.as_reader(),
                jobs: self.jobs.as_reader(),
            }
        }

        pub(crate) fn put(&mut self, resource: &ApiResource, object: DynamicObject) {
            self.event(resource, object, true);
        }

        pub(crate) fn remove(&mut self, child: &Child) {
            self.event(&child.resource, child.object.clone(), false);
        }

        fn event(&mut self, resource: &ApiResource, object: DynamicObject, present: bool) {
            fn event<K>(object: K, present: bool) -> watcher::Event<K> {
                if present {
                    watcher::Event::Apply(object)
                } else {
                    watcher::Event::Delete(object)
                }
            }
            if is_kind::<Deployment>(resource) {
                let object = object.try_parse().expect("a Deployment");
                self.deployments
                    .apply_watcher_event(&event(object, present));
            } else if is_kind::<Job>(resource) {
                let object = object.try_parse().expect("a Job");
                self.jobs.apply_watcher_event(&event(object, present));
            } else {
                let (_, writer) = self
                    .metadata
                    .iter_mut()
                    .find(|(r, _)| r == resource)
                    .expect("a child kind");
                let object = object.metadata.into_response_partial();
                writer.apply_watcher_event(&event(object, present));
            }
        }
    }
}
