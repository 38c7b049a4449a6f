//! Finished exports are kept for a while and then deleted: an archive holds
//! every secret of its instance, so it should not outlive its use.
//! Several processes may sweep at once; deleting twice is harmless.

use std::sync::Arc;
use std::time::Duration;

use herd_db::archives::ExportState;
use tokio_util::sync::CancellationToken;

use crate::{JobError, Services};

const SWEEP: Duration = Duration::from_secs(600);
const BATCH: i64 = 100;

pub async fn run(services: Arc<Services>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match sweep(&services).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired exports deleted"),
            Err(err) => tracing::warn!(error = %err, "cannot delete expired exports yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(SWEEP) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

async fn sweep(services: &Services) -> Result<usize, JobError> {
    let expired = {
        let mut conn = services.conn().await?;
        herd_db::archives::expired_exports(&mut conn, BATCH).await?
    };
    for export in &expired {
        if let Some(stored) = &export.archive {
            services
                .archives
                .bucket(stored.object_store_id)
                .await?
                .delete(&stored.object_key)
                .await?;
        }
        let mut conn = services.conn().await?;
        herd_db::archives::set_export_state(&mut conn, export.id, ExportState::Expired).await?;
    }
    Ok(expired.len())
}
