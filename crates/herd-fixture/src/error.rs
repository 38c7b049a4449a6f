use herd_tenancy::TenancyError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FixtureError {
    /// `message` carries the server's own words, which `source` alone does not print.
    #[error("PostgreSQL: {operation} failed: {message}")]
    Postgres {
        operation: String,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
}

impl FixtureError {
    pub(crate) fn postgres(operation: &str) -> impl FnOnce(tokio_postgres::Error) -> Self + '_ {
        move |source| FixtureError::Postgres {
            operation: operation.to_owned(),
            message: source
                .as_db_error()
                .map(|db| db.message().to_owned())
                .unwrap_or_else(|| source.to_string()),
            source,
        }
    }
}
