use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::PooledConnection;
use herd_kube::children::ClusterProfile;
use herd_kube::crd::MastodonInstanceStatus;
use tokio::sync::{Mutex, watch};
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
    /// The statuses this process's reconcilers reported, for the jobs waiting
    /// for a verdict.
    pub(crate) statuses: StatusSignals,
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
            statuses: StatusSignals::default(),
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

/// The status the reconciler of a cluster last reported for an instance's
/// resource, held per cluster and instance so that what waits for a verdict
/// reads it here instead of asking the cluster's API server, and a thousand
/// waiting jobs are neither polling nor woken for each other. Keyed by the
/// cluster too: during a move, the resource left on the source cluster
/// reports of its own.
///
/// Only the reconcilers of this process publish here, so what waits must
/// still read the resource now and then in case another process holds the
/// cluster's reconciler lease.
#[derive(Default)]
pub(crate) struct StatusSignals(std::sync::Mutex<HashMap<(Uuid, Uuid), StatusSender>>);

type StatusSender = watch::Sender<Option<MastodonInstanceStatus>>;

impl StatusSignals {
    /// Keeps `status` as the latest of the instance's resource on `cluster`
    /// and wakes whoever watches it.
    pub(crate) fn publish(&self, cluster: Uuid, id: Uuid, status: MastodonInstanceStatus) {
        self.lock()
            .entry((cluster, id))
            .or_insert_with(|| watch::channel(None).0)
            .send_replace(Some(status));
    }

    /// The instance's resource on `cluster` is gone: its statuses say nothing any more.
    pub(crate) fn forget(&self, cluster: Uuid, id: Uuid) {
        self.lock().remove(&(cluster, id));
    }

    /// Watches the statuses of the instance's resource on `cluster` from now on.
    pub(crate) fn watch(&self, cluster: Uuid, id: Uuid) -> StatusWatch<'_> {
        let receiver = self
            .lock()
            .entry((cluster, id))
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        StatusWatch {
            signals: self,
            key: (cluster, id),
            receiver,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, Uuid), StatusSender>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) struct StatusWatch<'a> {
    signals: &'a StatusSignals,
    key: (Uuid, Uuid),
    receiver: watch::Receiver<Option<MastodonInstanceStatus>>,
}

impl StatusWatch<'_> {
    /// The latest status published, if any; `changed` waits for a newer one.
    pub(crate) fn latest(&mut self) -> Option<MastodonInstanceStatus> {
        self.receiver.borrow_and_update().clone()
    }

    /// Returns once a status newer than the last `latest` is published; a
    /// publication before the wait counts. Never returns once the resource
    /// is forgotten.
    pub(crate) async fn changed(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for StatusWatch<'_> {
    /// An entry only watched, never published to, is not kept: this process
    /// may not reconcile that cluster, and nothing would ever remove it.
    fn drop(&mut self) {
        let mut signals = self.signals.lock();
        let unused = signals
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() == 1 && sender.borrow().is_none());
        if unused {
            signals.remove(&self.key);
        }
    }
}

pub async fn client_from_kubeconfig(kubeconfig: &str) -> Result<kube::Client, JobError> {
    Ok(herd_kube::client_from_yaml(kubeconfig).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(generation: i64) -> MastodonInstanceStatus {
        MastodonInstanceStatus {
            observed_generation: Some(generation),
            ..MastodonInstanceStatus::default()
        }
    }

    #[tokio::test]
    async fn a_watch_sees_the_latest_status_and_wakes_for_a_newer_one() {
        let signals = StatusSignals::default();
        let (cluster, id) = (Uuid::now_v7(), Uuid::now_v7());
        signals.publish(cluster, id, status(1));
        let mut watch = signals.watch(cluster, id);
        assert_eq!(watch.latest(), Some(status(1)));
        signals.publish(cluster, id, status(2));
        // Published before the wait: kept for it.
        watch.changed().await;
        assert_eq!(watch.latest(), Some(status(2)));
        signals.publish(Uuid::now_v7(), id, status(3));
        let other_cluster = tokio::time::timeout(Duration::from_millis(50), watch.changed());
        assert!(
            other_cluster.await.is_err(),
            "another cluster's resource is another signal"
        );
    }

    #[tokio::test]
    async fn a_forgotten_resource_wakes_nobody_and_an_unused_watch_leaves_nothing() {
        let signals = StatusSignals::default();
        let (cluster, id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut watch = signals.watch(cluster, id);
        assert_eq!(watch.latest(), None);
        signals.forget(cluster, id);
        let woken = tokio::time::timeout(Duration::from_millis(50), watch.changed());
        assert!(woken.await.is_err());
        drop(watch);
        drop(signals.watch(cluster, id));
        assert!(signals.lock().is_empty());
        signals.publish(cluster, id, status(1));
        drop(signals.watch(cluster, id));
        assert_eq!(
            signals.lock().len(),
            1,
            "a published status stays for the next wait"
        );
    }
}
