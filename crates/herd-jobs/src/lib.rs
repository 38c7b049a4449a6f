//! Herd's long operations as resumable steps on the durable job queue.
//!
//! An API request records an operation and enqueues a job in one transaction;
//! workers here claim the job, run its steps with a checkpoint after each, and
//! a crash at any point resumes at the first step not recorded.

pub mod archives;
mod backend;
pub mod billing;
pub mod changes;
mod delete;
pub mod drain;
mod error;
mod expiry;
pub mod export;
pub mod faults;
pub mod fleet_upgrade;
mod leases;
pub mod migrate;
mod provision;
mod relay;
pub mod resource;
mod restore;
mod services;
mod steps;
mod tenant_data;
mod update;
pub mod upgrade;
mod worker;

pub use backend::HerdBackend;
pub use delete::STEPS as DELETE_STEPS;
pub use error::JobError;
pub use expiry::run as run_export_expiry;
pub use export::ExportJob;
pub use relay::run as run_event_relay;
pub use services::{Services, client_from_kubeconfig};
pub use worker::run as run_worker;

/// Job kinds, as the API enqueues them.
pub mod kinds {
    pub use crate::billing::EVENT_KIND as STRIPE_EVENT;
    pub use crate::delete::KIND as DELETE_INSTANCE;
    pub use crate::drain::KIND as DRAIN_CLUSTER;
    pub use crate::export::KIND as EXPORT_INSTANCE;
    pub use crate::migrate::KIND as MIGRATE_INSTANCE;
    pub use crate::provision::KIND as PROVISION_INSTANCE;
    pub use crate::update::KIND as UPDATE_INSTANCE;
    pub use crate::upgrade::KIND as UPGRADE_INSTANCE;
}

/// Runs a generator of herd-core (which takes its randomness as an argument,
/// to stay pure) on the operating system's random source.
pub fn with_os_random<T>(
    generate: impl FnOnce(&mut dyn FnMut(&mut [u8])) -> T,
) -> Result<T, JobError> {
    let mut failed = false;
    let generated = generate(&mut |buffer: &mut [u8]| {
        failed |= getrandom::fill(buffer).is_err();
    });
    if failed {
        return Err(JobError::Random);
    }
    Ok(generated)
}

/// The payload of every instance job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InstanceJob {
    pub instance_id: uuid::Uuid,
    pub operation_id: uuid::Uuid,
    /// The verified archive an imported instance is restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<StagedArchive>,
}

/// An archive waiting in Herd's archive bucket of one object store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedArchive {
    pub object_store_id: uuid::Uuid,
    pub object_key: String,
}
