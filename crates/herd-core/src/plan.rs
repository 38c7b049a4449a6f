//! Plans: what a customer buys, as the sizes of every process of a Mastodon server.
//!
//! A plan is checked against Mastodon's own constraints before it is offered,
//! so no instance can be created with a layout Mastodon does not support.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Every queue Mastodon's Sidekiq workers consume. A plan must consume them all.
pub const MASTODON_QUEUES: [&str; 7] = [
    "default",
    "push",
    "ingress",
    "mailers",
    "pull",
    "scheduler",
    "fasp",
];
/// The queue that must be consumed by exactly one Sidekiq process.
pub const SCHEDULER_QUEUE: &str = "scheduler";
/// Connections the streaming server's pool holds per replica (Mastodon's default `DB_POOL` there).
pub const STREAMING_DB_POOL: u32 = 10;
/// Connections kept free for setup, migration and maintenance jobs and for `psql`.
pub const MAINTENANCE_CONNECTIONS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("the plan name `{0}` must be 1 to 40 lowercase letters, digits or hyphens")]
    InvalidName(String),
    #[error("{process}: {message}")]
    InvalidProcess { process: String, message: String },
    #[error("the queue `{0}` is consumed by no Sidekiq group")]
    QueueNotConsumed(&'static str),
    #[error("the `scheduler` queue must be consumed by exactly one group, found {0}")]
    SchedulerGroups(usize),
    #[error("the Sidekiq group `{0}` consumes `scheduler` and so must run exactly one replica")]
    SchedulerReplicas(String),
    #[error("the queue `{0}` is not a Mastodon queue")]
    UnknownQueue(String),
    #[error("the Sidekiq group name `{0}` appears twice")]
    DuplicateGroup(String),
    #[error(
        "the database connection limit {limit} is below the {needed} connections the processes can open"
    )]
    ConnectionLimit { limit: u32, needed: u32 },
}

/// CPU and memory of one pod; requests equal limits so tenants get what they
/// pay for and cannot take what others paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu_millis: u32,
    pub memory_mib: u32,
}

impl Resources {
    fn times(self, n: u32) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis * n,
            memory_mib: self.memory_mib * n,
        }
    }

    fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis + other.cpu_millis,
            memory_mib: self.memory_mib + other.memory_mib,
        }
    }
}

/// The Puma web server: `concurrency` processes of `threads` threads per replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSize {
    /// The replicas it runs, and the least it runs when it autoscales.
    pub replicas: u32,
    /// The most replicas it may scale up to on CPU; `replicas` when left
    /// out, which is no autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    pub concurrency: u32,
    pub threads: u32,
    pub resources: Resources,
}

impl WebSize {
    /// The most replicas it may run.
    pub fn max_replicas(&self) -> u32 {
        self.max_replicas
            .unwrap_or(self.replicas)
            .max(self.replicas)
    }

    /// Whether its replicas follow its CPU between `replicas` and the maximum.
    pub fn autoscales(&self) -> bool {
        self.max_replicas() > self.replicas
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamingSize {
    pub replicas: u32,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueWeight {
    pub name: String,
    /// Sidekiq's queue weight; 1 means strict order among equal weights.
    pub weight: u32,
}

/// A set of Sidekiq processes consuming the same queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidekiqGroup {
    pub name: String,
    pub queues: Vec<QueueWeight>,
    pub threads: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub resources: Resources,
}

impl SidekiqGroup {
    pub fn holds_scheduler(&self) -> bool {
        self.queues.iter().any(|q| q.name == SCHEDULER_QUEUE)
    }

    /// Mastodon needs `DB_POOL` at least the thread count, or threads wait for connections.
    pub fn db_pool(&self) -> u32 {
        self.threads
    }

    /// Sidekiq's `-q name,weight` arguments.
    pub fn queue_arguments(&self) -> Vec<String> {
        self.queues
            .iter()
            .flat_map(|q| ["-q".to_owned(), format!("{},{}", q.name, q.weight)])
            .collect()
    }
}

/// What a customer buys: the size of every process of their Mastodon server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub name: String,
    pub web: WebSize,
    pub streaming: StreamingSize,
    pub sidekiq: Vec<SidekiqGroup>,
    pub redis: Resources,
    /// Media storage the tenant's bucket may hold.
    pub media_storage_gib: u32,
    /// Size of the tenant's Redis volume and other pod storage.
    pub volume_storage_gib: u32,
    pub database_connection_limit: u32,
}

impl Plan {
    /// Checks the plan against Mastodon's constraints.
    pub fn validate(&self) -> Result<(), PlanError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(PlanError::InvalidName(self.name.clone()));
        }
        positive(
            "web",
            &[
                ("replicas", self.web.replicas),
                ("concurrency", self.web.concurrency),
                ("threads", self.web.threads),
            ],
        )?;
        if self
            .web
            .max_replicas
            .is_some_and(|max| max < self.web.replicas)
        {
            return Err(PlanError::InvalidProcess {
                process: "web".into(),
                message: "replicas exceed max replicas".into(),
            });
        }
        positive("streaming", &[("replicas", self.streaming.replicas)])?;
        let mut names: Vec<&str> = Vec::new();
        for group in &self.sidekiq {
            let process = format!("sidekiq group `{}`", group.name);
            positive(
                &process,
                &[
                    ("threads", group.threads),
                    ("max replicas", group.max_replicas),
                ],
            )?;
            if group.min_replicas > group.max_replicas {
                return Err(PlanError::InvalidProcess {
                    process,
                    message: "min replicas exceed max replicas".into(),
                });
            }
            if names.contains(&group.name.as_str()) {
                return Err(PlanError::DuplicateGroup(group.name.clone()));
            }
            names.push(&group.name);
            if let Some(unknown) = group
                .queues
                .iter()
                .find(|q| !MASTODON_QUEUES.contains(&q.name.as_str()))
            {
                return Err(PlanError::UnknownQueue(unknown.name.clone()));
            }
        }
        for queue in MASTODON_QUEUES {
            if !self
                .sidekiq
                .iter()
                .any(|g| g.queues.iter().any(|q| q.name == queue))
            {
                return Err(PlanError::QueueNotConsumed(queue));
            }
        }
        let schedulers: Vec<&SidekiqGroup> = self
            .sidekiq
            .iter()
            .filter(|g| g.holds_scheduler())
            .collect();
        if schedulers.len() != 1 {
            return Err(PlanError::SchedulerGroups(schedulers.len()));
        }
        if schedulers[0].max_replicas != 1 || schedulers[0].min_replicas != 1 {
            return Err(PlanError::SchedulerReplicas(schedulers[0].name.clone()));
        }
        let needed = self.database_connections_needed();
        if self.database_connection_limit < needed {
            return Err(PlanError::ConnectionLimit {
                limit: self.database_connection_limit,
                needed,
            });
        }
        Ok(())
    }

    /// `DB_POOL` of each web process: one connection per Puma thread.
    pub fn web_db_pool(&self) -> u32 {
        self.web.threads
    }

    /// The most connections the processes can open at once, at their largest scale.
    pub fn database_connections_needed(&self) -> u32 {
        let web = self.web.max_replicas() * self.web.concurrency * self.web_db_pool();
        let streaming = self.streaming.replicas * STREAMING_DB_POOL;
        let sidekiq: u32 = self
            .sidekiq
            .iter()
            .map(|g| g.max_replicas * g.db_pool())
            .sum();
        web + streaming + sidekiq + MAINTENANCE_CONNECTIONS
    }

    /// What every pod of the instance needs at its largest scale, plus room for
    /// one setup or migration Job: the namespace's ResourceQuota.
    pub fn quota(&self) -> Resources {
        let sidekiq = self.sidekiq.iter().fold(
            Resources {
                cpu_millis: 0,
                memory_mib: 0,
            },
            |sum, g| sum.plus(g.resources.times(g.max_replicas)),
        );
        self.web
            .resources
            .times(self.web.max_replicas())
            .plus(self.streaming.resources.times(self.streaming.replicas))
            .plus(sidekiq)
            .plus(self.redis)
            .plus(self.web.resources)
    }

    /// Pods at the largest scale, plus one for a Job.
    pub fn max_pods(&self) -> u32 {
        self.web.max_replicas()
            + self.streaming.replicas
            + self.sidekiq.iter().map(|g| g.max_replicas).sum::<u32>()
            + 2
    }
}

fn positive(process: &str, values: &[(&str, u32)]) -> Result<(), PlanError> {
    match values.iter().find(|(_, value)| *value == 0) {
        Some((what, _)) => Err(PlanError::InvalidProcess {
            process: process.to_owned(),
            message: format!("{what} must be at least 1"),
        }),
        None => Ok(()),
    }
}

/// The plans a fresh installation offers. Operators add or change plans later;
/// these are sized from Mastodon's own recommendations for small servers.
pub fn starter_plans() -> Vec<Plan> {
    let queues = |names: &[(&str, u32)]| {
        names
            .iter()
            .map(|(n, w)| QueueWeight {
                name: (*n).to_owned(),
                weight: *w,
            })
            .collect()
    };
    let plan = |name: &str, web_replicas: u32, worker_max: u32, threads: u32, scale: u32| Plan {
        name: name.to_owned(),
        web: WebSize {
            replicas: web_replicas,
            max_replicas: None,
            concurrency: 2,
            threads: 5,
            resources: Resources {
                cpu_millis: 500 * scale,
                memory_mib: 1024 * scale,
            },
        },
        streaming: StreamingSize {
            replicas: web_replicas,
            resources: Resources {
                cpu_millis: 100 * scale,
                memory_mib: 256,
            },
        },
        sidekiq: vec![
            SidekiqGroup {
                name: "default".into(),
                queues: queues(&[
                    ("default", 8),
                    ("push", 6),
                    ("ingress", 4),
                    ("mailers", 2),
                    ("pull", 1),
                    ("fasp", 1),
                ]),
                threads,
                min_replicas: 1,
                max_replicas: worker_max,
                resources: Resources {
                    cpu_millis: 500 * scale,
                    memory_mib: 768 * scale,
                },
            },
            SidekiqGroup {
                name: "scheduler".into(),
                queues: queues(&[("scheduler", 1)]),
                threads: 5,
                min_replicas: 1,
                max_replicas: 1,
                resources: Resources {
                    cpu_millis: 100,
                    memory_mib: 512,
                },
            },
        ],
        redis: Resources {
            cpu_millis: 100 * scale,
            memory_mib: 256 * scale,
        },
        media_storage_gib: 25 * scale * scale,
        volume_storage_gib: 2 * scale,
        database_connection_limit: 0,
    };
    [
        plan("small", 1, 2, 10, 1),
        plan("medium", 2, 4, 15, 2),
        plan("large", 3, 8, 25, 4),
    ]
    .into_iter()
    .map(|mut p| {
        p.database_connection_limit = p.database_connections_needed();
        p
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Plan {
        starter_plans().into_iter().next().unwrap()
    }

    #[test]
    fn starter_plans_are_valid() {
        for plan in starter_plans() {
            plan.validate()
                .unwrap_or_else(|err| panic!("{}: {err}", plan.name));
        }
    }

    #[test]
    fn scheduler_is_consumed_by_exactly_one_single_replica_group() {
        let mut plan = small();
        plan.sidekiq[1].max_replicas = 2;
        assert_eq!(
            plan.validate(),
            Err(PlanError::SchedulerReplicas("scheduler".into()))
        );

        let mut plan = small();
        plan.sidekiq[0].queues.push(QueueWeight {
            name: "scheduler".into(),
            weight: 1,
        });
        assert_eq!(plan.validate(), Err(PlanError::SchedulerGroups(2)));

        let mut plan = small();
        plan.sidekiq.remove(1);
        assert_eq!(
            plan.validate(),
            Err(PlanError::QueueNotConsumed("scheduler"))
        );
    }

    #[test]
    fn every_mastodon_queue_is_consumed_and_no_other() {
        let mut plan = small();
        plan.sidekiq[0].queues.retain(|q| q.name != "mailers");
        assert_eq!(plan.validate(), Err(PlanError::QueueNotConsumed("mailers")));

        let mut plan = small();
        plan.sidekiq[0].queues.push(QueueWeight {
            name: "bitcoin".into(),
            weight: 1,
        });
        assert_eq!(
            plan.validate(),
            Err(PlanError::UnknownQueue("bitcoin".into()))
        );
    }

    #[test]
    fn connection_limit_covers_every_pool() {
        let plan = small();
        // web 1 x 2 x 5, streaming 1 x 10, default 2 x 10, scheduler 1 x 5, maintenance 5
        assert_eq!(plan.database_connections_needed(), 10 + 10 + 20 + 5 + 5);
        let mut tight = plan.clone();
        tight.database_connection_limit = 49;
        assert_eq!(
            tight.validate(),
            Err(PlanError::ConnectionLimit {
                limit: 49,
                needed: 50
            })
        );
    }

    #[test]
    fn db_pool_is_at_least_the_thread_count() {
        for group in &small().sidekiq {
            assert!(group.db_pool() >= group.threads);
        }
    }

    #[test]
    fn refuses_zero_sizes_and_inverted_bounds() {
        let mut plan = small();
        plan.web.threads = 0;
        assert!(matches!(
            plan.validate(),
            Err(PlanError::InvalidProcess { .. })
        ));

        let mut plan = small();
        plan.sidekiq[0].min_replicas = 3;
        assert!(matches!(
            plan.validate(),
            Err(PlanError::InvalidProcess { .. })
        ));

        let mut plan = small();
        plan.web.max_replicas = Some(plan.web.replicas - 1);
        assert!(matches!(
            plan.validate(),
            Err(PlanError::InvalidProcess { .. })
        ));

        let mut plan = small();
        plan.name = "Small Plan".into();
        assert!(matches!(plan.validate(), Err(PlanError::InvalidName(_))));
    }

    #[test]
    fn quota_covers_the_largest_scale_and_one_job() {
        let plan = small();
        let quota = plan.quota();
        // web 500 + streaming 100 + default 2 x 500 + scheduler 100 + redis 100 + job 500
        assert_eq!(quota.cpu_millis, 2300);
        assert_eq!(plan.max_pods(), 1 + 1 + 2 + 1 + 2);
    }

    #[test]
    fn web_scales_up_to_its_maximum_and_the_quota_covers_it() {
        let mut plan = small();
        assert!(!plan.web.autoscales());
        assert_eq!(plan.web.max_replicas(), plan.web.replicas);
        let (quota, pods) = (plan.quota(), plan.max_pods());
        plan.web.max_replicas = Some(3);
        assert!(plan.web.autoscales());
        assert_eq!(plan.quota().cpu_millis, quota.cpu_millis + 2 * 500);
        assert_eq!(plan.max_pods(), pods + 2);
        assert_eq!(plan.database_connections_needed(), 50 + 2 * 2 * 5);

        let stored = r#"{"replicas":2,"concurrency":2,"threads":5,
            "resources":{"cpuMillis":500,"memoryMib":1024}}"#;
        let web: WebSize = serde_json::from_str(stored).unwrap();
        assert_eq!((web.max_replicas(), web.autoscales()), (2, false));
    }

    #[test]
    fn queue_arguments_keep_weights() {
        let group = &small().sidekiq[0];
        assert_eq!(
            &group.queue_arguments()[..4],
            ["-q", "default,8", "-q", "push,6"]
        );
    }
}
