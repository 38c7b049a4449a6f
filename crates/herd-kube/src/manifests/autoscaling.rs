//! The web Deployment's HorizontalPodAutoscaler: Puma scales on CPU between
//! the plan's replicas and its maximum. Sidekiq scales on queue latency
//! instead, which no HorizontalPodAutoscaler reads; Herd's own autoscaler
//! does that.

use k8s_openapi::Resource as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::Tenant;
use super::web::COMPONENT as WEB;

/// Average CPU use, as a share of the pods' request, the autoscaler keeps
/// web near: below saturation, so a surge has room while new pods start.
pub const WEB_CPU_UTILIZATION: i32 = 70;

/// The autoscaler of the web Deployment, when the plan lets web grow and the
/// instance runs; a suspended instance runs no pod to measure.
pub(super) fn web_autoscaler(tenant: &Tenant) -> Option<HorizontalPodAutoscaler> {
    let web = &tenant.spec.plan.web;
    if !web.autoscales() || tenant.spec.suspended {
        return None;
    }
    let replicas = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    Some(HorizontalPodAutoscaler {
        metadata: tenant.metadata(WEB, Some(WEB)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(Deployment::API_VERSION.to_owned()),
                kind: Deployment::KIND.to_owned(),
                name: WEB.to_owned(),
            },
            min_replicas: Some(replicas(web.replicas)),
            max_replicas: replicas(web.max_replicas()),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(WEB_CPU_UTILIZATION),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    })
}
