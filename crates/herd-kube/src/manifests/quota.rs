//! What the namespace may consume: the plan at its largest scale and nothing more.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Tenant;
use super::pod::{cpu, memory};

/// The quota leaves room for this many claims of the plan's volume size.
const VOLUME_CLAIMS: u32 = 1;

pub(super) fn resource_quota(tenant: &Tenant) -> ResourceQuota {
    let plan = &tenant.spec.plan;
    let quota = plan.quota();
    let hard = BTreeMap::from([
        ("requests.cpu".to_owned(), cpu(quota.cpu_millis)),
        ("limits.cpu".to_owned(), cpu(quota.cpu_millis)),
        ("requests.memory".to_owned(), memory(quota.memory_mib)),
        ("limits.memory".to_owned(), memory(quota.memory_mib)),
        ("pods".to_owned(), Quantity(plan.max_pods().to_string())),
        (
            "persistentvolumeclaims".to_owned(),
            Quantity(VOLUME_CLAIMS.to_string()),
        ),
        (
            "requests.storage".to_owned(),
            Quantity(format!("{}Gi", plan.volume_storage_gib)),
        ),
    ]);
    ResourceQuota {
        metadata: tenant.metadata("quota", None),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// A quota on CPU and memory refuses pods that state none; this gives any
/// container that forgets a small size instead of a refusal, and caps one
/// container at the largest pod the plan runs.
pub(super) fn limit_range(tenant: &Tenant) -> LimitRange {
    let plan = &tenant.spec.plan;
    let largest = plan
        .sidekiq
        .iter()
        .map(|group| group.resources)
        .chain([plan.web.resources, plan.streaming.resources, plan.redis])
        .fold((0, 0), |(cpu_millis, memory_mib), size| {
            (
                cpu_millis.max(size.cpu_millis),
                memory_mib.max(size.memory_mib),
            )
        });
    let size = |cpu_millis, memory_mib| {
        BTreeMap::from([
            ("cpu".to_owned(), cpu(cpu_millis)),
            ("memory".to_owned(), memory(memory_mib)),
        ])
    };
    LimitRange {
        metadata: tenant.metadata("limits", None),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_owned(),
                default: Some(size(100, 128)),
                default_request: Some(size(100, 128)),
                max: Some(size(largest.0, largest.1)),
                ..LimitRangeItem::default()
            }],
        }),
    }
}
