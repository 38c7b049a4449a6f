//! Steps with checkpoints: a resumed job skips every step it completed, and
//! reuses what that step produced.

use std::collections::HashMap;
use std::future::Future;

use diesel_async::AsyncConnection;
use herd_db::jobs::JobId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::faults::Point;
use crate::{JobError, Services};

pub struct StepRunner<'a> {
    services: &'a Services,
    kind: &'static str,
    job: JobId,
    operation: Uuid,
    completed: HashMap<String, serde_json::Value>,
}

impl<'a> StepRunner<'a> {
    pub async fn resume(
        services: &'a Services,
        kind: &'static str,
        job: JobId,
        operation: Uuid,
    ) -> Result<Self, JobError> {
        let mut conn = services.conn().await?;
        let completed = herd_db::jobs::completed_steps(&mut conn, job)
            .await?
            .into_iter()
            .map(|step| (step.step, step.output))
            .collect();
        Ok(StepRunner {
            services,
            kind,
            job,
            operation,
            completed,
        })
    }

    /// Runs `work` unless the step completed before, then records its output
    /// and the operation's progress in one transaction.
    pub async fn step<T, F, Fut>(&mut self, name: &'static str, work: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, JobError>>,
    {
        if let Some(output) = self.completed.get(name) {
            tracing::debug!(step = name, "skipping a completed step");
            return serde_json::from_value(output.clone())
                .map_err(|err| JobError::Payload(err.to_string()));
        }
        let output = work().await?;
        self.services
            .faults
            .crash_if_armed(self.kind, name, Point::BeforeCheckpoint);
        let value =
            serde_json::to_value(&output).map_err(|err| JobError::Payload(err.to_string()))?;
        let (job, operation) = (self.job, self.operation);
        let recorded = value.clone();
        let mut conn = self.services.conn().await?;
        conn.transaction::<_, herd_db::DbError, _>(async move |conn| {
            herd_db::jobs::record_step(conn, job, name, recorded).await?;
            herd_db::operations::complete_step(conn, operation, name).await?;
            Ok(())
        })
        .await?;
        self.services
            .faults
            .crash_if_armed(self.kind, name, Point::AfterCheckpoint);
        self.completed.insert(name.to_owned(), value);
        tracing::info!(step = name, "step completed");
        Ok(output)
    }
}
