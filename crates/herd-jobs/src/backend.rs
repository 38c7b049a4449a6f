//! What the reconciler asks of Herd: an instance's secrets, the cleanup of its
//! data services, and a place to report its status; and what the autoscaler
//! asks: a record of each change it makes.

use std::future::Future;
use std::sync::Arc;

use diesel_async::AsyncConnection;
use herd_core::lifecycle::{InstanceState, LifecycleEvent};
use herd_db::audit::{Actor, AuditEntry};
use herd_kube::autoscaler::{AutoscaleBackend, Autoscaled};
use herd_kube::children::InstanceSecrets;
use herd_kube::crd::{MastodonInstance, MastodonInstanceStatus, READY};
use herd_kube::reconciler::{BackendError, TenantBackend};
use serde_json::json;
use uuid::Uuid;

use crate::{JobError, Services, tenant_data};

/// The reconciler's view of Herd's database, for the reconciler of one cluster.
///
/// A resource on a cluster the instance is no longer placed on is what a
/// move between clusters leaves behind until it deletes it: its status says
/// nothing of the instance, and its deletion removes no data (the move drops
/// the source database itself; the data the record points at is the
/// instance's, on the target).
pub struct HerdBackend {
    services: Arc<Services>,
    cluster: Uuid,
}

impl HerdBackend {
    pub fn new(services: Arc<Services>, cluster: Uuid) -> Self {
        HerdBackend { services, cluster }
    }
}

/// The instance's record, if the instance is placed on `cluster`.
async fn placed_on(
    services: &Services,
    id: Uuid,
    cluster: Uuid,
) -> Result<Option<herd_db::instances::Instance>, BackendError> {
    let mut conn = services.conn().await.map_err(BackendError::new)?;
    let row = herd_db::instances::load_instance(&mut conn, id)
        .await
        .map_err(BackendError::new)?;
    Ok(row.filter(|row| row.cluster_id == Some(cluster)))
}

fn instance_id(instance: &MastodonInstance) -> Result<Uuid, BackendError> {
    Uuid::parse_str(&instance.spec.instance.instance_id).map_err(BackendError::new)
}

impl TenantBackend for HerdBackend {
    fn secrets(
        &self,
        instance: &MastodonInstance,
    ) -> impl Future<Output = Result<InstanceSecrets, BackendError>> + Send {
        let services = self.services.clone();
        let id = instance_id(instance);
        async move {
            let id = id?;
            let mut conn = services.conn().await.map_err(BackendError::new)?;
            let env = herd_db::instances::load_secrets(&mut conn, &services.sealer, id)
                .await
                .map_err(BackendError::new)?
                .ok_or_else(|| BackendError::new(format!("instance {id} has no stored secrets")))?;
            Ok(InstanceSecrets { env })
        }
    }

    fn cleanup(
        &self,
        instance: &MastodonInstance,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let services = self.services.clone();
        let cluster = self.cluster;
        let id = instance_id(instance);
        async move {
            let id = id?;
            services.statuses.forget(cluster, id);
            // A resource Herd has no record of has no data services Herd made,
            // and one left behind by a move has none of its own.
            let Some(row) = placed_on(&services, id, cluster).await? else {
                return Ok(());
            };
            tenant_data::remove_all(&services, &row)
                .await
                .map_err(BackendError::new)
        }
    }

    fn status_changed(
        &self,
        instance: &MastodonInstance,
        status: &MastodonInstanceStatus,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let services = self.services.clone();
        let cluster = self.cluster;
        let id = instance_id(instance);
        // Workloads scaled to zero are ready for a suspension, never a sign
        // that the instance runs (a move freezes it that way, while it is updating).
        let ready = status.holding(READY).is_some() && !instance.spec.instance.suspended;
        let phase = status.phase.clone();
        let status = status.clone();
        async move {
            let id = id?;
            if ready && placed_on(&services, id, cluster).await?.is_some() {
                mark_running(&services, id, phase)
                    .await
                    .map_err(BackendError::new)?;
            }
            // Once the database says running: what wakes on a Ready status
            // finds the instance so.
            services.statuses.publish(cluster, id, status);
            Ok(())
        }
    }
}

impl AutoscaleBackend for HerdBackend {
    fn autoscaled(
        &self,
        instance: &MastodonInstance,
        change: &Autoscaled,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let services = self.services.clone();
        let id = instance_id(instance);
        let change = change.clone();
        async move {
            record_autoscaling(&services, id?, &change)
                .await
                .map_err(BackendError::new)
        }
    }
}

/// The autoscaler changed a group's replicas: an event and the trail say so.
/// The instance's state stays: autoscaling is no operation of its own.
async fn record_autoscaling(
    services: &Services,
    id: Uuid,
    change: &Autoscaled,
) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    let facts = json!({ "instance_id": id, "details": change });
    conn.transaction::<_, JobError, _>(async move |conn| {
        herd_db::outbox::publish(conn, "instance.autoscaled", facts.clone()).await?;
        herd_db::audit::record(
            conn,
            AuditEntry {
                actor: Actor::System("autoscaler"),
                action: "instance.autoscale",
                object_kind: "instance",
                object_id: id.to_string(),
                details: facts,
            },
        )
        .await?;
        Ok(())
    })
    .await
}

/// Provisioning or an update finished: the instance is Running, and the trail
/// says so. An upgrade passes through several Ready states and ends the
/// Updating state itself, once its last stage is done.
async fn mark_running(
    services: &Services,
    id: Uuid,
    phase: Option<String>,
) -> Result<(), JobError> {
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async move |conn| {
        let Some(current) = herd_db::instances::load_instance(conn, id).await? else {
            return Ok(());
        };
        if !matches!(
            current.state,
            InstanceState::Provisioning | InstanceState::Updating
        ) {
            return Ok(());
        }
        let upgrade = herd_db::upgrades::latest_upgrade(conn, id).await?;
        if upgrade.is_some_and(|upgrade| upgrade.stage.is_active()) {
            return Ok(());
        }
        herd_db::instances::transition(conn, id, &LifecycleEvent::BecameReady).await?;
        herd_db::audit::record(
            conn,
            AuditEntry {
                actor: Actor::System("reconciler"),
                action: "instance.ready",
                object_kind: "instance",
                object_id: id.to_string(),
                details: json!({ "from": current.state.name(), "phase": phase }),
            },
        )
        .await?;
        Ok(())
    })
    .await
}
