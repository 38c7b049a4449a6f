use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::{DbError, Pool, run_pending_migrations, server_version};

/// Whether this process has brought the schema up to date. Herd serves HTTP
/// before the database is reachable, so an orchestrator sees it alive but not
/// ready instead of a crash loop, and it turns ready once migrations are applied.
#[derive(Clone)]
pub struct SchemaStatus(Arc<RwLock<Option<String>>>);

const NOT_YET: &str = "schema migrations have not been applied yet";
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);

impl Default for SchemaStatus {
    fn default() -> Self {
        SchemaStatus(Arc::new(RwLock::new(Some(NOT_YET.to_owned()))))
    }
}

impl SchemaStatus {
    /// Why the schema is not current, or `None` once it is.
    pub fn pending_reason(&self) -> Option<String> {
        self.0
            .read()
            .map(|reason| reason.clone())
            .unwrap_or_else(|_| Some(NOT_YET.to_owned()))
    }

    fn set(&self, reason: Option<String>) {
        if let Ok(mut current) = self.0.write() {
            *current = reason;
        }
    }

    /// Applies pending migrations, retrying with backoff until they succeed.
    pub async fn migrate_until_current(&self, database_url: &str) {
        let mut wait = FIRST_RETRY;
        loop {
            match run_pending_migrations(database_url).await {
                Ok(report) => {
                    tracing::info!(applied = ?report.versions, "database schema is current");
                    self.set(None);
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?wait, "cannot apply migrations yet");
                    self.set(Some(err.to_string()));
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LAST_RETRY);
        }
    }
}

/// The readiness probe: the schema is current and the server answers.
pub async fn probe_ready(pool: &Pool, schema: &SchemaStatus) -> Result<String, DbError> {
    if let Some(reason) = schema.pending_reason() {
        return Err(DbError::SchemaPending(reason));
    }
    server_version(pool).await
}
