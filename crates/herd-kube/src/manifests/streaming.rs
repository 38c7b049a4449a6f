//! Mastodon's streaming server (Node), which pushes timelines over WebSockets.

use herd_core::plan::STREAMING_DB_POOL;
use k8s_openapi::api::core::v1::{Container, Service};

use super::Tenant;
use super::pod::{App, env, http_readiness, mastodon_container, port};
use super::workload::{self, Replicas, Rollout, Workload};

pub(super) const STREAMING_PORT: u16 = 4000;
/// Clients reach the streaming server under this path of the web domain.
pub(super) const STREAMING_PATH: &str = "/api/v1/streaming";
pub(super) const COMPONENT: &str = "streaming";

pub(super) fn deployment(tenant: &Tenant) -> Workload {
    let plan = &tenant.spec.plan;
    let streaming = Container {
        env: Some(env(&[
            // Set, not left to the default, so the plan's connection count holds.
            ("DB_POOL", STREAMING_DB_POOL.to_string()),
            ("PORT", STREAMING_PORT.to_string()),
        ])),
        ports: Some(vec![port("http", STREAMING_PORT)]),
        readiness_probe: Some(http_readiness(
            &format!("{STREAMING_PATH}/health"),
            STREAMING_PORT,
        )),
        // The streaming image's entrypoint starts the server.
        ..mastodon_container(
            COMPONENT,
            tenant.image(&tenant.profile.streaming_image),
            Vec::new(),
            plan.streaming.resources,
        )
    };
    workload::deployment(
        tenant,
        COMPONENT,
        App::Mastodon,
        Replicas::Fixed(plan.streaming.replicas),
        Rollout::Rolling,
        streaming,
    )
}

pub(super) fn service(tenant: &Tenant) -> Service {
    workload::service(tenant, COMPONENT, "http", STREAMING_PORT)
}
