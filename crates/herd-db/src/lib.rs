//! Herd's PostgreSQL layer.
//!
//! Queries run on `diesel-async` over a bb8 pool. Migrations are embedded in
//! the binary and run under an advisory lock, so several Herd processes
//! starting at once apply them exactly once.

mod error;
mod migrate;
mod pool;
mod schema;

pub use error::DbError;
pub use migrate::{MigrationReport, revert_all_migrations, run_pending_migrations};
pub use pool::{Pool, connect, server_version};
pub use schema::{SchemaStatus, probe_ready};
