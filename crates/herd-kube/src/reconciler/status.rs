//! How an instance fares, judged from its Deployments and setup Job, and how
//! that judgement reaches the resource's status and Herd's database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::applied::{Applied, ChildKey, Written};
use super::stores::{ChildStores, is_kind};
use super::{ReconcileError, TenantBackend};
use crate::children::Child;
use crate::crd::{
    DEGRADED, InstanceCondition, MastodonInstance, MastodonInstanceStatus, PROGRESSING, READY,
};

/// Pods becoming Ready trigger a pass through the watches; this only covers
/// what no watch reports.
const RECHECK_PROGRESSING: Duration = Duration::from_secs(10);
const RECHECK_DEGRADED: Duration = Duration::from_secs(60);
const RECHECK_READY: Duration = Duration::from_secs(300);
/// A status that differs from the written one only in its messages (one
/// more pod available) is written at most this often: such a change decides
/// nothing, and every write is a request that wakes each watcher of the
/// resource. During a fleet upgrade these were most of Herd's requests.
const MESSAGES_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// The workloads of one instance as the API server last reported them.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub deployments: Vec<Deployment>,
    pub jobs: Vec<Job>,
}

impl Observed {
    /// The desired Deployments and Jobs as their watches show them, none
    /// older than `applied` wrote it: one the watch has not shown yet counts
    /// as not yet observed, one it shows at an older generation as an update
    /// not yet observed. Children no longer desired are left out, even before
    /// their deletion reaches the watch.
    pub(crate) fn seen(stores: &ChildStores, children: &[Child], applied: &Applied) -> Observed {
        let mut observed = Observed::default();
        for child in children {
            let written = applied.children.get(&ChildKey::of(child));
            let namespace = child.namespace().unwrap_or_default();
            if is_kind::<Deployment>(&child.resource) {
                let seen = stores.deployment(namespace, child.name());
                observed.deployments.push(current(seen, child, written));
            } else if is_kind::<Job>(&child.resource) {
                let seen = stores.job(namespace, child.name());
                observed.jobs.push(current(seen, child, written));
            }
        }
        observed
    }
}

fn current<K>(seen: Option<Arc<K>>, child: &Child, written: Option<&Written>) -> K
where
    K: Resource + Clone + DeserializeOwned,
{
    let written_uid = written.map(|w| Some(w.uid.as_str()));
    match seen {
        Some(seen) if written_uid.is_none_or(|uid| seen.meta().uid.as_deref() == uid) => {
            let mut seen = Arc::unwrap_or_clone(seen);
            let generation = written.and_then(|w| w.generation);
            if seen.meta().generation < generation {
                seen.meta_mut().generation = generation;
            }
            seen
        }
        // As built, without a status: the watch has yet to show the object written.
        _ => child
            .object
            .clone()
            .try_parse()
            .expect("a child parses as its own kind"),
    }
}

/// Where one workload stands.
enum Progress {
    Done,
    Pending(String),
    Failed(String),
}

fn deployment_progress(deployment: &Deployment) -> Progress {
    let name = deployment.name_any();
    // The live count, whoever set it: Herd, or an autoscaler for a
    // Deployment Herd builds without one. Built without one and not yet
    // seen, it is the one replica the API server defaults to.
    let desired = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return Progress::Pending(format!("{name}: not yet observed"));
    };
    let stuck = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if stuck {
        return Progress::Failed(format!("{name}: rollout exceeded its progress deadline"));
    }
    if status.observed_generation < deployment.metadata.generation {
        return Progress::Pending(format!("{name}: update not yet observed"));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    // Updated pods count before they are ready: a rollout is done once no
    // old pod is left and as many pods as desired are available, as
    // `kubectl rollout status` judges it. Old pods alone keep it available.
    let old = status.replicas.unwrap_or(0) - updated;
    if old > 0 {
        return Progress::Pending(format!(
            "{name}: {updated}/{desired} updated, {old} old still running"
        ));
    }
    if updated < desired {
        return Progress::Pending(format!("{name}: {updated}/{desired} updated"));
    }
    if available < desired {
        return Progress::Pending(format!("{name}: {available}/{desired} available"));
    }
    Progress::Done
}

fn job_progress(job: &Job) -> Progress {
    let name = job.name_any();
    // Suspended along with its instance: nothing to wait for until it resumes.
    if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        return Progress::Done;
    }
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let holds = |type_: &str| {
        conditions
            .into_iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Failed") {
        Progress::Failed(format!("{name}: failed"))
    } else if holds("Complete") {
        Progress::Done
    } else {
        Progress::Pending(format!("{name}: running"))
    }
}

/// The status an instance should carry, given what was observed at `now`.
/// Conditions whose status is unchanged keep their `lastTransitionTime`.
pub(crate) fn compute_status(
    instance: &MastodonInstance,
    namespace: &str,
    observed: &Observed,
    now: &str,
) -> MastodonInstanceStatus {
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    let progress = observed
        .deployments
        .iter()
        .map(deployment_progress)
        .chain(observed.jobs.iter().map(job_progress));
    for p in progress {
        match p {
            Progress::Done => {}
            Progress::Pending(message) => pending.push(message),
            Progress::Failed(message) => failed.push(message),
        }
    }
    if observed.deployments.is_empty() {
        pending.push("no Deployments yet".to_owned());
    }

    let generation = instance.metadata.generation;
    let previous = instance.status.as_ref();
    let condition = |type_: &str, holds: bool, reason: &str, message: String| {
        let status = if holds { "True" } else { "False" };
        let last_transition_time = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
        InstanceCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: generation,
        }
    };

    let degraded = !failed.is_empty();
    let progressing = !pending.is_empty();
    let ready = !degraded && !progressing;
    let suspended = instance.spec.instance.suspended;
    let (ready_reason, ready_message) = if degraded {
        ("Degraded", failed.join("; "))
    } else if progressing {
        ("Progressing", pending.join("; "))
    } else if suspended {
        ("Suspended", "scaled to zero, data kept".to_owned())
    } else {
        ("Available", "every workload is available".to_owned())
    };
    let phase = if degraded {
        "Degraded"
    } else if !ready {
        "Provisioning"
    } else if suspended {
        "Suspended"
    } else {
        "Running"
    };

    MastodonInstanceStatus {
        observed_generation: generation,
        phase: Some(phase.to_owned()),
        namespace: Some(namespace.to_owned()),
        conditions: vec![
            condition(READY, ready, ready_reason, ready_message),
            condition(
                PROGRESSING,
                progressing,
                if progressing { "RollingOut" } else { "Settled" },
                pending.join("; "),
            ),
            condition(
                DEGRADED,
                degraded,
                if degraded {
                    "WorkloadFailed"
                } else {
                    "AsExpected"
                },
                failed.join("; "),
            ),
        ],
    }
}

/// How soon to look again when no watch event comes first.
pub(crate) fn recheck_after(status: &MastodonInstanceStatus) -> Duration {
    if status.holding(READY).is_some() {
        RECHECK_READY
    } else if status.holding(DEGRADED).is_some() {
        RECHECK_DEGRADED
    } else {
        RECHECK_PROGRESSING
    }
}

/// When this process last wrote each instance's status.
#[derive(Debug, Default)]
pub(crate) struct StatusWrites(Mutex<HashMap<String, Instant>>);

impl StatusWrites {
    fn last(&self, name: &str) -> Option<Instant> {
        self.0.lock().expect("status writes").get(name).copied()
    }

    fn wrote(&self, name: &str, at: Instant) {
        self.0
            .lock()
            .expect("status writes")
            .insert(name.to_owned(), at);
    }

    pub(crate) fn forget(&self, name: &str) {
        self.0.lock().expect("status writes").remove(name);
    }
}

/// Whether `status` needs writing over `written` at `now`, given when this
/// process last wrote it: `Err` holds how long a change of messages only
/// waits. A change of verdict, phase or generation is written at once.
fn write_due(
    written: Option<&MastodonInstanceStatus>,
    status: &MastodonInstanceStatus,
    last_write: Option<Instant>,
    now: Instant,
) -> Result<bool, Duration> {
    let Some(written) = written else {
        return Ok(true);
    };
    if written == status {
        return Ok(false);
    }
    let wait = last_write
        .map(|at| (at + MESSAGES_AT_MOST_EVERY).saturating_duration_since(now))
        .unwrap_or_default();
    if wait.is_zero() || !differs_in_messages_only(written, status) {
        Ok(true)
    } else {
        Err(wait)
    }
}

fn differs_in_messages_only(a: &MastodonInstanceStatus, b: &MastodonInstanceStatus) -> bool {
    let without_messages = |s: &MastodonInstanceStatus| {
        let mut s = s.clone();
        for condition in &mut s.conditions {
            condition.message.clear();
        }
        s
    };
    without_messages(a) == without_messages(b)
}

/// Writes `status` when it differs from what the resource carries, and
/// answers how soon to look again when a change of messages only has to
/// wait. Unchanged statuses are not written: every write wakes the
/// controller again. The backend hears of the change first, so when it fails
/// nothing is written and the next pass, seeing the same difference, tells
/// it again.
pub(crate) async fn report<B: TenantBackend>(
    api: &Api<MastodonInstance>,
    backend: &B,
    writes: &StatusWrites,
    instance: &MastodonInstance,
    status: &MastodonInstanceStatus,
) -> Result<Option<Duration>, ReconcileError> {
    let name = instance.name_any();
    let now = Instant::now();
    match write_due(instance.status.as_ref(), status, writes.last(&name), now) {
        Ok(false) => return Ok(None),
        Err(wait) => return Ok(Some(wait)),
        Ok(true) => {}
    }
    backend.status_changed(instance, status).await?;
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(ReconcileError::api(format!("writing the status of {name}")))?;
    writes.wrote(&name, now);
    Ok(None)
}

/// The current time in the format of `metav1.Time`.
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use herd_core::plan::starter_plans;
    use herd_core::spec::{DatabaseEndpoint, InstanceSpec, ObjectStoreEndpoint};

    use super::*;
    use crate::crd::MastodonInstanceSpec;
    use crate::reconciler::stores::fake::FakeStores;

    const EARLIER: &str = "2026-01-01T00:00:00Z";
    const NOW: &str = "2026-01-01T00:05:00Z";

    fn instance(suspended: bool, previous: Option<MastodonInstanceStatus>) -> MastodonInstance {
        let mut instance = MastodonInstance::new(
            "i1",
            MastodonInstanceSpec {
                instance: InstanceSpec {
                    instance_id: "i1".into(),
                    local_domain: "example.social".into(),
                    web_domain: "example.social".into(),
                    version: "4.5.0".into(),
                    owner_email: "owner@example.org".into(),
                    plan: starter_plans().remove(0),
                    suspended,
                    origin: Default::default(),
                    database: DatabaseEndpoint {
                        host: "db".into(),
                        port: 5432,
                        name: "i1".into(),
                        user: "i1".into(),
                    },
                    object_store: ObjectStoreEndpoint {
                        endpoint: "http://s3".into(),
                        region: "garage".into(),
                        bucket: "i1".into(),
                    },
                    migration: None,
                },
            },
        );
        instance.metadata.generation = Some(3);
        instance.status = previous;
        instance
    }

    fn deployment(name: &str, desired: i32, available: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "generation": 2},
            "spec": {"replicas": desired, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": desired,
                       "updatedReplicas": desired, "availableReplicas": available}
        }))
        .unwrap()
    }

    fn job(condition: Option<&str>) -> Job {
        let conditions: Vec<_> = condition
            .map(|type_| json!({"type": type_, "status": "True"}))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "setup"},
            "spec": {"template": {}},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn observed(deployments: Vec<Deployment>, job_condition: Option<&str>) -> Observed {
        Observed {
            deployments,
            jobs: vec![job(job_condition)],
        }
    }

    fn verdict(status: &MastodonInstanceStatus) -> Vec<(&str, &str)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect()
    }

    fn condition<'a>(status: &'a MastodonInstanceStatus, type_: &str) -> &'a InstanceCondition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn every_workload_available_and_setup_complete_is_ready() {
        let observed = observed(vec![deployment("web", 2, 2)], Some("Complete"));
        let status = compute_status(&instance(false, None), "mi-i1", &observed, NOW);
        assert_eq!(
            verdict(&status),
            [(READY, "True"), (PROGRESSING, "False"), (DEGRADED, "False")]
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.namespace.as_deref(), Some("mi-i1"));
        assert_eq!(status.observed_generation, Some(3));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(recheck_after(&status), RECHECK_READY);
    }

    #[test]
    fn missing_replicas_or_running_setup_is_progressing() {
        for observed in [
            observed(vec![deployment("web", 2, 1)], Some("Complete")),
            observed(vec![deployment("web", 2, 2)], None),
            observed(Vec::new(), Some("Complete")),
        ] {
            let status = compute_status(&instance(false, None), "mi-i1", &observed, NOW);
            assert_eq!(
                verdict(&status),
                [(READY, "False"), (PROGRESSING, "True"), (DEGRADED, "False")]
            );
            assert_eq!(status.phase.as_deref(), Some("Provisioning"));
            assert_eq!(recheck_after(&status), RECHECK_PROGRESSING);
        }
        let observed = observed(vec![deployment("web", 2, 1)], Some("Complete"));
        let status = compute_status(&instance(false, None), "mi-i1", &observed, NOW);
        assert_eq!(
            condition(&status, PROGRESSING).message,
            "web: 1/2 available"
        );
    }

    #[test]
    fn an_autoscaled_deployment_is_judged_by_the_replicas_it_asks_for_now() {
        for (desired, available, ready) in [(4, 3, "False"), (4, 4, "True"), (1, 1, "True")] {
            let observed = observed(
                vec![deployment("sidekiq-default", desired, available)],
                Some("Complete"),
            );
            let status = compute_status(&instance(false, None), "mi-i1", &observed, NOW);
            assert_eq!(
                condition(&status, READY).status,
                ready,
                "{desired}/{available}"
            );
        }
        let mut built = deployment("sidekiq-default", 1, 0);
        built.spec.replicas = None;
        let status = compute_status(
            &instance(false, None),
            "mi-i1",
            &observed(vec![built], Some("Complete")),
            NOW,
        );
        assert_eq!(
            condition(&status, PROGRESSING).message,
            "sidekiq-default: 0/1 available"
        );
    }

    #[test]
    fn a_rollout_whose_new_pods_are_not_ready_is_progressing() {
        // One new pod, not ready; the old one still serves.
        let mut web = deployment("web", 1, 1);
        web.status.as_mut().unwrap().replicas = Some(2);
        let status = compute_status(
            &instance(false, None),
            "mi-i1",
            &observed(vec![web], Some("Complete")),
            NOW,
        );
        assert_eq!(condition(&status, READY).status, "False");
        assert_eq!(
            condition(&status, PROGRESSING).message,
            "web: 1/1 updated, 1 old still running"
        );
    }

    #[test]
    fn an_unobserved_update_is_progressing() {
        let mut web = deployment("web", 1, 1);
        web.metadata.generation = Some(3);
        let status = compute_status(
            &instance(false, None),
            "mi-i1",
            &observed(vec![web], Some("Complete")),
            NOW,
        );
        assert_eq!(condition(&status, PROGRESSING).status, "True");
    }

    #[test]
    fn failed_setup_or_stuck_rollout_is_degraded() {
        let mut stuck = deployment("web", 1, 0);
        stuck.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"
            }))
            .unwrap(),
        ]);
        for (observed, message) in [
            (
                observed(vec![deployment("web", 1, 1)], Some("Failed")),
                "setup: failed",
            ),
            (
                observed(vec![stuck], Some("Complete")),
                "web: rollout exceeded its progress deadline",
            ),
        ] {
            let status = compute_status(&instance(false, None), "mi-i1", &observed, NOW);
            assert_eq!(condition(&status, READY).status, "False");
            assert_eq!(condition(&status, DEGRADED).status, "True");
            assert_eq!(condition(&status, DEGRADED).message, message);
            assert_eq!(status.phase.as_deref(), Some("Degraded"));
            assert_eq!(recheck_after(&status), RECHECK_DEGRADED);
        }
    }

    #[test]
    fn suspended_and_scaled_to_zero_is_ready_and_suspended() {
        let observed = observed(vec![deployment("web", 0, 0)], Some("Complete"));
        let status = compute_status(&instance(true, None), "mi-i1", &observed, NOW);
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(condition(&status, READY).reason, "Suspended");
        assert_eq!(status.phase.as_deref(), Some("Suspended"));
    }

    #[test]
    fn a_setup_job_suspended_with_its_instance_does_not_hold_up_readiness() {
        let mut setup = job(None);
        setup.spec.as_mut().unwrap().suspend = Some(true);
        let observed = Observed {
            deployments: vec![deployment("web", 0, 0)],
            jobs: vec![setup],
        };
        let status = compute_status(&instance(true, None), "mi-i1", &observed, NOW);
        assert_eq!(status.phase.as_deref(), Some("Suspended"));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let progressing = observed(vec![deployment("web", 1, 0)], Some("Complete"));
        let first = compute_status(&instance(false, None), "mi-i1", &progressing, EARLIER);
        assert!(
            first
                .conditions
                .iter()
                .all(|c| c.last_transition_time == EARLIER)
        );

        let same = compute_status(
            &instance(false, Some(first.clone())),
            "mi-i1",
            &progressing,
            NOW,
        );
        assert_eq!(
            same, first,
            "an unchanged verdict yields an identical status"
        );

        let ready = observed(vec![deployment("web", 1, 1)], Some("Complete"));
        let second = compute_status(&instance(false, Some(first)), "mi-i1", &ready, NOW);
        assert_eq!(condition(&second, READY).last_transition_time, NOW);
        assert_eq!(condition(&second, PROGRESSING).last_transition_time, NOW);
        assert_eq!(condition(&second, DEGRADED).last_transition_time, EARLIER);
    }

    #[test]
    fn a_change_of_messages_only_waits_for_its_turn_and_a_change_of_verdict_does_not() {
        let rolling = |available| {
            let observed = observed(vec![deployment("web", 3, available)], Some("Complete"));
            compute_status(&instance(false, None), "mi-i1", &observed, EARLIER)
        };
        let (one, two, three) = (rolling(1), rolling(2), rolling(3));
        let start = Instant::now();
        let later = |seconds| start + Duration::from_secs(seconds);

        assert_eq!(write_due(None, &one, None, start), Ok(true));
        assert_eq!(
            write_due(Some(&one), &one, Some(start), later(60)),
            Ok(false)
        );
        assert_eq!(
            write_due(Some(&one), &two, Some(start), later(4)),
            Err(Duration::from_secs(26)),
            "one more pod available"
        );
        assert_eq!(
            write_due(Some(&one), &two, Some(start), later(30)),
            Ok(true)
        );
        assert_eq!(
            write_due(Some(&one), &two, None, start),
            Ok(true),
            "nothing written by this process yet"
        );
        assert_eq!(
            write_due(Some(&two), &three, Some(start), later(1)),
            Ok(true),
            "ready now"
        );
    }

    /// `object` in the test instance's namespace, as the API server holds it.
    fn child<K>(object: &K, uid: Option<&str>) -> Child
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
    {
        let mut child = Child::from_typed(object);
        child.object.metadata.namespace = Some("mi-i1".into());
        child.object.metadata.uid = uid.map(str::to_owned);
        child
    }

    /// The desired web Deployment and setup Job, and a record of writing
    /// them at `generation`.
    fn desired(generation: i64) -> (Vec<Child>, Applied) {
        let mut web = deployment("web", 1, 1);
        web.status = None;
        let mut setup = job(None);
        setup.status = None;
        let children = vec![child(&web, None), child(&setup, None)];
        let now = std::time::Instant::now();
        let applied = Applied {
            hash: 0,
            at: now,
            resync_at: now,
            children: children
                .iter()
                .map(|c| {
                    let written = Written {
                        uid: format!("uid-{}", c.name()),
                        generation: Some(generation),
                        resource_version: None,
                        digest: 0,
                    };
                    (ChildKey::of(c), written)
                })
                .collect(),
        };
        (children, applied)
    }

    fn judged(fake: &FakeStores, children: &[Child], applied: &Applied) -> MastodonInstanceStatus {
        let observed = Observed::seen(&fake.stores(), children, applied);
        compute_status(&instance(false, None), "mi-i1", &observed, NOW)
    }

    #[test]
    fn workloads_as_their_watches_show_them_decide() {
        let (children, applied) = desired(2);
        let mut fake = FakeStores::new();
        let web = child(&deployment("web", 1, 1), Some("uid-web"));
        let setup = child(&job(Some("Complete")), Some("uid-setup"));
        fake.put(&web.resource, web.object);
        fake.put(&setup.resource, setup.object);
        let status = judged(&fake, &children, &applied);
        assert_eq!(status.phase.as_deref(), Some("Running"));

        // Gone from the desired set, not yet from the watch: no longer counts.
        let extra = child(&deployment("sidekiq-extra", 1, 0), Some("uid-extra"));
        fake.put(&extra.resource, extra.object);
        assert_eq!(judged(&fake, &children, &applied), status);
    }

    #[test]
    fn workloads_their_watches_have_not_shown_are_not_yet_observed() {
        let (children, applied) = desired(2);
        let mut fake = FakeStores::new();
        let status = judged(&fake, &children, &applied);
        assert_eq!(
            condition(&status, PROGRESSING).message,
            "web: not yet observed; setup: running"
        );

        // An older object of the same name is not the one written.
        let web = child(&deployment("web", 1, 1), Some("another-uid"));
        fake.put(&web.resource, web.object);
        let status = judged(&fake, &children, &applied);
        assert_eq!(
            condition(&status, PROGRESSING).message,
            "web: not yet observed; setup: running"
        );
    }

    #[test]
    fn a_watch_behind_the_last_write_is_an_update_not_yet_observed() {
        let (children, applied) = desired(3);
        let mut fake = FakeStores::new();
        let web = child(&deployment("web", 1, 1), Some("uid-web"));
        let setup = child(&job(Some("Complete")), Some("uid-setup"));
        fake.put(&web.resource, web.object);
        fake.put(&setup.resource, setup.object);
        let status = judged(&fake, &children, &applied);
        assert_eq!(
            condition(&status, PROGRESSING).message,
            "web: update not yet observed"
        );
    }
}
