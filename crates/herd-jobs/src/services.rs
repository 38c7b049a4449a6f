use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::PooledConnection;
use herd_kube::children::ClusterProfile;
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

use crate::JobError;
use crate::archives::Archives;
use crate::billing::BillingSettings;
use crate::faults::Faults;
use crate::leases::Leases;

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
    /// Wakes the jobs waiting for an instance the reconciler marked running.
    pub(crate) ready: ReadySignals,
    pub(crate) leases: Leases,
    pub archives: Arc<Archives>,
    /// Stripe and what billing needs; `None` when billing is off.
    pub billing: Option<Arc<BillingSettings>>,
    clusters: Mutex<HashMap<Uuid, kube::Client>>,
}

impl Services {
    pub fn new(
        pool: herd_db::Pool,
        sealer: herd_db::Sealer,
        profile: ClusterProfile,
        faults: Faults,
        installation: String,
        archives: Arc<Archives>,
    ) -> Self {
        Services {
            pool,
            sealer,
            profile,
            faults,
            installation,
            archives,
            billing: None,
            lease: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(300),
            ready: ReadySignals::default(),
            leases: Leases::default(),
            clusters: Mutex::new(HashMap::new()),
        }
    }

    pub async fn conn(&self) -> Result<PooledConnection<'_, AsyncPgConnection>, JobError> {
        self.pool
            .get()
            .await
            .map_err(|err| JobError::Pool(err.to_string()))
    }

    /// The instance's Mastodon secrets; every instance past its `secrets`
    /// step has them.
    pub async fn stored_secrets(
        &self,
        id: Uuid,
    ) -> Result<std::collections::BTreeMap<String, String>, JobError> {
        let mut conn = self.conn().await?;
        herd_db::instances::load_secrets(&mut conn, &self.sealer, id)
            .await?
            .ok_or_else(|| JobError::Payload(format!("instance {id} has no stored secrets")))
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

/// One wake-up per instance someone waits for, so a thousand waiting jobs
/// need neither a thousand polls a second nor to be woken for each other.
#[derive(Default)]
pub(crate) struct ReadySignals(std::sync::Mutex<HashMap<Uuid, Arc<Notify>>>);

impl ReadySignals {
    /// The instance's signal, for as long as the returned guard lives.
    pub(crate) fn watch(&self, id: Uuid) -> ReadySignal<'_> {
        let notify = self
            .lock()
            .entry(id)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        ReadySignal {
            signals: self,
            id,
            notify,
        }
    }

    /// Wakes whoever waits for `id`; a wake-up before the wait is kept for it.
    pub(crate) fn wake(&self, id: Uuid) {
        if let Some(notify) = self.lock().get(&id) {
            notify.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Notify>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) struct ReadySignal<'a> {
    signals: &'a ReadySignals,
    id: Uuid,
    notify: Arc<Notify>,
}

impl ReadySignal<'_> {
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for ReadySignal<'_> {
    fn drop(&mut self) {
        self.signals.lock().remove(&self.id);
    }
}

pub async fn client_from_kubeconfig(kubeconfig: &str) -> Result<kube::Client, JobError> {
    Ok(herd_kube::client_from_yaml(kubeconfig).await?)
}
