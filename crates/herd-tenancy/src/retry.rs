use std::future::Future;
use std::time::Duration;

use crate::TenancyError;

const ATTEMPTS: u32 = 8;

/// Runs an S3 request again when the store answers that it is busy. S3
/// clients are expected to retry those answers, and Garage gives them under
/// bulk load when its metadata database is locked.
pub async fn when_busy<T, F, Fut>(mut request: F) -> Result<T, TenancyError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TenancyError>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 1..ATTEMPTS {
        match request().await {
            Err(TenancyError::Rejected {
                status: 429 | 500 | 503,
                ..
            }) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            answer => return answer,
        }
    }
    request().await
}
