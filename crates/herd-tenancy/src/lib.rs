//! Per-tenant data services.
//!
//! Each Mastodon instance gets its own PostgreSQL database owned by a role of
//! its own, and its own bucket with an access key allowed on that bucket only.
//! This crate creates the database and role on a PostgreSQL server Herd
//! administers, creates buckets and keys on a Garage object store, and reads
//! and writes objects over plain S3, so anything S3-compatible serves the data
//! path.

mod dump;
mod error;
mod garage;
mod postgres;
mod retry;
mod s3;

pub use dump::{PgTools, RestoreReport, looks_like_custom_dump};
pub use error::TenancyError;
pub use garage::{AccessKey, BucketPermissions, GarageAdmin};
pub use postgres::{
    DatabaseServer, DatabaseState, RolePassword, RoleState, SchemaState, TenantCredentials,
    TenantDatabase, TenantState, generate_password, schema_migration_version,
};
pub use retry::when_busy;
pub use s3::{ObjectStore, StoredObject};
