//! NetworkPolicies: nothing moves unless allowed here.
//!
//! Mastodon federates, so its pods reach the whole internet, but never the
//! private ranges where other tenants, the cluster's own services and cloud
//! metadata endpoints live. Only data-service CIDRs the cluster profile names
//! are opened among them.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::split_endpoint;
use super::pod::App;
use super::redis::REDIS_PORT;
use super::streaming::{self, STREAMING_PORT};
use super::web::{self, WEB_PORT};
use super::{LABEL_APP, Tenant};
use crate::children::LABEL_COMPONENT;

/// Private, shared, link-local (with 169.254.169.254, the metadata address
/// of most clouds) and loopback IPv4 ranges.
pub(super) const PRIVATE_IPV4: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
];
/// Unique-local, link-local and loopback IPv6.
pub(super) const PRIVATE_IPV6: [&str; 3] = ["fc00::/7", "fe80::/10", "::1/128"];
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const DNS_NAMESPACE: &str = "kube-system";
const DNS_PORT: u16 = 53;

pub(super) fn policies(tenant: &Tenant) -> Vec<NetworkPolicy> {
    let mut policies = vec![
        policy(
            tenant,
            "default-deny",
            LabelSelector::default(),
            Some(Vec::new()),
            Some(Vec::new()),
        ),
        policy(
            tenant,
            "allow-dns",
            LabelSelector::default(),
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![namespace_peer(DNS_NAMESPACE)]),
                ports: Some([ports("UDP", [DNS_PORT]), ports("TCP", [DNS_PORT])].concat()),
            }]),
        ),
        policy(
            tenant,
            "allow-ingress-controller",
            LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: LABEL_COMPONENT.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![
                        web::COMPONENT.to_owned(),
                        streaming::COMPONENT.to_owned(),
                    ]),
                }]),
                ..LabelSelector::default()
            },
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![namespace_peer(&tenant.profile.ingress_namespace)]),
                ports: Some(ports("TCP", [WEB_PORT, STREAMING_PORT])),
            }]),
            None,
        ),
        policy(
            tenant,
            "allow-redis-ingress",
            app_selector(App::Redis),
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![app_peer(App::Mastodon)]),
                ports: Some(ports("TCP", [REDIS_PORT])),
            }]),
            None,
        ),
        policy(
            tenant,
            "allow-mastodon-egress",
            app_selector(App::Mastodon),
            None,
            Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![app_peer(App::Redis)]),
                    ports: Some(ports("TCP", [REDIS_PORT])),
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![
                        ip_peer("0.0.0.0/0", &PRIVATE_IPV4),
                        ip_peer("::/0", &PRIVATE_IPV6),
                    ]),
                    ports: None,
                },
            ]),
        ),
    ];
    if !tenant.profile.data_service_cidrs.is_empty() {
        policies.push(policy(
            tenant,
            "allow-data-services",
            app_selector(App::Mastodon),
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(
                    tenant
                        .profile
                        .data_service_cidrs
                        .iter()
                        .map(|cidr| ip_peer(cidr, &[]))
                        .collect(),
                ),
                ports: Some(ports("TCP", data_service_ports(tenant))),
            }]),
        ));
    }
    policies
}

/// The database port, HTTPS and HTTP for S3, and the S3 endpoint's own port
/// where it names one.
fn data_service_ports(tenant: &Tenant) -> BTreeSet<u16> {
    let (_, host) = split_endpoint(&tenant.spec.object_store.endpoint);
    let s3_port = host
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    [tenant.spec.database.port, 443, 80]
        .into_iter()
        .chain(s3_port)
        .collect()
}

/// A policy for the pods `selector` picks; a direction given is restricted to
/// its rules (none: all traffic that way denied), a direction not given is
/// left to the other policies.
fn policy(
    tenant: &Tenant,
    name: &str,
    selector: LabelSelector,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let types = [
        ingress.is_some().then_some("Ingress"),
        egress.is_some().then_some("Egress"),
    ];
    NetworkPolicy {
        metadata: tenant.metadata(name, None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: Some(types.into_iter().flatten().map(str::to_owned).collect()),
            ingress: ingress.filter(|rules| !rules.is_empty()),
            egress: egress.filter(|rules| !rules.is_empty()),
        }),
    }
}

fn app_selector(app: App) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(LABEL_APP.to_owned(), app.name().to_owned())].into()),
        ..LabelSelector::default()
    }
}

fn app_peer(app: App) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(app_selector(app)),
        ..NetworkPolicyPeer::default()
    }
}

fn namespace_peer(namespace: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some([(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned())].into()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn ip_peer(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: (!except.is_empty())
                .then(|| except.iter().map(|range| (*range).to_owned()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn ports(protocol: &str, numbers: impl IntoIterator<Item = u16>) -> Vec<NetworkPolicyPort> {
    numbers
        .into_iter()
        .map(|number| NetworkPolicyPort {
            protocol: Some(protocol.to_owned()),
            port: Some(IntOrString::Int(i32::from(number))),
            ..NetworkPolicyPort::default()
        })
        .collect()
}
