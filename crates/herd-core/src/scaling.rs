//! An instance scaled by hand beyond or below its plan: more web or streaming
//! replicas, other bounds or thread counts for a Sidekiq group. The plan
//! stays what the customer buys; the scaling is applied on top of it and
//! checked as a plan is, so a scaled instance keeps a layout Mastodon supports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, PlanError};

/// What an operator changed; everything left out is the plan's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_replicas: Option<u32>,
    /// The most web replicas CPU autoscaling may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_max_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming_replicas: Option<u32>,
    /// By Sidekiq group name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sidekiq: BTreeMap<String, GroupScaling>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupScaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// Threads per process; `DB_POOL` follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

impl Scaling {
    pub fn is_empty(&self) -> bool {
        *self == Scaling::default()
    }

    /// `later` on top of this: what it sets wins.
    pub fn merged(&self, later: &Scaling) -> Scaling {
        let mut merged = self.clone();
        merged.web_replicas = later.web_replicas.or(self.web_replicas);
        merged.web_max_replicas = later.web_max_replicas.or(self.web_max_replicas);
        merged.streaming_replicas = later.streaming_replicas.or(self.streaming_replicas);
        for (name, group) in &later.sidekiq {
            let entry = merged.sidekiq.entry(name.clone()).or_default();
            entry.min_replicas = group.min_replicas.or(entry.min_replicas);
            entry.max_replicas = group.max_replicas.or(entry.max_replicas);
            entry.threads = group.threads.or(entry.threads);
        }
        merged
    }
}

impl Plan {
    /// The plan with `scaling` applied, checked as any plan. The database's
    /// connection limit grows with the processes, so more threads or
    /// replicas never starve each other of connections.
    pub fn scaled(&self, scaling: &Scaling) -> Result<Plan, PlanError> {
        let mut plan = self.clone();
        if let Some(replicas) = scaling.web_replicas {
            plan.web.replicas = replicas;
        }
        if let Some(max) = scaling.web_max_replicas {
            plan.web.max_replicas = Some(max);
        }
        if let Some(replicas) = scaling.streaming_replicas {
            plan.streaming.replicas = replicas;
        }
        for (name, change) in &scaling.sidekiq {
            let group = plan
                .sidekiq
                .iter_mut()
                .find(|g| &g.name == name)
                .ok_or_else(|| PlanError::InvalidProcess {
                    process: format!("sidekiq group `{name}`"),
                    message: format!("the plan `{}` has no such group", self.name),
                })?;
            if let Some(min) = change.min_replicas {
                group.min_replicas = min;
            }
            if let Some(max) = change.max_replicas {
                group.max_replicas = max;
            }
            if let Some(threads) = change.threads {
                group.threads = threads;
            }
        }
        plan.database_connection_limit = plan
            .database_connection_limit
            .max(plan.database_connections_needed());
        plan.validate()?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::starter_plans;

    fn small() -> Plan {
        starter_plans().remove(0)
    }

    #[test]
    fn nothing_scaled_is_the_plan() {
        assert_eq!(small().scaled(&Scaling::default()).unwrap(), small());
    }

    #[test]
    fn replicas_threads_quota_and_connections_follow() {
        let plan = small();
        let group = plan
            .sidekiq
            .iter()
            .find(|g| !g.holds_scheduler())
            .unwrap()
            .name
            .clone();
        let scaling = Scaling {
            web_replicas: Some(3),
            web_max_replicas: None,
            streaming_replicas: Some(2),
            sidekiq: [(
                group.clone(),
                GroupScaling {
                    min_replicas: Some(2),
                    max_replicas: Some(6),
                    threads: Some(25),
                },
            )]
            .into(),
        };
        let scaled = plan.scaled(&scaling).unwrap();
        assert_eq!(scaled.web.replicas, 3);
        assert!(!scaled.web.autoscales());
        assert_eq!(scaled.streaming.replicas, 2);
        let scaled_group = scaled.sidekiq.iter().find(|g| g.name == group).unwrap();
        assert_eq!(
            (scaled_group.min_replicas, scaled_group.max_replicas),
            (2, 6)
        );
        assert_eq!(scaled_group.db_pool(), 25);
        assert!(scaled.quota().cpu_millis > plan.quota().cpu_millis);
        assert!(scaled.database_connection_limit >= scaled.database_connections_needed());
        assert!(scaled.database_connection_limit > plan.database_connection_limit);
    }

    #[test]
    fn what_mastodon_does_not_support_is_refused() {
        let plan = small();
        let scheduler = plan
            .sidekiq
            .iter()
            .find(|g| g.holds_scheduler())
            .unwrap()
            .name
            .clone();
        let two_schedulers = Scaling {
            sidekiq: [(
                scheduler.clone(),
                GroupScaling {
                    max_replicas: Some(2),
                    ..GroupScaling::default()
                },
            )]
            .into(),
            ..Scaling::default()
        };
        assert!(matches!(
            plan.scaled(&two_schedulers),
            Err(PlanError::SchedulerReplicas(name)) if name == scheduler
        ));
        let no_web = Scaling {
            web_replicas: Some(0),
            ..Scaling::default()
        };
        assert!(plan.scaled(&no_web).is_err());
        let web_below_its_maximum = Scaling {
            web_replicas: Some(3),
            web_max_replicas: Some(2),
            ..Scaling::default()
        };
        assert!(plan.scaled(&web_below_its_maximum).is_err());
        let unknown = Scaling {
            sidekiq: [("nope".to_owned(), GroupScaling::default())].into(),
            ..Scaling::default()
        };
        assert!(plan.scaled(&unknown).is_err());
    }

    #[test]
    fn later_changes_win_and_the_rest_stays() {
        let first = Scaling {
            web_replicas: Some(3),
            streaming_replicas: Some(2),
            ..Scaling::default()
        };
        let second = Scaling {
            web_replicas: Some(4),
            ..Scaling::default()
        };
        let merged = first.merged(&second);
        assert_eq!(merged.web_replicas, Some(4));
        let merged = merged.merged(&Scaling {
            web_max_replicas: Some(6),
            ..Scaling::default()
        });
        assert_eq!(merged.web_replicas, Some(4));
        assert_eq!(merged.web_max_replicas, Some(6));
        assert_eq!(merged.streaming_replicas, Some(2));
    }
}
