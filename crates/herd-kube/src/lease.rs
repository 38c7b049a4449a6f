//! One holder at a time, through a `coordination.k8s.io` Lease in the cluster.
//!
//! Every Herd process may run a reconciler for every cluster, but only the
//! lease holder's runs: the others wait and take over within a lease duration
//! when the holder dies, so a cluster is reconciled once, not once per process.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::KubeError;

/// Where the lease lives: a namespace every cluster has and controllers use for theirs.
pub const LEASE_NAMESPACE: &str = "kube-system";

pub struct LeaseElection {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
}

enum Claim {
    Held,
    HeldByOther,
}

impl LeaseElection {
    pub fn new(
        client: Client,
        name: impl Into<String>,
        holder: impl Into<String>,
        duration: Duration,
    ) -> Self {
        LeaseElection {
            api: Api::namespaced(client, LEASE_NAMESPACE),
            name: name.into(),
            holder: holder.into(),
            duration,
        }
    }

    /// Runs `work` whenever this process holds the lease, until `shutdown`.
    /// `work` gets a token cancelled when the lease is lost, and must return then.
    pub async fn run_while_holding<F, Fut>(self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let retry = self.duration / 3;
        while !shutdown.is_cancelled() {
            match self.claim().await {
                Ok(Claim::Held) => {
                    tracing::info!(lease = %self.name, holder = %self.holder, "lease acquired");
                    let lost = shutdown.child_token();
                    let running = tokio::spawn(work(lost.clone()));
                    self.keep(&lost, retry).await;
                    lost.cancel();
                    let _ = running.await;
                    tracing::info!(lease = %self.name, "lease released");
                }
                Ok(Claim::HeldByOther) => {}
                Err(err) => {
                    tracing::warn!(lease = %self.name, error = %err, "cannot claim the lease")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    /// Renews until a renewal fails or `lost` is cancelled by shutdown.
    async fn keep(&self, lost: &CancellationToken, every: Duration) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = lost.cancelled() => return,
            }
            match self.claim().await {
                Ok(Claim::Held) => {}
                Ok(Claim::HeldByOther) => {
                    tracing::warn!(lease = %self.name, "lease taken over by another process");
                    return;
                }
                Err(err) => {
                    tracing::warn!(lease = %self.name, error = %err, "cannot renew the lease");
                    return;
                }
            }
        }
    }

    /// Takes or renews the lease if it is free, expired or already ours. The
    /// write carries the read's resourceVersion, so of two claimants racing
    /// for an expired lease exactly one succeeds.
    async fn claim(&self) -> Result<Claim, KubeError> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Claim::Held),
                Err(kube::Error::Api(response)) if response.code == 409 => Ok(Claim::HeldByOther),
                Err(err) => Err(err.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
            renewed.0.as_second() + duration < now.as_second()
        });
        if !ours && !expired {
            return Ok(Claim::HeldByOther);
        }
        let acquired = if ours {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(acquired, now, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Claim::Held),
            Err(kube::Error::Api(response)) if response.code == 409 => Ok(Claim::HeldByOther),
            Err(err) => Err(err.into()),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}
