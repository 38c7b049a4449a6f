//! The lifecycle of a hosted instance, as a state machine.
//!
//! Every change of an instance's state goes through [`InstanceState::apply`],
//! so the rules live in one place and a refused transition is an error the
//! caller must handle rather than a silent overwrite.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where an instance stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceState {
    /// Ordered, nothing created yet.
    Pending,
    /// Tenant database, bucket and workloads are being created.
    Provisioning,
    /// Ready and serving.
    Running,
    /// A change (plan, scale, version, resume) is rolling out.
    Updating,
    /// Workloads scaled to zero, data kept (unpaid, or by an operator).
    Suspended,
    /// Workloads and data are being removed.
    Deleting,
    /// Gone. Kept as a record only.
    Deleted,
    /// Provisioning or an update failed and needs a retry or an operator.
    Failed { reason: String },
}

/// What happened to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    ProvisioningStarted,
    BecameReady,
    UpdateStarted,
    Suspended,
    ResumeStarted,
    DeletionRequested,
    CleanupFinished,
    Failed { reason: String },
    RetryRequested,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("an instance that is {from} cannot take the event {event}")]
pub struct TransitionRefused {
    pub from: &'static str,
    pub event: &'static str,
}

impl InstanceState {
    /// The state's stable name, as stored and as the API reports it.
    pub fn name(&self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Provisioning => "provisioning",
            InstanceState::Running => "running",
            InstanceState::Updating => "updating",
            InstanceState::Suspended => "suspended",
            InstanceState::Deleting => "deleting",
            InstanceState::Deleted => "deleted",
            InstanceState::Failed { .. } => "failed",
        }
    }

    /// The state that follows `event`, or why it may not happen.
    pub fn apply(&self, event: &LifecycleEvent) -> Result<InstanceState, TransitionRefused> {
        use InstanceState as S;
        use LifecycleEvent as E;
        let next = match (self, event) {
            (S::Pending, E::ProvisioningStarted) => S::Provisioning,
            (S::Provisioning | S::Updating, E::BecameReady) => S::Running,
            (S::Running, E::UpdateStarted) => S::Updating,
            (S::Running | S::Updating | S::Failed { .. }, E::Suspended) => S::Suspended,
            (S::Suspended, E::ResumeStarted) => S::Updating,
            (S::Failed { .. }, E::RetryRequested) => S::Provisioning,
            (S::Pending | S::Provisioning | S::Updating, E::Failed { reason }) => S::Failed {
                reason: reason.clone(),
            },
            // Deletion is always possible short of being deleted already, and
            // asking again while it runs is harmless.
            (S::Deleted, E::DeletionRequested) => return Err(self.refuse(event)),
            (_, E::DeletionRequested) => S::Deleting,
            (S::Deleting, E::CleanupFinished) => S::Deleted,
            _ => return Err(self.refuse(event)),
        };
        Ok(next)
    }

    /// Whether the instance's workloads should be running.
    pub fn wants_workloads(&self) -> bool {
        matches!(
            self,
            InstanceState::Provisioning | InstanceState::Running | InstanceState::Updating
        )
    }

    fn refuse(&self, event: &LifecycleEvent) -> TransitionRefused {
        TransitionRefused {
            from: self.name(),
            event: event.name(),
        }
    }
}

impl LifecycleEvent {
    pub fn name(&self) -> &'static str {
        match self {
            LifecycleEvent::ProvisioningStarted => "provisioning_started",
            LifecycleEvent::BecameReady => "became_ready",
            LifecycleEvent::UpdateStarted => "update_started",
            LifecycleEvent::Suspended => "suspended",
            LifecycleEvent::ResumeStarted => "resume_started",
            LifecycleEvent::DeletionRequested => "deletion_requested",
            LifecycleEvent::CleanupFinished => "cleanup_finished",
            LifecycleEvent::Failed { .. } => "failed",
            LifecycleEvent::RetryRequested => "retry_requested",
        }
    }
}

/// The operation kind of a move to another cluster.
pub const MOVE_OPERATION: &str = "migrate";
/// The operation kind of an export, which only reads the instance's data.
pub const EXPORT_OPERATION: &str = "export";

/// What is asked of an instance, as far as the operations under way on it matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A change of the instance: a suspension, resumption, plan change,
    /// scaling, upgrade or move.
    Change,
    /// Its deletion.
    Deletion,
}

/// The operations whose jobs look for a deletion as they go and end when
/// they see one (`cancelled: ...`), or are the deletion.
const GIVE_WAY_TO_DELETION: &[&str] = &["provision", "import", "upgrade", "delete"];

/// Whether an operation of kind `running`, under way on an instance, keeps
/// `request` from starting on it. Two changes never overlap: each job brings
/// the workloads to what the record said when it started, and a second one
/// would fight it (a suspension scaling a moving instance to zero on the
/// cluster it is leaving, an upgrade rolling out while the plan changes).
/// A deletion waits for the operations that would leave something behind:
/// a move has the instance's data on two clusters and database servers at
/// once while a deletion knows only the placement on record, and an update
/// (a plan change, scaling, suspension or resumption, each short) could
/// write the resource again after the deletion removed it. An export only
/// reads, and keeps nothing from starting. An unknown kind holds everything up.
pub fn blocks(running: &str, request: Request) -> bool {
    match request {
        _ if running == EXPORT_OPERATION => false,
        Request::Change => true,
        Request::Deletion => !GIVE_WAY_TO_DELETION.contains(&running),
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> InstanceState {
        InstanceState::Failed {
            reason: "setup job failed".into(),
        }
    }

    fn all_states() -> Vec<InstanceState> {
        use InstanceState::*;
        vec![
            Pending,
            Provisioning,
            Running,
            Updating,
            Suspended,
            Deleting,
            Deleted,
            failed(),
        ]
    }

    fn all_events() -> Vec<LifecycleEvent> {
        use LifecycleEvent::*;
        vec![
            ProvisioningStarted,
            BecameReady,
            UpdateStarted,
            Suspended,
            ResumeStarted,
            DeletionRequested,
            CleanupFinished,
            Failed {
                reason: "boom".into(),
            },
            RetryRequested,
        ]
    }

    /// Every allowed transition, by state and event name; anything else is refused.
    const ALLOWED: &[(&str, &str, &str)] = &[
        ("pending", "provisioning_started", "provisioning"),
        ("pending", "deletion_requested", "deleting"),
        ("pending", "failed", "failed"),
        ("provisioning", "became_ready", "running"),
        ("provisioning", "deletion_requested", "deleting"),
        ("provisioning", "failed", "failed"),
        ("running", "update_started", "updating"),
        ("running", "suspended", "suspended"),
        ("running", "deletion_requested", "deleting"),
        ("updating", "became_ready", "running"),
        ("updating", "suspended", "suspended"),
        ("updating", "deletion_requested", "deleting"),
        ("updating", "failed", "failed"),
        ("suspended", "resume_started", "updating"),
        ("suspended", "deletion_requested", "deleting"),
        ("deleting", "deletion_requested", "deleting"),
        ("deleting", "cleanup_finished", "deleted"),
        ("failed", "suspended", "suspended"),
        ("failed", "retry_requested", "provisioning"),
        ("failed", "deletion_requested", "deleting"),
    ];

    #[test]
    fn every_pair_of_state_and_event_follows_the_table() {
        for state in all_states() {
            for event in all_events() {
                let expected = ALLOWED
                    .iter()
                    .find(|(from, on, _)| *from == state.name() && *on == event.name())
                    .map(|(_, _, to)| *to);
                match (state.apply(&event), expected) {
                    (Ok(next), Some(to)) => {
                        assert_eq!(next.name(), to, "{state} + {}", event.name())
                    }
                    (Err(refused), None) => {
                        assert_eq!(refused.from, state.name());
                        assert_eq!(refused.event, event.name());
                    }
                    (outcome, expected) => {
                        panic!(
                            "{state} + {}: got {outcome:?}, expected {expected:?}",
                            event.name()
                        )
                    }
                }
            }
        }
    }

    #[test]
    fn failure_keeps_its_reason() {
        let next = InstanceState::Provisioning
            .apply(&LifecycleEvent::Failed {
                reason: "quota exceeded".into(),
            })
            .unwrap();
        assert_eq!(
            next,
            InstanceState::Failed {
                reason: "quota exceeded".into()
            }
        );
    }

    #[test]
    fn the_happy_path_reaches_deleted() {
        use LifecycleEvent::*;
        let mut state = InstanceState::Pending;
        for event in [
            ProvisioningStarted,
            BecameReady,
            UpdateStarted,
            BecameReady,
            Suspended,
            ResumeStarted,
            BecameReady,
            DeletionRequested,
            CleanupFinished,
        ] {
            state = state.apply(&event).unwrap();
        }
        assert_eq!(state, InstanceState::Deleted);
    }

    #[test]
    fn only_live_states_want_workloads() {
        let live: Vec<&str> = all_states()
            .iter()
            .filter(|s| s.wants_workloads())
            .map(|s| s.name())
            .collect();
        assert_eq!(live, ["provisioning", "running", "updating"]);
    }

    #[test]
    fn a_change_waits_for_every_operation_but_an_export() {
        for kind in [
            "provision",
            "import",
            "resize",
            "scale",
            "suspend",
            "resume",
            "upgrade",
            MOVE_OPERATION,
            "delete",
        ] {
            assert!(blocks(kind, Request::Change), "{kind}");
        }
        assert!(!blocks(EXPORT_OPERATION, Request::Change));
    }

    #[test]
    fn a_deletion_waits_for_a_move_and_for_updates() {
        for kind in [MOVE_OPERATION, "resize", "scale", "suspend", "resume"] {
            assert!(blocks(kind, Request::Deletion), "{kind}");
        }
        for kind in ["provision", "import", "upgrade", "delete", EXPORT_OPERATION] {
            assert!(!blocks(kind, Request::Deletion), "{kind}");
        }
    }

    #[test]
    fn an_unknown_operation_holds_everything_up() {
        assert!(blocks("rebalance", Request::Change));
        assert!(blocks("rebalance", Request::Deletion));
    }

    #[test]
    fn serialises_with_a_state_tag() {
        let json = serde_json::to_value(failed()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "failed", "reason": "setup job failed"})
        );
    }
}
