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
}
