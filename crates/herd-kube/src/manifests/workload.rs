//! Deployments and Services, shaped the same for every component.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Container, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Tenant;
use super::pod::{App, PodParts, selector, template};

/// Who sets a Deployment's replica count while the instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replicas {
    /// Herd: always this many.
    Fixed(u32),
    /// An autoscaler, from `least` up. Herd's apply leaves the field out, or
    /// every apply would reset what the autoscaler set; a new Deployment
    /// starts with the API server's default of one and the autoscaler
    /// raises it to `least`.
    Autoscaled { least: u32 },
}

impl Replicas {
    fn least(self) -> u32 {
        match self {
            Replicas::Fixed(replicas) => replicas,
            Replicas::Autoscaled { least } => least,
        }
    }
}

/// A Deployment as built, with who sets its replicas.
pub(super) struct Workload {
    pub deployment: Deployment,
    pub replicas: Replicas,
}

impl Workload {
    /// The fewest pods it runs: none while the instance is suspended.
    pub fn least_replicas(&self, tenant: &Tenant) -> u32 {
        if tenant.spec.suspended {
            0
        } else {
            self.replicas.least()
        }
    }
}

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rollout {
    /// New pods start before old ones stop: no downtime.
    Rolling,
    /// Old pods stop first, for processes of which two must never run at once.
    Recreate,
}

/// A Deployment of pods that each run one long-lived `container` of `app`.
/// Suspended, it asks for no pod whoever owns its replicas: Herd takes the
/// field over (its apply is forced) and gives it up again on resumption.
pub(super) fn deployment(
    tenant: &Tenant,
    component: &str,
    app: App,
    replicas: Replicas,
    rollout: Rollout,
    container: Container,
) -> Workload {
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
    let spec_replicas = match replicas {
        _ if tenant.spec.suspended => Some(0),
        Replicas::Fixed(replicas) => Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
        Replicas::Autoscaled { .. } => None,
    };
    let deployment = Deployment {
        metadata: tenant.metadata(component, Some(component)),
        spec: DeploymentSpec {
            replicas: spec_replicas,
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
    };
    Workload {
        deployment,
        replicas,
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
