//! Puma: Mastodon's web app and API.

use k8s_openapi::api::core::v1::{Container, Service};

use super::Tenant;
use super::pod::{App, env, http_readiness, mastodon_container, port};
use super::workload::{self, Replicas, Rollout, Workload};

pub(super) const WEB_PORT: u16 = 3000;
pub(super) const COMPONENT: &str = "web";

pub(super) fn deployment(tenant: &Tenant) -> Workload {
    let plan = &tenant.spec.plan;
    let web = Container {
        env: Some(env(&[
            ("WEB_CONCURRENCY", plan.web.concurrency.to_string()),
            ("MAX_THREADS", plan.web.threads.to_string()),
            ("DB_POOL", plan.web_db_pool().to_string()),
            ("PORT", WEB_PORT.to_string()),
        ])),
        ports: Some(vec![port("http", WEB_PORT)]),
        readiness_probe: Some(http_readiness("/health", WEB_PORT)),
        ..mastodon_container(
            COMPONENT,
            tenant.image(&tenant.profile.mastodon_image),
            ["bundle", "exec", "puma", "-C", "config/puma.rb"]
                .map(str::to_owned)
                .to_vec(),
            plan.web.resources,
        )
    };
    let replicas = if plan.web.autoscales() {
        Replicas::Autoscaled {
            least: plan.web.replicas,
        }
    } else {
        Replicas::Fixed(plan.web.replicas)
    };
    workload::deployment(
        tenant,
        COMPONENT,
        App::Mastodon,
        replicas,
        Rollout::Rolling,
        web,
    )
}

pub(super) fn service(tenant: &Tenant) -> Service {
    workload::service(tenant, COMPONENT, "http", WEB_PORT)
}
