//! The `MastodonInstance` custom resource: one per hosted instance.
//!
//! It is cluster-scoped because it owns a namespace of its own; deleting it
//! runs the finalizer that removes the tenant's data services, and then the
//! garbage collector removes the namespace and everything in it.

use herd_core::spec::InstanceSpec;
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "hosting.herd.dev";
/// Removes the tenant database, role, bucket and key before the resource goes.
pub const FINALIZER: &str = "hosting.herd.dev/tenant-data";
/// The one field manager every child is applied under.
pub const FIELD_MANAGER: &str = "herd";
/// The conditions the reconciler reports: exactly one of them holds.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

// Each printcolumn repeats the same keys, which the lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hosting.herd.dev",
    version = "v1alpha1",
    kind = "MastodonInstance",
    plural = "mastodoninstances",
    shortname = "mi",
    category = "herd",
    status = "MastodonInstanceStatus",
    doc = "A hosted Mastodon server, reconciled by Herd into a namespace of its own.",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.localDomain"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.plan.name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct MastodonInstanceSpec {
    #[serde(flatten)]
    pub instance: InstanceSpec,
}

/// What the reconciler last saw, reported through conditions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MastodonInstanceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A one-word summary for people: Provisioning, Running, Suspended, Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The namespace holding the instance's workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub conditions: Vec<InstanceCondition>,
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCondition {
    /// Ready, Progressing or Degraded.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What a status says of the resource at the generation someone applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Ready,
    /// What failed.
    Degraded(String),
    /// What is still pending.
    Progressing(String),
}

impl MastodonInstanceStatus {
    /// The condition `type_`, when it holds.
    pub fn holding(&self, type_: &str) -> Option<&InstanceCondition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    }

    /// How the reconciler judged the resource at `generation`: `None` while
    /// this status describes an older generation, so says nothing of it yet.
    pub fn judgement(&self, generation: Option<i64>) -> Option<Judgement> {
        if self.observed_generation < generation {
            return None;
        }
        let message = |type_| self.holding(type_).map(|c| c.message.clone());
        Some(if self.holding(READY).is_some() {
            Judgement::Ready
        } else if let Some(failed) = message(DEGRADED) {
            Judgement::Degraded(failed)
        } else {
            Judgement::Progressing(message(PROGRESSING).unwrap_or_default())
        })
    }
}

/// The CRD as YAML, as `herd crd` prints it and `charts/` commits it.
pub fn crd_yaml() -> String {
    let crd = MastodonInstance::crd();
    serde_yaml::to_string(&crd).expect("a CRD always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_is_cluster_scoped_with_status_and_columns() {
        let crd = MastodonInstance::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("mastodoninstances.hosting.herd.dev")
        );
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Domain", "Version", "Plan", "Ready", "Phase", "Age"]
        );
    }

    fn status(generation: i64, holding: &str, message: &str) -> MastodonInstanceStatus {
        let condition = |type_: &str| InstanceCondition {
            type_: type_.to_owned(),
            status: if type_ == holding { "True" } else { "False" }.to_owned(),
            reason: "Test".to_owned(),
            message: if type_ == holding { message } else { "" }.to_owned(),
            last_transition_time: "2026-01-01T00:00:00Z".to_owned(),
            observed_generation: Some(generation),
        };
        MastodonInstanceStatus {
            observed_generation: Some(generation),
            conditions: [READY, PROGRESSING, DEGRADED].map(condition).to_vec(),
            ..MastodonInstanceStatus::default()
        }
    }

    #[test]
    fn a_status_judges_the_generation_it_observed_and_later_ones_applied_before() {
        let ready = status(4, READY, "every workload is available");
        assert_eq!(ready.judgement(Some(4)), Some(Judgement::Ready));
        assert_eq!(ready.judgement(Some(3)), Some(Judgement::Ready));
        assert_eq!(
            ready.judgement(Some(5)),
            None,
            "an older generation says nothing"
        );
        assert_eq!(MastodonInstanceStatus::default().judgement(Some(1)), None);
    }

    #[test]
    fn a_status_names_what_failed_or_what_is_pending() {
        assert_eq!(
            status(2, DEGRADED, "setup: failed").judgement(Some(2)),
            Some(Judgement::Degraded("setup: failed".to_owned()))
        );
        assert_eq!(
            status(2, PROGRESSING, "web: 0/1 available").judgement(Some(2)),
            Some(Judgement::Progressing("web: 0/1 available".to_owned()))
        );
        let unjudged = MastodonInstanceStatus {
            observed_generation: Some(2),
            ..MastodonInstanceStatus::default()
        };
        assert_eq!(
            unjudged.judgement(Some(2)),
            Some(Judgement::Progressing(String::new()))
        );
    }

    #[test]
    fn committed_crd_is_current() {
        let committed = include_str!("../../../charts/herd/crds/mastodoninstances.yaml");
        assert_eq!(
            committed,
            crd_yaml(),
            "charts/herd/crds/mastodoninstances.yaml is stale: run `herd crd > charts/herd/crds/mastodoninstances.yaml`"
        );
    }
}
