use std::time::Duration;

use bytes::Bytes;
use reqwest::Response;
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

use crate::{AccessKey, TenancyError};

const SERVICE: &str = "S3";
/// Requests are signed just before they are sent; a short validity limits the
/// damage of a leaked URL.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(60);

/// One bucket, reached over S3 with one access key.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
}

impl ObjectStore {
    pub fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        key: &AccessKey,
    ) -> Result<Self, TenancyError> {
        let invalid = |message: String| TenancyError::Endpoint {
            endpoint: endpoint.to_owned(),
            message,
        };
        let endpoint_url = Url::parse(endpoint).map_err(|err| invalid(err.to_string()))?;
        // Path-style addressing works with every S3 implementation and needs no wildcard DNS.
        let bucket = Bucket::new(
            endpoint_url,
            UrlStyle::Path,
            bucket.to_owned(),
            region.to_owned(),
        )
        .map_err(|err| invalid(err.to_string()))?;
        Ok(ObjectStore {
            http: reqwest::Client::new(),
            bucket,
            credentials: Credentials::new(key.access_key_id.clone(), key.secret_access_key.clone()),
        })
    }

    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), TenancyError> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = self.http.put(url).body(body).send().await;
        checked(response, "PutObject").await.map(drop)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, TenancyError> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        let response = checked(self.http.get(url).send().await, "GetObject").await?;
        response
            .bytes()
            .await
            .map_err(|source| TenancyError::Transport {
                service: SERVICE,
                source,
            })
    }

    pub async fn delete(&self, key: &str) -> Result<(), TenancyError> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALIDITY);
        checked(self.http.delete(url).send().await, "DeleteObject")
            .await
            .map(drop)
    }

    /// Deletes every object, so the bucket itself can be deleted. Returns how many went.
    pub async fn empty(&self) -> Result<usize, TenancyError> {
        let keys = self.list("").await?;
        for key in &keys {
            self.delete(key).await?;
        }
        Ok(keys.len())
    }

    /// Every key under `prefix`, following continuation tokens to the end.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, TenancyError> {
        let mut keys = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(token) = &continuation {
                action.with_continuation_token(token.clone());
            }
            let response = checked(
                self.http.get(action.sign(SIGNATURE_VALIDITY)).send().await,
                "ListObjectsV2",
            )
            .await?;
            let text = response
                .text()
                .await
                .map_err(|source| TenancyError::Transport {
                    service: SERVICE,
                    source,
                })?;
            let page =
                ListObjectsV2::parse_response(&text).map_err(|err| TenancyError::Decode {
                    service: SERVICE,
                    operation: "ListObjectsV2".to_owned(),
                    message: err.to_string(),
                })?;
            keys.extend(page.contents.into_iter().map(|object| object.key));
            match page.next_continuation_token {
                Some(token) => continuation = Some(token),
                None => return Ok(keys),
            }
        }
    }
}

async fn checked(
    response: Result<Response, reqwest::Error>,
    operation: &str,
) -> Result<Response, TenancyError> {
    let response = response.map_err(|source| TenancyError::Transport {
        service: SERVICE,
        source,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(TenancyError::Rejected {
        service: SERVICE,
        operation: operation.to_owned(),
        status: status.as_u16(),
        body,
    })
}
