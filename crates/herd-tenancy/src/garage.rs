use std::fmt;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use url::Url;

use crate::TenancyError;

const SERVICE: &str = "Garage admin API";

/// A client for Garage's administration API (v2).
#[derive(Clone)]
pub struct GarageAdmin {
    http: reqwest::Client,
    base: Url,
    token: String,
}

// The admin token grants full control of the store: never print it.
impl fmt::Debug for GarageAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GarageAdmin")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// An S3 access key. The secret is shown once, at creation.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct BucketPermissions {
    pub read: bool,
    pub write: bool,
    pub owner: bool,
}

impl BucketPermissions {
    /// What a tenant's own key needs on its own bucket.
    pub const READ_WRITE: BucketPermissions = BucketPermissions {
        read: true,
        write: true,
        owner: false,
    };
}

#[derive(Deserialize)]
struct BucketInfo {
    id: String,
}

impl GarageAdmin {
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Self, TenancyError> {
        let base = Url::parse(base_url).map_err(|err| TenancyError::Endpoint {
            endpoint: base_url.to_owned(),
            message: err.to_string(),
        })?;
        Ok(GarageAdmin {
            http: reqwest::Client::new(),
            base,
            token: token.into(),
        })
    }

    /// Creates a bucket under a global alias and returns its id.
    pub async fn create_bucket(&self, alias: &str) -> Result<String, TenancyError> {
        let created: BucketInfo = self
            .call(
                Method::POST,
                "CreateBucket",
                &[],
                Some(json!({ "globalAlias": alias })),
            )
            .await?;
        Ok(created.id)
    }

    pub async fn create_key(&self, name: &str) -> Result<AccessKey, TenancyError> {
        self.call(
            Method::POST,
            "CreateKey",
            &[],
            Some(json!({ "name": name })),
        )
        .await
    }

    pub async fn allow_key_on_bucket(
        &self,
        bucket_id: &str,
        access_key_id: &str,
        permissions: BucketPermissions,
    ) -> Result<(), TenancyError> {
        let body = json!({ "bucketId": bucket_id, "accessKeyId": access_key_id, "permissions": permissions });
        self.call::<serde_json::Value>(Method::POST, "AllowBucketKey", &[], Some(body))
            .await?;
        Ok(())
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket_id: &str) -> Result<(), TenancyError> {
        self.call_without_body(Method::POST, "DeleteBucket", &[("id", bucket_id)])
            .await
    }

    pub async fn delete_key(&self, access_key_id: &str) -> Result<(), TenancyError> {
        self.call_without_body(Method::POST, "DeleteKey", &[("id", access_key_id)])
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        operation: &str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Result<T, TenancyError> {
        let text = self.send(method, operation, query, body).await?;
        serde_json::from_str(&text).map_err(|err| TenancyError::Decode {
            service: SERVICE,
            operation: operation.to_owned(),
            message: err.to_string(),
        })
    }

    async fn call_without_body(
        &self,
        method: Method,
        operation: &str,
        query: &[(&str, &str)],
    ) -> Result<(), TenancyError> {
        self.send(method, operation, query, None).await.map(drop)
    }

    async fn send(
        &self,
        method: Method,
        operation: &str,
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Result<String, TenancyError> {
        let mut url =
            self.base
                .join(&format!("v2/{operation}"))
                .map_err(|err| TenancyError::Endpoint {
                    endpoint: self.base.to_string(),
                    message: err.to_string(),
                })?;
        url.query_pairs_mut().extend_pairs(query);
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let transport = |source| TenancyError::Transport {
            service: SERVICE,
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(TenancyError::Rejected {
                service: SERVICE,
                operation: operation.to_owned(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(text)
    }
}
