//! The instance's own Redis: Sidekiq's queues and Mastodon's cache.
//!
//! It keeps its dump on an emptyDir: what Redis holds is queued jobs and
//! caches, and home feeds are rebuilt with `tootctl feeds build`.

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, SecretKeySelector, Service};

use super::Tenant;
use super::config::SECRET_NAME;
use super::pod::{App, container, port, tcp_readiness};
use super::workload::{self, Replicas, Rollout, Workload};

const COMPONENT: &str = "redis";
pub(super) const REDIS_SERVICE: &str = COMPONENT;
pub(super) const REDIS_PORT: u16 = 6379;
const PASSWORD_KEY: &str = "REDIS_PASSWORD";

pub(super) fn deployment(tenant: &Tenant) -> Workload {
    let redis = container(
        COMPONENT,
        tenant.profile.redis_image.clone(),
        [
            "redis-server",
            "--dir",
            "/data",
            "--requirepass",
            // Expanded by the kubelet from the env below, so no shell runs.
            "$(REDIS_PASSWORD)",
        ]
        .map(str::to_owned)
        .to_vec(),
        tenant.spec.plan.redis,
    );
    let redis = Container {
        // Redis gets its own password and none of Mastodon's secrets.
        env: Some(vec![EnvVar {
            name: PASSWORD_KEY.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: SECRET_NAME.to_owned(),
                    key: PASSWORD_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![port("redis", REDIS_PORT)]),
        readiness_probe: Some(tcp_readiness(REDIS_PORT)),
        ..redis
    };
    workload::deployment(
        tenant,
        COMPONENT,
        App::Redis,
        Replicas::Fixed(1),
        // Two Redis pods would be two separate sets of queues.
        Rollout::Recreate,
        redis,
    )
}

pub(super) fn service(tenant: &Tenant) -> Service {
    workload::service(tenant, COMPONENT, "redis", REDIS_PORT)
}
