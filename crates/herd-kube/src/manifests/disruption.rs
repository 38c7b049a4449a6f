//! PodDisruptionBudgets, so node drains never take all replicas of a
//! component at once. A single replica gets none: a budget for it would
//! block every drain.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Tenant;
use crate::children::LABEL_COMPONENT;

pub(super) fn budgets(tenant: &Tenant, deployments: &[Deployment]) -> Vec<PodDisruptionBudget> {
    deployments
        .iter()
        .filter_map(|deployment| {
            let spec = &deployment.spec;
            if spec.replicas.unwrap_or(1) <= 1 {
                return None;
            }
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
