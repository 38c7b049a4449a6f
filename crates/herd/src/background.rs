//! The work `herd serve` does besides answering HTTP: job workers, the event
//! relay, the expiry of old exports, the retention of suspended instances, and a
//! reconciler with its Sidekiq autoscaler for every cluster of the fleet. They start once the schema is
//! current and stop when the server does.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use herd_jobs::archives::Archives;
use herd_jobs::billing::BillingSettings;
use herd_jobs::resource::installation_selector;
use herd_jobs::{HerdBackend, Services};
use herd_kube::autoscaler::{Autoscaler, AutoscalerSettings};
use herd_kube::lease::LeaseElection;
use herd_kube::reconciler::Reconciler;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Settings;

/// How often the fleet is checked for clusters registered since the start.
const CLUSTER_SCAN: Duration = Duration::from_secs(15);

pub fn start(
    settings: &Settings,
    pool: herd_db::Pool,
    schema: herd_db::SchemaStatus,
    archives: Arc<Archives>,
    billing: Option<Arc<BillingSettings>>,
) -> anyhow::Result<CancellationToken> {
    let sealer = settings.require_sealer()?.clone();
    let mut services = Services::new(
        pool,
        sealer,
        settings.cluster_profile.clone(),
        herd_jobs::faults::Faults::from_env(),
        settings.installation.clone(),
        archives,
    );
    services.lease = settings.job_lease;
    services.billing = billing;
    let services = Arc::new(services);
    let shutdown = CancellationToken::new();
    let (workers, reconcile) = (settings.workers, settings.reconcile);
    let autoscaler = settings.autoscaler.clone();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if !schema_current(&schema, &shutdown).await {
                return;
            }
            let process = format!("{}-{}", hostname(), Uuid::now_v7().simple());
            for index in 0..workers {
                let worker_id = format!("{process}-{index}");
                tokio::spawn(herd_jobs::run_worker(
                    services.clone(),
                    worker_id,
                    shutdown.clone(),
                ));
            }
            tokio::spawn(herd_jobs::run_event_relay(
                services.clone(),
                shutdown.clone(),
            ));
            tokio::spawn(herd_jobs::run_export_expiry(
                services.clone(),
                shutdown.clone(),
            ));
            tokio::spawn(herd_jobs::billing::run_retention(
                services.clone(),
                shutdown.clone(),
            ));
            if reconcile {
                supervise_reconcilers(services, autoscaler, &process, shutdown).await;
            }
        }
    });
    Ok(shutdown)
}

async fn schema_current(schema: &herd_db::SchemaStatus, shutdown: &CancellationToken) -> bool {
    while schema.pending_reason().is_some() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = shutdown.cancelled() => return false,
        }
    }
    true
}

/// Starts a reconciler and an autoscaler for each cluster of the fleet,
/// including clusters registered while Herd runs.
async fn supervise_reconcilers(
    services: Arc<Services>,
    autoscaler: AutoscalerSettings,
    process: &str,
    shutdown: CancellationToken,
) {
    let mut running: HashSet<Uuid> = HashSet::new();
    loop {
        match cluster_ids(&services).await {
            Ok(ids) => {
                let new: Vec<Uuid> = ids.into_iter().filter(|id| !running.contains(id)).collect();
                for id in new {
                    match start_reconciler(
                        &services,
                        Arc::new(HerdBackend::new(services.clone(), id)),
                        &autoscaler,
                        id,
                        process,
                        shutdown.clone(),
                    )
                    .await
                    {
                        Ok(()) => {
                            running.insert(id);
                        }
                        Err(err) => {
                            tracing::warn!(cluster = %id, error = format!("{err:#}"), "cannot reconcile the cluster yet")
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "cannot list the fleet's clusters"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(CLUSTER_SCAN) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn cluster_ids(services: &Services) -> anyhow::Result<Vec<Uuid>> {
    let mut conn = services.conn().await?;
    Ok(herd_db::fleet::serving_cluster_ids(&mut conn).await?)
}

/// Holders of a reconciler lease give it up this long after they stop renewing.
const RECONCILER_LEASE: Duration = Duration::from_secs(15);

/// The autoscaler runs under the reconciler's lease: one holder per cluster
/// scales its instances, and never twice.
async fn start_reconciler(
    services: &Arc<Services>,
    backend: Arc<HerdBackend>,
    autoscaler: &AutoscalerSettings,
    cluster: Uuid,
    process: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = services.cluster_client(cluster).await?;
    herd_kube::reconciler::install_crd(&client).await?;
    let election = LeaseElection::new(
        client.clone(),
        format!("herd-reconciler-{}", services.installation),
        process,
        RECONCILER_LEASE,
    );
    let selector = installation_selector(&services.installation);
    let profile = services.profile.clone();
    let autoscaler = autoscaler.clone();
    tokio::spawn(election.run_while_holding(shutdown, move |lost| {
        let autoscaler = Autoscaler::new(client.clone(), backend.clone(), autoscaler.clone());
        let autoscaler_stops = lost.clone().cancelled_owned();
        Reconciler::new(client.clone(), backend.clone(), profile.clone())
            .instance_selector(selector.clone())
            .alongside(move |stores| Box::pin(autoscaler.run(stores, autoscaler_stops)))
            .run(lost.cancelled_owned())
    }));
    tracing::info!(%cluster, "reconciling and autoscaling the cluster's instances while holding its lease");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "herd".to_owned())
}
