//! The Sidekiq autoscaler: every interval, for each running instance of a
//! cluster, reads how long the oldest job of each queue has waited in the
//! tenant's Redis, asks [`herd_core::autoscale::decide`] what to do, and
//! writes the replicas of the groups it owns.
//!
//! It writes with Server-Side Apply under a field manager of its own, which
//! the reconciler's apply leaves alone because it omits the replicas of
//! autoscaled Deployments. The time of its last change is an annotation on
//! the Deployment, so the cooldowns hold across restarts and changes of the
//! lease holder; only the start of a calm spell is kept in memory, and a new
//! holder merely waits one more window before it shrinks a group. It runs
//! under the reconciler's lease, so a cluster is autoscaled once.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, future, stream};
use herd_core::autoscale::{self, AutoscalePolicy, Observation};
use herd_core::plan::SidekiqGroup;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use redis::IntoConnectionInfo;
use serde::Serialize;
use serde_json::json;
use thiserror::Error;

use crate::children::namespace_name;
use crate::crd::MastodonInstance;
use crate::manifests::sidekiq_deployment_name;
use crate::reconciler::{BackendError, TenantBackend, WatchedStores};

/// The field manager of the replicas the autoscaler sets.
pub const FIELD_MANAGER: &str = "herd-autoscaler";
/// When the autoscaler last changed a Deployment's replicas (RFC 3339).
pub const LAST_SCALED_ANNOTATION: &str = "hosting.herd.dev/autoscaled-at";
/// The secret environment key of the tenant's Redis password.
const REDIS_PASSWORD: &str = "REDIS_PASSWORD";
/// Bounds one instance's Redis round trip, so one unreachable Redis does not
/// hold up the others.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// Instances looked at together.
const CONCURRENCY: usize = 16;
/// An unreadable Redis is tried again at every this many looks (once a
/// minute at the default interval).
const UNREADABLE_RETRY_EVERY: u32 = 4;

/// How the autoscaler decides and where it finds each tenant's Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscalerSettings {
    pub policy: AutoscalePolicy,
    /// Between two looks at every instance.
    pub interval: Duration,
    /// The tenant's Redis, with `{namespace}` standing for the instance's
    /// namespace; the password is the instance's own.
    pub redis_url: String,
}

impl Default for AutoscalerSettings {
    fn default() -> Self {
        AutoscalerSettings {
            policy: AutoscalePolicy::default(),
            interval: Duration::from_secs(15),
            redis_url: "redis://redis.{namespace}.svc:6379/0".to_owned(),
        }
    }
}

/// One change of a group's replicas, as reported to Herd.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Autoscaled {
    pub group: String,
    pub deployment: String,
    pub from: u32,
    pub to: u32,
    /// See [`autoscale::ScaleReason::name`].
    pub reason: &'static str,
    /// The group's queue latency at the decision, when it was read.
    pub latency_seconds: Option<f64>,
}

/// What the autoscaler needs of Herd besides the reconciler's backend: a
/// place to record each change.
pub trait AutoscaleBackend: TenantBackend {
    /// Records a change the autoscaler made. A failure is logged and the
    /// change stays: the replicas are already written.
    fn autoscaled(
        &self,
        instance: &MastodonInstance,
        change: &Autoscaled,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}

#[derive(Debug, Error)]
pub enum AutoscaleError {
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("tenant Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("tenant Redis did not answer within {REDIS_TIMEOUT:?}")]
    RedisTimeout,
    #[error("tenant backend: {0}")]
    Backend(#[from] BackendError),
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> AutoscaleError {
    let action = action.into();
    move |source| AutoscaleError::Api { action, source }
}

/// The autoscaler of one cluster, configured before it runs.
pub struct Autoscaler<B> {
    client: Client,
    backend: Arc<B>,
    settings: AutoscalerSettings,
    /// Since when each group (by instance id and group name) has been calm.
    calm: Mutex<HashMap<(String, String), SystemTime>>,
    unreadable: Mutex<UnreadableRedis>,
}

impl<B: AutoscaleBackend> Autoscaler<B> {
    pub fn new(client: Client, backend: Arc<B>, settings: AutoscalerSettings) -> Autoscaler<B> {
        Autoscaler {
            client,
            backend,
            settings,
            calm: Mutex::new(HashMap::new()),
            unreadable: Mutex::new(UnreadableRedis::default()),
        }
    }

    /// Runs until `shutdown` resolves, on the reconciler's stores (see
    /// [`crate::reconciler::Reconciler::alongside`]) rather than asking the
    /// API server every interval: a fleet of a thousand instances would
    /// otherwise cost a list and a thousand reads every fifteen seconds.
    pub async fn run(self, stores: WatchedStores, shutdown: impl Future<Output = ()>) {
        let WatchedStores {
            instances,
            deployments,
        } = stores;
        let scaling = async {
            let listed = future::join(instances.wait_until_ready(), deployments.wait_until_ready());
            if let (Err(_), _) | (_, Err(_)) = listed.await {
                return;
            }
            let mut ticks = tokio::time::interval(self.settings.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.pass(&instances, &deployments).await;
            }
        };
        tokio::select! {
            () = scaling => {}
            () = shutdown => {}
        }
    }

    /// One look at every instance.
    async fn pass(&self, instances: &Store<MastodonInstance>, deployments: &Store<Deployment>) {
        let instances = instances.state();
        let present: HashSet<&str> = instances
            .iter()
            .map(|i| i.spec.instance.instance_id.as_str())
            .collect();
        lock(&self.calm).retain(|(instance, _), _| present.contains(instance.as_str()));
        lock(&self.unreadable)
            .looks_since_failure
            .retain(|instance, _| present.contains(instance.as_str()));
        stream::iter(&instances)
            .for_each_concurrent(CONCURRENCY, |instance| async move {
                if let Err(err) = self.instance(instance, deployments).await {
                    tracing::warn!(
                        instance = %instance.spec.instance.instance_id,
                        error = %err,
                        "cannot autoscale the instance"
                    );
                }
            })
            .await;
    }

    /// The oldest job of each queue, or `None` when the tenant's Redis
    /// cannot be read, which is recorded and logged once per spell.
    async fn read_oldest_jobs(
        &self,
        instance: &MastodonInstance,
        namespace: &str,
        queues: &[&str],
    ) -> Option<HashMap<String, String>> {
        let instance_id = &instance.spec.instance.instance_id;
        match self.oldest_jobs(instance, namespace, queues).await {
            Ok(jobs) => {
                if lock(&self.unreadable).readable(instance_id) {
                    tracing::info!(instance = %instance_id, "queue latency readable again");
                }
                Some(jobs)
            }
            Err(err) => {
                if lock(&self.unreadable).failed(instance_id) {
                    tracing::warn!(
                        instance = %instance_id,
                        error = %err,
                        "cannot read queue latency; scaling within the plan's bounds until it can"
                    );
                } else {
                    tracing::debug!(instance = %instance_id, error = %err, "cannot read queue latency");
                }
                None
            }
        }
    }

    async fn instance(
        &self,
        instance: &MastodonInstance,
        deployments: &Store<Deployment>,
    ) -> Result<(), AutoscaleError> {
        let spec = &instance.spec.instance;
        // Suspended, Herd owns the replicas (zero); deleted, nothing is left to scale.
        if spec.suspended || instance.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let namespace = namespace_name(&spec.instance_id);
        // Not in the watch yet: the reconciler has not created it.
        let groups: Vec<(&SidekiqGroup, Arc<Deployment>)> = spec
            .plan
            .sidekiq
            .iter()
            .filter(|g| autoscale::is_autoscaled(g))
            .filter_map(|group| {
                let name = sidekiq_deployment_name(group);
                let deployment = deployments.get(&ObjectRef::new(&name).within(&namespace))?;
                Some((group, deployment))
            })
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let queues: Vec<&str> = groups
            .iter()
            .flat_map(|(group, _)| group.queues.iter().map(|q| q.name.as_str()))
            .collect();
        // Without its latency a group still returns within its bounds.
        let oldest_jobs = if lock(&self.unreadable).skips(&spec.instance_id) {
            None
        } else {
            self.read_oldest_jobs(instance, &namespace, &queues).await
        };
        let now = SystemTime::now();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
        for (group, deployment) in groups {
            let latency = oldest_jobs
                .as_ref()
                .map(|jobs| group_latency(group, jobs, now));
            self.group(instance, &deployments, group, &deployment, latency, now)
                .await?;
        }
        Ok(())
    }

    async fn group(
        &self,
        instance: &MastodonInstance,
        deployments: &Api<Deployment>,
        group: &SidekiqGroup,
        deployment: &Deployment,
        latency: Option<Duration>,
        now: SystemTime,
    ) -> Result<(), AutoscaleError> {
        let key = (
            instance.spec.instance.instance_id.clone(),
            group.name.clone(),
        );
        let replicas = deployment.spec.replicas.unwrap_or(1);
        let observed = Observation {
            replicas: u32::try_from(replicas).unwrap_or(0),
            latency,
            last_change: last_scaled(deployment),
            calm_since: lock(&self.calm).get(&key).copied(),
        };
        let decision = autoscale::decide(&self.settings.policy, group, &observed, now);
        match decision.calm_since {
            Some(since) => lock(&self.calm).insert(key, since),
            None => lock(&self.calm).remove(&key),
        };
        let Some((to, reason)) = decision.scale else {
            return Ok(());
        };
        let name = sidekiq_deployment_name(group);
        let at = Timestamp::try_from(now).unwrap_or_else(|_| Timestamp::now());
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "annotations": { LAST_SCALED_ANNOTATION: at.to_string() },
            },
            "spec": { "replicas": to },
        });
        // Forced: the reconciler owned the field while the instance was
        // suspended or the group was of fixed size, and has let go since.
        deployments
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(api_error(format!("scaling Deployment {name}")))?;
        let change = Autoscaled {
            group: group.name.clone(),
            deployment: name,
            from: observed.replicas,
            to,
            reason: reason.name(),
            latency_seconds: latency.map(|l| l.as_secs_f64()),
        };
        tracing::info!(
            instance = %instance.spec.instance.instance_id,
            group = %change.group,
            from = change.from,
            to = change.to,
            reason = change.reason,
            latency_seconds = change.latency_seconds,
            "autoscaled"
        );
        if let Err(err) = self.backend.autoscaled(instance, &change).await {
            tracing::warn!(error = %err, "cannot record an autoscaling");
        }
        Ok(())
    }

    /// The oldest job of each queue, read from the tail of its list as
    /// Sidekiq's `Queue#latency` reads it, all in one round trip.
    async fn oldest_jobs(
        &self,
        instance: &MastodonInstance,
        namespace: &str,
        queues: &[&str],
    ) -> Result<HashMap<String, String>, AutoscaleError> {
        let secrets = self.backend.secrets(instance).await?;
        let mut info = self
            .settings
            .redis_url
            .replace("{namespace}", namespace)
            .into_connection_info()?;
        if let Some(password) = secrets.env.get(REDIS_PASSWORD) {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info)?;
        let read = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            let mut pipeline = redis::pipe();
            for queue in queues {
                pipeline
                    .cmd("LRANGE")
                    .arg(format!("queue:{queue}"))
                    .arg(-1)
                    .arg(-1);
            }
            let tails: Vec<Vec<String>> = pipeline.query_async(&mut connection).await?;
            Ok::<_, AutoscaleError>(tails)
        };
        let tails = tokio::time::timeout(REDIS_TIMEOUT, read)
            .await
            .map_err(|_| AutoscaleError::RedisTimeout)??;
        Ok(queues
            .iter()
            .zip(tails)
            .filter_map(|(queue, tail)| Some(((*queue).to_owned(), tail.into_iter().next()?)))
            .collect())
    }
}

/// Instances whose Redis could not be read at the last try, with the looks
/// since: a Redis out of reach usually stays so for a while, so it is tried
/// again only every [`UNREADABLE_RETRY_EVERY`] looks, and warned about once
/// per spell rather than at every look.
#[derive(Debug, Default)]
struct UnreadableRedis {
    looks_since_failure: HashMap<String, u32>,
}

impl UnreadableRedis {
    /// Whether this look leaves the instance's Redis out: unreadable at the
    /// last try and not due again yet.
    fn skips(&mut self, instance_id: &str) -> bool {
        let Some(looks) = self.looks_since_failure.get_mut(instance_id) else {
            return false;
        };
        *looks += 1;
        *looks < UNREADABLE_RETRY_EVERY
    }

    /// Records a failed read; true when it starts a spell.
    fn failed(&mut self, instance_id: &str) -> bool {
        self.looks_since_failure
            .insert(instance_id.to_owned(), 0)
            .is_none()
    }

    /// Records a successful read; true when it ends a spell.
    fn readable(&mut self, instance_id: &str) -> bool {
        self.looks_since_failure.remove(instance_id).is_some()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A group waits as long as its slowest queue.
fn group_latency(
    group: &SidekiqGroup,
    oldest_jobs: &HashMap<String, String>,
    now: SystemTime,
) -> Duration {
    group
        .queues
        .iter()
        .map(|q| autoscale::queue_latency(oldest_jobs.get(&q.name).map(String::as_str), now))
        .max()
        .unwrap_or_default()
}

fn last_scaled(deployment: &Deployment) -> Option<SystemTime> {
    let annotations = deployment.metadata.annotations.as_ref()?;
    let at: Timestamp = annotations.get(LAST_SCALED_ANNOTATION)?.parse().ok()?;
    Some(SystemTime::from(at))
}

#[cfg(test)]
mod tests {
    use herd_core::plan::starter_plans;

    use super::*;

    #[test]
    fn a_group_waits_as_long_as_its_slowest_queue() {
        let group = starter_plans().remove(0).sidekiq.remove(0);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        let jobs = HashMap::from([
            (
                "push".to_owned(),
                r#"{"enqueued_at":1800000090.0}"#.to_owned(),
            ),
            (
                "pull".to_owned(),
                r#"{"enqueued_at":1800000040000}"#.to_owned(),
            ),
            (
                "scheduler".to_owned(),
                r#"{"enqueued_at":1700000000.0}"#.to_owned(),
            ),
        ]);
        assert_eq!(group_latency(&group, &jobs, now), Duration::from_secs(60));
        assert_eq!(group_latency(&group, &HashMap::new(), now), Duration::ZERO);
    }

    #[test]
    fn the_last_change_is_read_from_the_annotation() {
        let mut deployment = Deployment::default();
        assert_eq!(last_scaled(&deployment), None);
        deployment.metadata.annotations = Some(
            [(
                LAST_SCALED_ANNOTATION.to_owned(),
                "2027-01-15T08:00:00Z".to_owned(),
            )]
            .into(),
        );
        let at: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
        assert_eq!(last_scaled(&deployment), Some(SystemTime::from(at)));
    }

    #[test]
    fn the_redis_address_names_the_namespace() {
        let url = AutoscalerSettings::default()
            .redis_url
            .replace("{namespace}", "mi-0193a5c27f1e");
        assert_eq!(url, "redis://redis.mi-0193a5c27f1e.svc:6379/0");
    }

    #[test]
    fn an_unreadable_redis_is_tried_again_every_few_looks_and_reported_once() {
        let mut unreadable = UnreadableRedis::default();
        assert!(!unreadable.skips("a"));
        assert!(unreadable.failed("a"));
        let tried: Vec<bool> = (0..8).map(|_| !unreadable.skips("a")).collect();
        assert_eq!(
            tried,
            [false, false, false, true, true, true, true, true],
            "due again at the fourth look"
        );
        assert!(!unreadable.failed("a"), "the same spell");
        assert!(unreadable.skips("a"));
        assert!(unreadable.readable("a"));
        assert!(!unreadable.readable("a"));
        assert!(!unreadable.skips("a"));
    }
}
