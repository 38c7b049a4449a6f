//! The leases of every job this process runs, renewed together: one
//! statement per renewal period whatever the number of jobs. A renewal per
//! job made a thousand instances waiting for their pods a hundred writes a
//! second, enough to starve the API of database connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use herd_db::jobs::JobId;
use tokio_util::sync::CancellationToken;

use crate::Services;

#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<JobId, Holder>>,
    keeper_started: OnceLock<()>,
}

struct Holder {
    worker: String,
    lost: CancellationToken,
}

/// A job's lease while its worker runs it; dropping it stops the renewals.
pub(crate) struct Lease {
    services: Arc<Services>,
    job: JobId,
    /// Cancelled when another worker took the job over.
    pub lost: CancellationToken,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.services.leases.lock().remove(&self.job);
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Holder>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps the lease of `job`, which `worker` claimed, until the returned
/// lease is dropped. The first lease of the process starts the renewals.
pub(crate) fn hold(services: &Arc<Services>, job: JobId, worker: &str) -> Lease {
    services.leases.keeper_started.get_or_init(|| {
        tokio::spawn(keep(Arc::downgrade(services)));
    });
    let lost = CancellationToken::new();
    services.leases.lock().insert(
        job,
        Holder {
            worker: worker.to_owned(),
            lost: lost.clone(),
        },
    );
    Lease {
        services: services.clone(),
        job,
        lost,
    }
}

/// Renews every held lease three times per lease, so one lost renewal never
/// costs a job; stops when the services are gone.
async fn keep(services: Weak<Services>) {
    let Some(period) = services.upgrade().map(|s| s.lease / 3) else {
        return;
    };
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(services) = services.upgrade() else {
            return;
        };
        let held: Vec<(JobId, String)> = services
            .leases
            .lock()
            .iter()
            .map(|(job, holder)| (*job, holder.worker.clone()))
            .collect();
        if held.is_empty() {
            continue;
        }
        let renewed = match services.conn().await {
            Ok(mut conn) => herd_db::jobs::heartbeat(&mut conn, &held, services.lease).await,
            Err(err) => {
                tracing::warn!(error = %err, "cannot renew the job leases");
                continue;
            }
        };
        match renewed {
            Ok(renewed) => {
                let leases = services.leases.lock();
                for (job, worker) in held.iter().filter(|(job, _)| !renewed.contains(job)) {
                    // A job that finished since the snapshot is no longer held
                    // here, or held again under a new claim.
                    if let Some(holder) = leases.get(job).filter(|h| &h.worker == worker) {
                        holder.lost.cancel();
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot renew the job leases"),
        }
    }
}
