//! Putting the `MastodonInstance` CRD in place before anything watches it.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::core::CustomResourceExt;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};

use super::ReconcileError;
use crate::crd::{FIELD_MANAGER, MastodonInstance};

const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies the CRD with Server-Side Apply and waits until the API server
/// serves it: a watch started before then fails.
pub async fn install_crd(client: &Client) -> Result<(), ReconcileError> {
    let crd = MastodonInstance::crd();
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(ReconcileError::api(format!("applying CRD {name}")))?;
    let established = await_condition(api, &name, conditions::is_crd_established());
    match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(ReconcileError::CrdNotEstablished {
            name,
            reason: err.to_string(),
        }),
        Err(_) => Err(ReconcileError::CrdNotEstablished {
            name,
            reason: format!("not Established after {ESTABLISH_TIMEOUT:?}"),
        }),
    }
}
