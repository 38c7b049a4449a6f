//! Herd's domain core.
//!
//! Everything here is pure: no database, no network, no clock. Adapters in the
//! other crates feed it facts and act on its answers, which keeps the rules
//! testable without any server.

pub mod archive;
pub mod autoscale;
pub mod billing;
pub mod domain;
pub mod lifecycle;
pub mod plan;
pub mod readiness;
pub mod scaling;
pub mod secrets;
pub mod spec;
pub mod tenant;
pub mod upgrade;
pub mod version;
pub mod waves;
