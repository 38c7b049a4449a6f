//! The reconciler: turns each `MastodonInstance` into the children the
//! manifest builders describe, keeps them there, reports how they fare, and
//! removes the instance's data when the resource is deleted.
//!
//! One file per concern: `controller` wires the watches and the finalizer,
//! `stores` keeps what the watches of the children report, `applied` what
//! this process last wrote and when it must write again, `apply` writes and
//! prunes children, `status` judges them, `cleanup` tears an instance down,
//! `backoff` spaces out retries, `install` puts the CRD in place.

mod applied;
mod apply;
mod backoff;
mod cleanup;
mod controller;
mod install;
mod status;
mod stores;

use std::future::Future;

use thiserror::Error;

use crate::children::InstanceSecrets;
use crate::crd::{MastodonInstance, MastodonInstanceStatus};

pub use controller::{Reconciler, WatchedStores, run};
pub use install::install_crd;

/// What the reconciler needs from the part of Herd that owns the tenant's
/// data services and the instance rows.
pub trait TenantBackend: Send + Sync + 'static {
    /// The instance's secret environment, read on every pass and copied into
    /// its Secret whenever the children are written: a change is written like
    /// a change of the spec.
    fn secrets(
        &self,
        instance: &MastodonInstance,
    ) -> impl Future<Output = Result<InstanceSecrets, BackendError>> + Send;

    /// Drops the tenant database, role, bucket and key. Called after the
    /// namespace is gone, so no pod holds a connection; it must be idempotent,
    /// because a failure to release the finalizer afterwards calls it again.
    fn cleanup(
        &self,
        instance: &MastodonInstance,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Called with every new status before it is written to the cluster, so
    /// Herd can mirror the conditions into its database and hand the status to
    /// what waits for it in the same process. A status the resource already
    /// carries is not passed again, not even on the first pass of a process.
    /// A failure keeps the old status in the cluster and the call is repeated
    /// on the next pass, so one change may arrive more than once.
    fn status_changed(
        &self,
        instance: &MastodonInstance,
        status: &MastodonInstanceStatus,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// A failure of the backend, whatever it is built on.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct BackendError(Box<dyn std::error::Error + Send + Sync>);

impl BackendError {
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
        BackendError(source.into())
    }
}

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("{action}: {}", api_message(source))]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("tenant backend: {0}")]
    Backend(#[from] BackendError),
    /// Not a failure: cleanup waits for the namespace controller.
    #[error("namespace {0} is still being deleted")]
    NamespaceTerminating(String),
    #[error("the watches of the instance's children stopped")]
    WatchesStopped,
    #[error("CRD {name}: {reason}")]
    CrdNotEstablished { name: String, reason: String },
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

/// The API server's own message: the full error repeats it with every cause.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

impl ReconcileError {
    fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
        let action = action.into();
        move |source| ReconcileError::Api { action, source }
    }

    /// The error that stopped the pass, looking through the finalizer's wrapping.
    fn cause(&self) -> &ReconcileError {
        use kube::runtime::finalizer::Error as F;
        match self {
            ReconcileError::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(err) | F::CleanupFailed(err) => err.cause(),
                _ => self,
            },
            _ => self,
        }
    }
}
