//! The controller: what wakes a reconciliation, the pass itself inside the
//! finalizer, and what happens after a failure.
//!
//! Most passes are woken by a child's status changing (pods turning Ready,
//! the setup Job completing) with nothing to write: such a pass judges the
//! status from the watches' stores and sends no request unless the status
//! changed (a change of its messages alone at most every 30 s). Children are
//! written when the desired set changes, when one is deleted or its spec
//! changed by someone else, on the first pass of this process and on a
//! periodic resync. Pruning reads the same stores, so no pass lists anything.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::{Action, Config, Error as ControllerError, trigger_self};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::CancelableJoinHandle;
use kube::runtime::{WatchStreamExt, applier, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::runtime::Handle;
use tracing::Instrument;

use super::applied::{
    Applied, AppliedSets, ChildKey, Due, WATCH_LAG, Written, desired_hash, due, to_write,
};
use super::backoff::FailureBackoff;
use super::status::{Observed, StatusWrites, compute_status, recheck_after};
use super::stores::ChildStores;
use super::{ReconcileError, TenantBackend, apply, cleanup, status};
use crate::children::{ClusterProfile, namespace_name};
use crate::crd::{FINALIZER, MastodonInstance};
use crate::manifests;

const RETRY_BASE: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Namespace deletion takes seconds; polling is the fallback when the
/// namespace's own deletion event does not map back to the instance.
const NAMESPACE_POLL: Duration = Duration::from_secs(2);
/// Bursts of child events (pods becoming ready one by one) collapse into one pass.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// Passes at once. Each pass sends its writes one after the other, so with
/// few passes a burst of new instances waits for a free one (at 16, the
/// median instance of an N = 1,000 provisioning waited 137 s for its first
/// pass); the bound keeps the load on the API server in check after a
/// restart, when every instance is due at once.
const CONCURRENCY: u16 = 48;

struct Context<B> {
    client: Client,
    backend: Arc<B>,
    profile: ClusterProfile,
    backoff: FailureBackoff,
    stores: ChildStores,
    applied: Arc<AppliedSets>,
    status_writes: StatusWrites,
}

/// The reconciler of a cluster, configured before it runs.
pub struct Reconciler<B> {
    client: Client,
    backend: Arc<B>,
    profile: ClusterProfile,
    instance_selector: Option<String>,
    alongside: Option<Alongside>,
}

/// The instances and their Deployments as the reconciler's watches show
/// them, for a task that runs beside it and needs no watches of its own.
/// Deployments come without their pod template and managed fields.
#[derive(Clone)]
pub struct WatchedStores {
    pub instances: Store<MastodonInstance>,
    pub deployments: Store<Deployment>,
}

type Alongside = Box<dyn FnOnce(WatchedStores) -> BoxFuture<'static, ()> + Send>;

impl<B: TenantBackend> Reconciler<B> {
    pub fn new(client: Client, backend: Arc<B>, profile: ClusterProfile) -> Reconciler<B> {
        Reconciler {
            client,
            backend,
            profile,
            instance_selector: None,
            alongside: None,
        }
    }

    /// Runs `task` beside the reconciler, from its start, on the stores its
    /// watches fill; the task stops on its own.
    pub fn alongside(
        mut self,
        task: impl FnOnce(WatchedStores) -> BoxFuture<'static, ()> + Send + 'static,
    ) -> Reconciler<B> {
        self.alongside = Some(Box::new(task));
        self
    }

    /// Reconciles only the instances matching a label selector, so several
    /// reconcilers can share a cluster, each with its own slice.
    pub fn instance_selector(mut self, selector: impl Into<String>) -> Reconciler<B> {
        self.instance_selector = Some(selector.into());
        self
    }

    /// Runs until `shutdown` resolves, then lets the passes under way finish.
    /// What it applied is remembered for as long as it runs: a new run, in
    /// this process or another, applies every instance once.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
        let client = self.client;
        let mut instances = watcher::Config::default();
        if let Some(selector) = &self.instance_selector {
            instances = instances.labels(selector);
        }
        let writer = Writer::default();
        let store = writer.as_reader();
        let own = trigger_self(
            watcher(Api::<MastodonInstance>::all(client.clone()), instances)
                .default_backoff()
                .reflect(writer)
                .applied_objects(),
            (),
        );
        // Every kind an instance is made of, its namespace included: a child
        // deleted, or whose spec someone else changed, is repaired at once
        // (other edits at the next resync), and workload status changes
        // reach the instance's status without waiting for a requeue.
        let applied = Arc::new(AppliedSets::default());
        let (stores, children) = ChildStores::watch(&client, &store, &applied);
        let alongside = self.alongside.map(|task| {
            task(WatchedStores {
                instances: store.clone(),
                deployments: stores.deployments(),
            })
        });
        let queue =
            stream::select_all(children.into_iter().chain([own.boxed()])).take_until(shutdown);
        let context = Arc::new(Context {
            client,
            backend: self.backend,
            profile: self.profile,
            backoff: FailureBackoff::new(RETRY_BASE, RETRY_MAX),
            stores,
            applied,
            status_writes: StatusWrites::default(),
        });
        tracing::info!("reconciler started");
        let reconciling = applier(
            |instance, context| {
                // A task per pass, so passes run on every worker thread.
                CancelableJoinHandle::spawn(
                    reconcile(instance, context).in_current_span(),
                    &Handle::current(),
                )
            },
            error_policy,
            context,
            store,
            queue,
            Config::default()
                .debounce(DEBOUNCE)
                .concurrency(CONCURRENCY),
        )
        .for_each(|result| async move { log_outcome(result) });
        match alongside {
            Some(task) => {
                futures::join!(reconciling, task);
            }
            None => reconciling.await,
        }
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
                    let action =
                        cleanup::cleanup(&context.client, context.backend.as_ref(), &instance)
                            .await?;
                    context.applied.forget(&instance.spec.instance.instance_id);
                    context.status_writes.forget(&instance.name_any());
                    Ok(action)
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

/// One pass over a live instance: children when due, pruning, status.
async fn apply_instance<B: TenantBackend>(
    context: &Context<B>,
    api: &Api<MastodonInstance>,
    instance: &MastodonInstance,
) -> Result<Action, ReconcileError> {
    context
        .stores
        .ready()
        .await
        .map_err(|_| ReconcileError::WatchesStopped)?;
    let instance_id = &instance.spec.instance.instance_id;
    let namespace = namespace_name(instance_id);
    let children = {
        let secrets = context.backend.secrets(instance).await?;
        manifests::desired_children(instance, &secrets, &context.profile)
    };
    let hash = desired_hash(&children);
    let last = context.applied.get(instance_id);
    let reason = due(
        last.as_deref(),
        hash,
        Instant::now(),
        &children,
        &context.stores,
    );
    let applied = match (last, reason) {
        (Some(last), None) => last,
        (last, reason) => {
            let reason = reason.unwrap_or(Due::Unrecorded);
            let writes = to_write(&reason, last.as_deref(), &children);
            match &reason {
                Due::Drift { what, .. } => tracing::info!(drift = %what, "repairing a child"),
                reason => tracing::debug!(?reason, writes = writes.len(), "applying children"),
            }
            let ticket = context.applied.begin(instance_id);
            // Children left unwritten stand as the last pass wrote them.
            let mut written: HashMap<ChildKey, Written> = last
                .map(|last| {
                    children
                        .iter()
                        .filter_map(|child| {
                            let key = ChildKey::of(child);
                            last.children.get(&key).map(|w| (key, w.clone()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            written.extend(apply::apply_all(&context.client, &context.stores, &writes).await?);
            let now = Instant::now();
            let applied = Arc::new(Applied {
                hash,
                at: now,
                resync_at: context.applied.resync_at(instance_id, now),
                children: written,
            });
            context.applied.record(instance_id, ticket, applied.clone());
            applied
        }
    };
    let pruned = apply::prune(
        &context.client,
        &context.stores,
        &namespace,
        instance_id,
        &children,
    )
    .await?;
    if !pruned.is_empty() {
        tracing::info!(?pruned, "deleted children no longer desired");
    }
    let observed = Observed::seen(&context.stores, &children, &applied);
    let status = compute_status(instance, &namespace, &observed, &status::now());
    let unwritten = status::report(
        api,
        context.backend.as_ref(),
        &context.status_writes,
        instance,
        &status,
    )
    .await?;
    tracing::debug!(phase = ?status.phase, children = children.len(), "reconciled");
    let now = Instant::now();
    let resync = applied.resync_at.saturating_duration_since(now);
    // One more look once the watches must have caught up with this pass's
    // writes: an edit made meanwhile could not be told from lag until then.
    let settled = (applied.at + WATCH_LAG).saturating_duration_since(now);
    let recheck = recheck_after(&status)
        .min(resync)
        .min(unwritten.unwrap_or(Duration::MAX));
    Ok(Action::requeue(if settled.is_zero() {
        recheck
    } else {
        recheck.min(settled)
    }))
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
