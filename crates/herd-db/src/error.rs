use thiserror::Error;

#[derive(Debug, Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database schema is not current: {0}")]
    SchemaPending(String),
    #[error("timed out after {0:?} waiting for a database connection")]
    Timeout(std::time::Duration),
    /// The worker no longer holds the job: its lease expired and another
    /// worker claimed it, or the job has finished. The worker must stop.
    #[error("worker {worker} no longer holds job {job}")]
    LeaseLost { job: uuid::Uuid, worker: String },
    #[error("{0} must run inside a transaction")]
    TransactionRequired(&'static str),
    #[error("the domain {0} is already hosted")]
    DomainTaken(String),
    #[error("the account {email} exists with the role {existing}")]
    RoleMismatch { email: String, existing: String },
    #[error("instance {id}: {source}")]
    Transition {
        id: uuid::Uuid,
        #[source]
        source: herd_core::lifecycle::TransitionRefused,
    },
    #[error("instance {0} changed state concurrently; retry")]
    ConcurrentChange(uuid::Uuid),
    #[error(transparent)]
    Sealing(#[from] crate::SealingError),
    #[error("stored {what} is unreadable: {message}")]
    Corrupt { what: &'static str, message: String },
}
