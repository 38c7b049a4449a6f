//! The hardened pod and container pieces every workload shares, so Pod
//! Security `restricted` holds by construction and not by each builder's care.

use std::collections::BTreeMap;

use herd_core::plan::Resources;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, TCPSocketAction,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{CONFIG_MAP_NAME, SECRET_NAME};
use super::namespace::SERVICE_ACCOUNT_NAME;
use super::{LABEL_APP, Tenant};
use crate::children::{LABEL_COMPONENT, LABEL_INSTANCE};

/// The program a pod runs, with what its image needs to run unprivileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum App {
    Mastodon,
    Redis,
}

impl App {
    pub(super) fn name(self) -> &'static str {
        match self {
            App::Mastodon => "mastodon",
            App::Redis => "redis",
        }
    }

    /// The users the upstream images are built for; files in them belong to these.
    fn uid(self) -> i64 {
        match self {
            App::Mastodon => 991,
            App::Redis => 999,
        }
    }

    /// Where the program writes. Each gets an emptyDir so the image's root
    /// filesystem can stay read-only; Puma and bootsnap write below the app's
    /// `tmp`, Redis keeps its dump in `/data`.
    fn scratch(self) -> &'static [&'static str] {
        match self {
            App::Mastodon => &["/tmp", "/opt/mastodon/tmp"],
            App::Redis => &["/tmp", "/data"],
        }
    }
}

pub(super) fn cpu(millis: u32) -> Quantity {
    Quantity(format!("{millis}m"))
}

pub(super) fn memory(mib: u32) -> Quantity {
    Quantity(format!("{mib}Mi"))
}

/// Requests equal limits: the plan's size is both what the tenant is promised
/// and all it may take.
fn resources(size: Resources) -> ResourceRequirements {
    let amounts = BTreeMap::from([
        ("cpu".to_owned(), cpu(size.cpu_millis)),
        ("memory".to_owned(), memory(size.memory_mib)),
    ]);
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..ResourceRequirements::default()
    }
}

/// The labels a workload's pods are selected by. They never change for a
/// component, as a Deployment's selector is immutable.
pub(super) fn selector(tenant: &Tenant, component: &str) -> LabelSelector {
    let labels = tenant.labels(Some(component));
    LabelSelector {
        match_labels: Some(
            labels
                .into_iter()
                .filter(|(key, _)| key == LABEL_INSTANCE || key == LABEL_COMPONENT)
                .collect(),
        ),
        ..LabelSelector::default()
    }
}

/// A container that cannot gain privileges or capabilities, with the plan's
/// size. An empty `command` runs the image's own entrypoint.
pub(super) fn container(
    name: &str,
    image: String,
    command: Vec<String>,
    size: Resources,
) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image),
        command: (!command.is_empty()).then_some(command),
        resources: Some(resources(size)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// A container of Mastodon, configured entirely from the instance's
/// ConfigMap and Secret as Mastodon reads its settings from the environment.
pub(super) fn mastodon_container(
    name: &str,
    image: String,
    command: Vec<String>,
    size: Resources,
) -> Container {
    Container {
        env_from: Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: CONFIG_MAP_NAME.to_owned(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: SECRET_NAME.to_owned(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            },
        ]),
        ..container(name, image, command, size)
    }
}

pub(super) fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// Ready once the process answers its health endpoint.
pub(super) fn http_readiness(path: &str, port: u16) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        ..readiness()
    }
}

/// Ready once the process accepts connections.
pub(super) fn tcp_readiness(port: u16) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            ..TCPSocketAction::default()
        }),
        ..readiness()
    }
}

fn readiness() -> Probe {
    Probe {
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Plain environment variables, in the order given.
pub(super) fn env(pairs: &[(&str, String)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(name, value)| EnvVar {
            name: (*name).to_owned(),
            value: Some(value.clone()),
            ..EnvVar::default()
        })
        .collect()
}

/// The pieces every pod of one component shares.
pub(super) struct PodParts {
    pub(super) component: String,
    pub(super) app: App,
    pub(super) init_containers: Vec<Container>,
    pub(super) containers: Vec<Container>,
    /// `Never` for Jobs; `None` leaves the default `Always` of Deployments.
    pub(super) restart_policy: Option<&'static str>,
}

/// A pod template that runs as the image's unprivileged user under the
/// runtime's default seccomp profile, holds no API token, and writes only to
/// its emptyDirs.
pub(super) fn template(tenant: &Tenant, parts: PodParts) -> PodTemplateSpec {
    let scratch = parts.app.scratch();
    let volume_name = |path: &str| path.trim_matches('/').replace('/', "-");
    let mounts: Vec<VolumeMount> = scratch
        .iter()
        .map(|path| VolumeMount {
            name: volume_name(path),
            mount_path: (*path).to_owned(),
            ..VolumeMount::default()
        })
        .collect();
    let with_mounts = |containers: Vec<Container>| -> Vec<Container> {
        containers
            .into_iter()
            .map(|container| Container {
                volume_mounts: Some(mounts.clone()),
                ..container
            })
            .collect()
    };
    let init_containers = with_mounts(parts.init_containers);
    let mut labels = tenant.labels(Some(&parts.component));
    labels.insert(LABEL_APP.to_owned(), parts.app.name().to_owned());
    let uid = parts.app.uid();
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(SERVICE_ACCOUNT_NAME.to_owned()),
            automount_service_account_token: Some(false),
            // Service links would define `REDIS_PORT=tcp://...` and the like,
            // which collide with Mastodon's own settings of the same names.
            enable_service_links: Some(false),
            restart_policy: parts.restart_policy.map(str::to_owned),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(uid),
                run_as_group: Some(uid),
                fs_group: Some(uid),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            init_containers: (!init_containers.is_empty()).then_some(init_containers),
            containers: with_mounts(parts.containers),
            volumes: Some(
                scratch
                    .iter()
                    .map(|path| Volume {
                        name: volume_name(path),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    })
                    .collect(),
            ),
            ..PodSpec::default()
        }),
    }
}
