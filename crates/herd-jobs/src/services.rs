use std::collections::HashMap;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::PooledConnection;
use herd_kube::children::ClusterProfile;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::JobError;
use crate::faults::Faults;

/// What the operations work with: the database, the sealing key, and a client
/// per fleet cluster.
pub struct Services {
    pub pool: herd_db::Pool,
    pub sealer: herd_db::Sealer,
    pub profile: ClusterProfile,
    pub faults: Faults,
    /// This installation's name; its resources carry it and its reconcilers select by it.
    pub installation: String,
    /// How long a worker holds a job without renewing; a crashed worker's
    /// job is taken over after this long.
    pub lease: Duration,
    /// How long the `ready` step waits for the reconciler before the job is retried.
    pub ready_timeout: Duration,
    clusters: Mutex<HashMap<Uuid, kube::Client>>,
}

impl Services {
    pub fn new(
        pool: herd_db::Pool,
        sealer: herd_db::Sealer,
        profile: ClusterProfile,
        faults: Faults,
        installation: String,
    ) -> Self {
        Services {
            pool,
            sealer,
            profile,
            faults,
            installation,
            lease: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(300),
            clusters: Mutex::new(HashMap::new()),
        }
    }

    pub async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>, JobError> {
        self.pool
            .get()
            .await
            .map_err(|err| JobError::Pool(err.to_string()))
    }

    /// A client for a registered cluster, built once from its sealed kubeconfig.
    pub async fn cluster_client(&self, cluster_id: Uuid) -> Result<kube::Client, JobError> {
        let mut clients = self.clusters.lock().await;
        if let Some(client) = clients.get(&cluster_id) {
            return Ok(client.clone());
        }
        let kubeconfig = {
            let mut conn = self.conn().await?;
            herd_db::fleet::cluster_kubeconfig(&mut conn, &self.sealer, cluster_id).await?
        };
        let client = client_from_kubeconfig(&kubeconfig).await?;
        clients.insert(cluster_id, client.clone());
        Ok(client)
    }
}

pub async fn client_from_kubeconfig(kubeconfig: &str) -> Result<kube::Client, JobError> {
    let invalid = |message: String| herd_kube::KubeError::Config(message);
    let parsed = Kubeconfig::from_yaml(kubeconfig).map_err(|err| invalid(err.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .map_err(|err| invalid(err.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}
