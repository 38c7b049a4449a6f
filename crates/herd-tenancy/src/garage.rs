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

    /// The bucket under `alias`, created if missing. Safe to repeat and to race.
    /// Creating first and looking up only on a conflict costs one call in the
    /// usual case: Garage's admin API answers one call at a time.
    pub async fn ensure_bucket(&self, alias: &str) -> Result<String, TenancyError> {
        match self.create_bucket(alias).await {
            Ok(id) => Ok(id),
            Err(TenancyError::Rejected { status: 409, .. }) => self
                .find_bucket(alias)
                .await?
                .ok_or_else(|| vanished("bucket", alias)),
            Err(err) => Err(err),
        }
    }

    pub async fn find_bucket(&self, alias: &str) -> Result<Option<String>, TenancyError> {
        let found: Option<BucketInfo> = self
            .call_optional(Method::GET, "GetBucketInfo", &[("globalAlias", alias)])
            .await?;
        Ok(found.map(|bucket| bucket.id))
    }

    /// Caps what the bucket may hold; the plan's media storage.
    pub async fn set_bucket_quota(
        &self,
        bucket_id: &str,
        max_bytes: u64,
    ) -> Result<(), TenancyError> {
        let body = json!({ "quotas": { "maxSize": max_bytes, "maxObjects": null } });
        self.call::<serde_json::Value>(
            Method::POST,
            "UpdateBucket",
            &[("id", bucket_id)],
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// Makes `key` exist with exactly this id and secret. Herd generates the
    /// credentials and stores them before calling, so a repeated or resumed
    /// provisioning converges on the same key.
    /// Imports first and looks the key up only when the import is refused.
    pub async fn ensure_key(&self, key: &AccessKey, name: &str) -> Result<(), TenancyError> {
        let body = json!({
            "accessKeyId": key.access_key_id,
            "secretAccessKey": key.secret_access_key,
            "name": name,
        });
        match self
            .call::<serde_json::Value>(Method::POST, "ImportKey", &[], Some(body))
            .await
        {
            Ok(_) => Ok(()),
            // Imported before, by an earlier run or a concurrent one: fine if it exists.
            Err(err) if self.key_exists(&key.access_key_id).await? => {
                tracing::debug!(error = %err, "key exists already");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    async fn key_exists(&self, access_key_id: &str) -> Result<bool, TenancyError> {
        let found: Option<serde_json::Value> = self
            .call_optional(Method::GET, "GetKeyInfo", &[("id", access_key_id)])
            .await?;
        Ok(found.is_some())
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
        match self.send(method, operation, query, None).await {
            Ok(_) | Err(TenancyError::Rejected { status: 404, .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Like `call`, with a 404 meaning "no such object".
    async fn call_optional<T: DeserializeOwned>(
        &self,
        method: Method,
        operation: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<T>, TenancyError> {
        match self.call(method, operation, query, None).await {
            Ok(found) => Ok(Some(found)),
            Err(TenancyError::Rejected { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
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

fn vanished(kind: &str, name: &str) -> TenancyError {
    TenancyError::Conflict {
        message: format!("the {kind} {name} was created and deleted concurrently"),
    }
}
