use diesel::connection::SimpleConnection;
use diesel::migration::MigrationVersion;
use diesel::{Connection, QueryResult};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::DbError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// An arbitrary constant shared by every Herd process: whoever holds this
/// advisory lock is the one changing the schema.
const MIGRATION_LOCK_KEY: i64 = 0x4865_7264_4d69_6772;

/// The migrations a run applied or reverted, by version, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub versions: Vec<String>,
}

type SyncConnection = AsyncConnectionWrapper<AsyncPgConnection>;

/// Applies every pending migration. Safe to call from several processes at once.
pub async fn run_pending_migrations(database_url: &str) -> Result<MigrationReport, DbError> {
    with_migration_lock(database_url, |conn| {
        conn.run_pending_migrations(MIGRATIONS).map(versions)
    })
    .await
}

/// Reverts every applied migration, newest first. Meant for development and
/// for the test that proves each `down.sql` undoes its `up.sql`.
pub async fn revert_all_migrations(database_url: &str) -> Result<MigrationReport, DbError> {
    with_migration_lock(database_url, |conn| {
        conn.revert_all_migrations(MIGRATIONS).map(versions)
    })
    .await
}

fn versions(applied: Vec<MigrationVersion<'_>>) -> MigrationReport {
    MigrationReport {
        versions: applied.iter().map(ToString::to_string).collect(),
    }
}

type HarnessResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// The migration harness is synchronous, so it runs on a blocking thread over
// an adapted async connection rather than stalling the runtime.
async fn with_migration_lock<F>(database_url: &str, work: F) -> Result<MigrationReport, DbError>
where
    F: FnOnce(&mut SyncConnection) -> HarnessResult<MigrationReport> + Send + 'static,
{
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn =
            SyncConnection::establish(&url).map_err(|err| DbError::Connect(err.to_string()))?;
        lock(&mut conn, "pg_advisory_lock").map_err(DbError::Query)?;
        let outcome = work(&mut conn).map_err(|err| DbError::Migration(err.to_string()));
        lock(&mut conn, "pg_advisory_unlock").map_err(DbError::Query)?;
        outcome
    })
    .await
    .map_err(|err| DbError::Migration(format!("migration task failed: {err}")))?
}

fn lock(conn: &mut SyncConnection, function: &str) -> QueryResult<()> {
    conn.batch_execute(&format!("SELECT {function}({MIGRATION_LOCK_KEY})"))
}
