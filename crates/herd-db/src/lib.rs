//! Herd's PostgreSQL layer.
//!
//! Queries run on `diesel-async` over a bb8 pool. Migrations are embedded in
//! the binary and run under an advisory lock, so several Herd processes
//! starting at once apply them exactly once. [`jobs`] is the durable job
//! queue the long operations run on, [`outbox`] the events announcing
//! committed changes.

pub mod accounts;
pub mod archives;
pub mod audit;
mod backoff;
pub mod billing;
pub mod drains;
mod error;
pub mod fleet;
pub mod fleet_upgrades;
pub mod idempotency;
pub mod instances;
pub mod jobs;
mod migrate;
pub mod operations;
pub mod outbox;
pub mod plans;
mod pool;
mod readiness;
mod schema;
mod sealing;
pub mod upgrades;

pub use backoff::Backoff;
pub use error::DbError;
pub use migrate::{MigrationReport, revert_all_migrations, run_pending_migrations};
pub use pool::{Pool, connect, server_version};
pub use readiness::{SchemaStatus, probe_ready};
pub use sealing::{Sealer, SealingError};
