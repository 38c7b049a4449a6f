//! What the API's handlers share.

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::PooledConnection;

use crate::Problem;

/// The API's handles on the systems below it.
#[derive(Clone)]
pub struct ApiState {
    pub pool: herd_db::Pool,
    /// Where finished exports are kept.
    pub archives: std::sync::Arc<herd_jobs::archives::Archives>,
    /// Whether imports may fetch archives from loopback and private
    /// addresses: for development stacks, where everything is local.
    pub import_from_private_addresses: bool,
    /// Stripe, when billing is on.
    pub billing: Option<std::sync::Arc<herd_jobs::billing::BillingSettings>>,
}

impl ApiState {
    /// A pooled connection; an exhausted pool or an unreachable database is a 503.
    pub(crate) async fn connection(
        &self,
    ) -> Result<PooledConnection<'_, AsyncPgConnection>, Problem> {
        self.pool
            .get()
            .await
            .map_err(|err| Problem::database_unavailable(&err))
    }
}
