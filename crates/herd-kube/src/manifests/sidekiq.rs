//! Sidekiq: one Deployment per worker group of the plan.

use herd_core::autoscale::is_autoscaled;
use herd_core::plan::SidekiqGroup;
use k8s_openapi::api::core::v1::Container;

use super::Tenant;
use super::pod::{App, env, mastodon_container};
use super::workload::{self, Replicas, Rollout, Workload};

pub(super) fn deployments(tenant: &Tenant) -> Vec<Workload> {
    tenant
        .spec
        .plan
        .sidekiq
        .iter()
        .map(|group| deployment(tenant, group))
        .collect()
}

/// The name of the group's Deployment, which is also its component.
pub fn deployment_name(group: &SidekiqGroup) -> String {
    format!("sidekiq-{}", group.name)
}

fn deployment(tenant: &Tenant, group: &SidekiqGroup) -> Workload {
    let component = deployment_name(group);
    let mut command: Vec<String> = ["bundle", "exec", "sidekiq", "-c"]
        .map(str::to_owned)
        .to_vec();
    command.push(group.threads.to_string());
    command.extend(group.queue_arguments());
    let sidekiq = Container {
        env: Some(env(&[("DB_POOL", group.db_pool().to_string())])),
        ..mastodon_container(
            &component,
            tenant.image(&tenant.profile.mastodon_image),
            command,
            group.resources,
        )
    };
    // Two processes consuming `scheduler` run every scheduled job twice, even
    // for the moment a rolling update would overlap them.
    let (replicas, rollout) = if group.holds_scheduler() {
        (Replicas::Fixed(1), Rollout::Recreate)
    } else if is_autoscaled(group) {
        (
            Replicas::Autoscaled {
                least: group.min_replicas,
            },
            Rollout::Rolling,
        )
    } else {
        (Replicas::Fixed(group.min_replicas), Rollout::Rolling)
    };
    workload::deployment(
        tenant,
        &component,
        App::Mastodon,
        replicas,
        rollout,
        sidekiq,
    )
}
