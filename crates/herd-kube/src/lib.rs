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

/// How Herd names itself to API servers, so that their audit logs and request
/// metrics tell Herd's requests from those of controllers and people.
const USER_AGENT: &str = concat!("herd/", env!("CARGO_PKG_VERSION"));

/// A client for the cluster named by `kubeconfig`, or, without one, the
/// standard inference (`KUBECONFIG`, `~/.kube/config`, in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|err| KubeError::Kubeconfig {
                path: path.display().to_string(),
                message: err.to_string(),
            })?;
            client_from(file).await
        }
        None => named_client(
            kube::Config::infer()
                .await
                .map_err(|err| KubeError::Config(err.to_string()))?,
        ),
    }
}

/// A client for the cluster of a kubeconfig held as YAML (a fleet member's,
/// decrypted from the database).
pub async fn client_from_yaml(kubeconfig: &str) -> Result<Client, KubeError> {
    let file =
        Kubeconfig::from_yaml(kubeconfig).map_err(|err| KubeError::Config(err.to_string()))?;
    client_from(file).await
}

async fn client_from(file: Kubeconfig) -> Result<Client, KubeError> {
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|err| KubeError::Config(err.to_string()))?;
    named_client(config)
}

fn named_client(mut config: kube::Config) -> Result<Client, KubeError> {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config).map_err(KubeError::Api)
}

/// The API server's `gitVersion`; doubles as the readiness probe.
pub async fn server_version(client: &Client) -> Result<String, KubeError> {
    Ok(client.apiserver_version().await?.git_version)
}
