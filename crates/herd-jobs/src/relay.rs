//! Delivers the outbox: every committed change's event goes to the event log,
//! target `herd::events`, one structured line per event, which operators ship
//! with the rest of Herd's logs (JSON with `HERD_LOG_FORMAT=json`).
//! Delivery is at least once; the event id tells duplicates apart.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncConnection;
use tokio_util::sync::CancellationToken;

use crate::{JobError, Services};

const BATCH: i64 = 100;
const IDLE_POLL: Duration = Duration::from_secs(1);

pub async fn run(services: Arc<Services>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let wait = match deliver_batch(&services).await {
            Ok(0) => IDLE_POLL,
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "cannot deliver events yet");
                IDLE_POLL
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

async fn deliver_batch(services: &Services) -> Result<usize, JobError> {
    let mut conn = services.conn().await?;
    let delivered = conn
        .transaction::<_, herd_db::DbError, _>(async |conn| {
            let batch = herd_db::outbox::next_batch(conn, BATCH).await?;
            for event in &batch {
                tracing::info!(
                    target: "herd::events",
                    id = event.id,
                    topic = %event.topic,
                    at = %event.created_at,
                    payload = %event.payload,
                    "event"
                );
            }
            let ids: Vec<i64> = batch.iter().map(|event| event.id).collect();
            herd_db::outbox::mark_delivered(conn, &ids).await?;
            Ok(ids.len())
        })
        .await?;
    Ok(delivered)
}
