use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::AsyncPgConnection;
use diesel_async::RunQueryDsl;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8;

use crate::DbError;

pub type Pool = bb8::Pool<AsyncPgConnection>;

const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a pool without connecting: Herd starts even while the database is
/// down and `/readyz` says so, instead of crash-looping.
pub fn connect(database_url: &str, max_connections: u32) -> Pool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    bb8::Pool::builder()
        .max_size(max_connections)
        .connection_timeout(CONNECTION_TIMEOUT)
        .build_unchecked(manager)
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    server_version: String,
}

/// The server's version string; doubles as the readiness probe.
pub async fn server_version(pool: &Pool) -> Result<String, DbError> {
    let mut conn = pool.get().await.map_err(|err| match err {
        bb8::RunError::User(err) => DbError::Connect(err.to_string()),
        bb8::RunError::TimedOut => DbError::Timeout(CONNECTION_TIMEOUT),
    })?;
    let row: VersionRow =
        diesel::sql_query("SELECT current_setting('server_version') AS server_version")
            .get_result(&mut conn)
            .await?;
    Ok(row.server_version)
}
