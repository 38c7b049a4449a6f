//! Per-tenant data services.
//!
//! Each Mastodon instance gets its own bucket and an access key allowed on that
//! bucket only; this crate creates them on a Garage object store and reads and
//! writes objects over plain S3, so anything S3-compatible serves the data path.

mod error;
mod garage;
mod s3;

pub use error::TenancyError;
pub use garage::{AccessKey, BucketPermissions, GarageAdmin};
pub use s3::ObjectStore;
