//! How an instance fares, judged from its Deployments and setup Job, and how
//! that judgement reaches the resource's status and Herd's database.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::{ReconcileError, TenantBackend};
use crate::crd::{InstanceCondition, MastodonInstance, MastodonInstanceStatus};

pub(crate) const READY: &str = "Ready";
pub(crate) const PROGRESSING: &str = "Progressing";
pub(crate) const DEGRADED: &str = "Degraded";

/// Pods becoming Ready trigger a pass through the watches; this only covers
/// what no watch reports.
const RECHECK_PROGRESSING: Duration = Duration::from_secs(10);
const RECHECK_DEGRADED: Duration = Duration::from_secs(60);
const RECHECK_READY: Duration = Duration::from_secs(300);

/// The workloads of one instance as the API server last reported them.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub deployments: Vec<Deployment>,
    pub jobs: Vec<Job>,
}

impl Observed {
    pub(crate) async fn fetch(
        client: &Client,
        namespace: &str,
        selector: &str,
    ) -> Result<Observed, ReconcileError> {
        let params = ListParams::default().labels(selector);
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map_err(ReconcileError::api(format!(
                "listing Deployments in {namespace}"
            )))?;
        let jobs = Api::<Job>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map_err(ReconcileError::api(format!("listing Jobs in {namespace}")))?;
        Ok(Observed {
            deployments: deployments.items,
            jobs: jobs.items,
        })
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
    if updated < desired || available < desired {
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
    let holds = |type_: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if holds(READY) {
        RECHECK_READY
    } else if holds(DEGRADED) {
        RECHECK_DEGRADED
    } else {
        RECHECK_PROGRESSING
    }
}

/// Writes `status` when it differs from what the resource carries. Unchanged
/// statuses are not written: every write wakes the controller again. The
/// backend hears of the change first, so when it fails nothing is written and
/// the next pass, seeing the same difference, tells it again.
pub(crate) async fn report<B: TenantBackend>(
    api: &Api<MastodonInstance>,
    backend: &B,
    instance: &MastodonInstance,
    status: &MastodonInstanceStatus,
) -> Result<(), ReconcileError> {
    if instance.status.as_ref() == Some(status) {
        return Ok(());
    }
    backend.status_changed(instance, status).await?;
    let name = instance.name_any();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(ReconcileError::api(format!("writing the status of {name}")))?;
    Ok(())
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
}
