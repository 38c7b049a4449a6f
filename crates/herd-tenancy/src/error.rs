use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TenancyError {
    #[error("invalid endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("{service} request failed: {source}")]
    Transport {
        service: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{service} answered {status} to {operation}: {body}")]
    Rejected {
        service: &'static str,
        operation: String,
        status: u16,
        body: String,
    },
    #[error("{service} answered {operation} with a body that could not be read: {message}")]
    Decode {
        service: &'static str,
        operation: String,
        message: String,
    },
    #[error("invalid PostgreSQL admin URL: {message}")]
    AdminUrl { message: String },
    #[error("invalid {kind} name {value:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
    /// `message` carries the server's own words, which `source` alone does not print.
    #[error("PostgreSQL: {operation} failed: {message}")]
    Postgres {
        operation: String,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The name is taken by something Herd did not create for this tenant;
    /// converging would mean taking it over, so Herd leaves it alone.
    #[error("PostgreSQL: {message}")]
    Conflict { message: String },
    #[error("the operating system's random source failed: {message}")]
    Randomness { message: String },
    #[error("reading {} failed: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
}
