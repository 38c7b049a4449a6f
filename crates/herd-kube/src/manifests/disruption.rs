//! PodDisruptionBudgets, so node drains never take all replicas of a
//! component at once. A component that may run a single replica gets none:
//! a budget for it would block every drain.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Tenant;
use super::workload::Workload;
use crate::children::LABEL_COMPONENT;

pub(super) fn budgets(tenant: &Tenant, workloads: &[Workload]) -> Vec<PodDisruptionBudget> {
    workloads
        .iter()
        .filter_map(|workload| {
            if workload.least_replicas(tenant) <= 1 {
                return None;
            }
            let deployment = &workload.deployment;
            let spec = &deployment.spec;
            let labels = deployment.metadata.labels.as_ref();
            let component = labels.and_then(|labels| labels.get(LABEL_COMPONENT))?;
            let name = deployment.metadata.name.as_deref()?;
            Some(PodDisruptionBudget {
                metadata: tenant.metadata(name, Some(component)),
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(spec.selector.clone()),
                    ..PodDisruptionBudgetSpec::default()
                }),
                ..PodDisruptionBudget::default()
            })
        })
        .collect()
}
