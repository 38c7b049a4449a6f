//! The Ingress for the web domain, with a certificate from cert-manager.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::streaming::{self, STREAMING_PATH};
use super::{Tenant, web};

const NAME: &str = "web";
const TLS_SECRET: &str = "web-tls";

pub(super) fn ingress(tenant: &Tenant) -> Ingress {
    let mut metadata = tenant.metadata(NAME, Some(web::COMPONENT));
    metadata.annotations = Some(BTreeMap::from([(
        "cert-manager.io/cluster-issuer".to_owned(),
        tenant.profile.cluster_issuer.clone(),
    )]));
    let domain = &tenant.spec.web_domain;
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: Some(tenant.profile.ingress_class.clone()),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![domain.clone()]),
                secret_name: Some(TLS_SECRET.to_owned()),
            }]),
            rules: Some(vec![IngressRule {
                host: Some(domain.clone()),
                http: Some(HTTPIngressRuleValue {
                    // The longer prefix wins regardless of order; listed
                    // first all the same for readers.
                    paths: vec![
                        path(STREAMING_PATH, streaming::COMPONENT),
                        path("/", web::COMPONENT),
                    ],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// Every Service names its one port `http`.
fn path(prefix: &str, service: &str) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(prefix.to_owned()),
        path_type: "Prefix".to_owned(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: service.to_owned(),
                port: Some(ServiceBackendPort {
                    name: Some("http".to_owned()),
                    ..ServiceBackendPort::default()
                }),
            }),
            ..IngressBackend::default()
        },
    }
}
