//! Herd's Kubernetes layer: how Herd reaches a cluster, the `MastodonInstance`
//! resource, the pure manifest builders and the reconciler.

pub mod autoscaler;
pub mod children;
pub mod crd;
pub mod lease;
pub mod manifests;
pub mod reconciler;

use std::path::Path;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("invalid Kubernetes client configuration: {0}")]
    Config(String),
    #[error("Kubernetes API request failed: {0}")]
    Api(#[from] kube::Error),
}

/// A client for the cluster named by `kubeconfig`, or, without one, the
/// standard inference (`KUBECONFIG`, `~/.kube/config`, in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|err| KubeError::Kubeconfig {
                path: path.display().to_string(),
                message: err.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|err| KubeError::Config(err.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|err| KubeError::Config(err.to_string()))?,
    };
    Client::try_from(config).map_err(KubeError::Api)
}

/// The API server's `gitVersion`; doubles as the readiness probe.
pub async fn server_version(client: &Client) -> Result<String, KubeError> {
    Ok(client.apiserver_version().await?.git_version)
}
