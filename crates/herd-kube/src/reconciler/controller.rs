//! The Controller: what wakes a reconciliation, the pass itself inside the
//! finalizer, and what happens after a failure.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Error as ControllerError};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::Instrument;

use super::backoff::FailureBackoff;
use super::status::{Observed, compute_status, recheck_after};
use super::{ReconcileError, TenantBackend, apply, cleanup, status};
use crate::children::{
    ClusterProfile, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, namespace_name,
};
use crate::crd::{FINALIZER, MastodonInstance};
use crate::manifests;

const RETRY_BASE: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Namespace deletion takes seconds; polling is the fallback when the
/// namespace's own deletion event does not map back to the instance.
const NAMESPACE_POLL: Duration = Duration::from_secs(2);
/// Bursts of child events (pods becoming ready one by one) collapse into one pass.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// Bounds the load on the API server after a restart, when every instance is due at once.
const CONCURRENCY: u16 = 16;

struct Context<B> {
    client: Client,
    backend: Arc<B>,
    profile: ClusterProfile,
    backoff: FailureBackoff,
}

/// The reconciler of a cluster, configured before it runs.
pub struct Reconciler<B> {
    client: Client,
    backend: Arc<B>,
    profile: ClusterProfile,
    instance_selector: Option<String>,
}

impl<B: TenantBackend> Reconciler<B> {
    pub fn new(client: Client, backend: Arc<B>, profile: ClusterProfile) -> Reconciler<B> {
        Reconciler {
            client,
            backend,
            profile,
            instance_selector: None,
        }
    }

    /// Reconciles only the instances matching a label selector, so several
    /// reconcilers can share a cluster, each with its own slice.
    pub fn instance_selector(mut self, selector: impl Into<String>) -> Reconciler<B> {
        self.instance_selector = Some(selector.into());
        self
    }

    /// Runs until `shutdown` resolves, then lets the passes under way finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
        let client = self.client;
        let mut instances = watcher::Config::default();
        if let Some(selector) = &self.instance_selector {
            instances = instances.labels(selector);
        }
        let controller = Controller::new(Api::<MastodonInstance>::all(client.clone()), instances)
            .with_config(
                Config::default()
                    .debounce(DEBOUNCE)
                    .concurrency(CONCURRENCY),
            );
        let store = controller.store();
        let children =
            watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        // Every kind an instance is made of, its namespace included: a child
        // deleted or changed by hand is repaired at once, and workload status
        // changes reach the instance's status without waiting for a requeue.
        let controller =
            manifests::child_resources()
                .into_iter()
                .fold(controller, |controller, resource| {
                    // Metadata only: enough to find the instance, and Secret
                    // values never reach this process through a watch.
                    let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(
                        client.clone(),
                        &resource,
                    );
                    let store = store.clone();
                    controller.watches_with(api, resource, children.clone(), move |child| {
                        owning_instance(&store, &child)
                    })
                });
        let context = Arc::new(Context {
            client,
            backend: self.backend,
            profile: self.profile,
            backoff: FailureBackoff::new(RETRY_BASE, RETRY_MAX),
        });
        tracing::info!("reconciler started");
        controller
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, context)
            .for_each(|result| async move { log_outcome(result) })
            .await;
        tracing::info!("reconciler stopped");
    }
}

/// Runs the reconciler over every `MastodonInstance` of the cluster until
/// `shutdown` resolves.
pub async fn run<B: TenantBackend>(
    client: Client,
    backend: Arc<B>,
    profile: ClusterProfile,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    Reconciler::new(client, backend, profile)
        .run(shutdown)
        .await;
}

fn owning_instance(
    store: &Store<MastodonInstance>,
    child: &PartialObjectMeta<DynamicObject>,
) -> Option<ObjectRef<MastodonInstance>> {
    let instance_id = child.labels().get(LABEL_INSTANCE)?;
    store
        .find(|instance| &instance.spec.instance.instance_id == instance_id)
        .map(|instance| ObjectRef::from_obj(&*instance))
}

async fn reconcile<B: TenantBackend>(
    instance: Arc<MastodonInstance>,
    context: Arc<Context<B>>,
) -> Result<Action, ReconcileError> {
    let name = instance.name_any();
    let span = tracing::info_span!("reconcile", instance = %name);
    async move {
        let api: Api<MastodonInstance> = Api::all(context.client.clone());
        let action = finalizer(&api, FINALIZER, instance, |event| async {
            match event {
                Event::Apply(instance) => apply_instance(&context, &api, &instance).await,
                Event::Cleanup(instance) => {
                    cleanup::cleanup(&context.client, context.backend.as_ref(), &instance).await
                }
            }
        })
        .await
        .map_err(|err| ReconcileError::Finalizer(Box::new(err)))?;
        context.backoff.succeeded(&name);
        Ok(action)
    }
    .instrument(span)
    .await
}

/// One pass over a live instance: children, pruning, status.
async fn apply_instance<B: TenantBackend>(
    context: &Context<B>,
    api: &Api<MastodonInstance>,
    instance: &MastodonInstance,
) -> Result<Action, ReconcileError> {
    let instance_id = &instance.spec.instance.instance_id;
    let namespace = namespace_name(instance_id);
    let children = {
        let secrets = context.backend.secrets(instance).await?;
        manifests::desired_children(instance, &secrets, &context.profile)
    };
    apply::apply_all(&context.client, &children).await?;
    let selector = apply::instance_selector(instance_id);
    let pruned = apply::prune(
        &context.client,
        &namespace,
        &selector,
        &manifests::child_resources(),
        &children,
    )
    .await?;
    if !pruned.is_empty() {
        tracing::info!(?pruned, "deleted children no longer desired");
    }
    let observed = Observed::fetch(&context.client, &namespace, &selector).await?;
    let status = compute_status(instance, &namespace, &observed, &status::now());
    status::report(api, context.backend.as_ref(), instance, &status).await?;
    tracing::debug!(phase = ?status.phase, children = children.len(), "reconciled");
    Ok(Action::requeue(recheck_after(&status)))
}

fn error_policy<B: TenantBackend>(
    instance: Arc<MastodonInstance>,
    error: &ReconcileError,
    context: Arc<Context<B>>,
) -> Action {
    if let ReconcileError::NamespaceTerminating(namespace) = error.cause() {
        tracing::debug!(instance = %instance.name_any(), %namespace, "waiting for the namespace to go");
        return Action::requeue(NAMESPACE_POLL);
    }
    let name = instance.name_any();
    let wait = context.backoff.failed(&name);
    tracing::warn!(instance = %name, error = %error, retry_in = ?wait, "reconciliation failed");
    Action::requeue(wait)
}

fn log_outcome(
    result: Result<
        (ObjectRef<MastodonInstance>, Action),
        ControllerError<ReconcileError, watcher::Error>,
    >,
) {
    match result {
        Ok(_)
        | Err(ControllerError::ReconcilerFailed(..))
        | Err(ControllerError::ObjectNotFound(_)) => {}
        Err(err) => tracing::warn!(error = %err, "reconciler queue"),
    }
}
