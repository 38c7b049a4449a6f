//! Deployments and Services, shaped the same for every component.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Container, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Tenant;
use super::pod::{App, PodParts, selector, template};

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rollout {
    /// New pods start before old ones stop: no downtime.
    Rolling,
    /// Old pods stop first, for processes of which two must never run at once.
    Recreate,
}

/// A Deployment of pods that each run one long-lived `container` of `app`.
pub(super) fn deployment(
    tenant: &Tenant,
    component: &str,
    app: App,
    replicas: u32,
    rollout: Rollout,
    container: Container,
) -> Deployment {
    let template = template(
        tenant,
        PodParts {
            component: component.to_owned(),
            app,
            init_containers: Vec::new(),
            containers: vec![container],
            restart_policy: None,
        },
    );
    Deployment {
        metadata: tenant.metadata(component, Some(component)),
        spec: DeploymentSpec {
            replicas: Some(tenant.replicas(replicas)),
            selector: selector(tenant, component),
            strategy: (rollout == Rollout::Recreate).then(|| DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                ..DeploymentStrategy::default()
            }),
            // Thousands of namespaces each keeping ten old ReplicaSets per
            // Deployment weigh on etcd; three allow a rollback.
            revision_history_limit: Some(3),
            template,
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// A ClusterIP Service named after its component, on the port the
/// component's container names `port_name`.
pub(super) fn service(tenant: &Tenant, component: &str, port_name: &str, port: u16) -> Service {
    Service {
        metadata: tenant.metadata(component, Some(component)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: selector(tenant, component).match_labels,
            ports: Some(vec![ServicePort {
                name: Some(port_name.to_owned()),
                port: i32::from(port),
                target_port: Some(IntOrString::String(port_name.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
