//! The instance's environment: secrets in a Secret, everything else in a
//! ConfigMap, the two together making Mastodon's `.env.production`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::Tenant;
use super::redis::{REDIS_PORT, REDIS_SERVICE};

pub(super) const SECRET_NAME: &str = "mastodon-env";
pub(super) const CONFIG_MAP_NAME: &str = "mastodon-config";

/// `data`, not `stringData`: Server-Side Apply tracks `data` keys, so a key
/// dropped from the secrets is dropped from the Secret too.
pub(super) fn secret(tenant: &Tenant) -> Secret {
    Secret {
        metadata: tenant.metadata(SECRET_NAME, None),
        type_: Some("Opaque".to_owned()),
        data: Some(
            tenant
                .secrets
                .env
                .iter()
                .map(|(key, value)| (key.clone(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

pub(super) fn config_map(tenant: &Tenant) -> ConfigMap {
    let spec = tenant.spec;
    let store = &spec.object_store;
    let (protocol, hostname) = split_endpoint(&store.endpoint);
    let settings = [
        ("LOCAL_DOMAIN", spec.local_domain.clone()),
        ("WEB_DOMAIN", spec.web_domain.clone()),
        ("RAILS_ENV", "production".to_owned()),
        ("NODE_ENV", "production".to_owned()),
        ("RAILS_LOG_TO_STDOUT", "enabled".to_owned()),
        // No web server sits beside Puma to serve the compiled assets.
        ("RAILS_SERVE_STATIC_FILES", "true".to_owned()),
        // Puma and the streaming server listen on loopback unless told otherwise.
        ("BIND", "0.0.0.0".to_owned()),
        ("DB_HOST", spec.database.host.clone()),
        ("DB_PORT", spec.database.port.to_string()),
        ("DB_NAME", spec.database.name.clone()),
        ("DB_USER", spec.database.user.clone()),
        // The tenant database is reached directly, not through a
        // transaction-mode pooler, so prepared statements work.
        ("PREPARED_STATEMENTS", "true".to_owned()),
        ("REDIS_HOST", REDIS_SERVICE.to_owned()),
        ("REDIS_PORT", REDIS_PORT.to_string()),
        ("S3_ENABLED", "true".to_owned()),
        ("S3_BUCKET", store.bucket.clone()),
        ("S3_ENDPOINT", store.endpoint.clone()),
        ("S3_REGION", store.region.clone()),
        ("S3_PROTOCOL", protocol.to_owned()),
        ("S3_HOSTNAME", hostname.to_owned()),
        (
            "STREAMING_API_BASE_URL",
            format!("wss://{}", spec.web_domain),
        ),
    ];
    ConfigMap {
        metadata: tenant.metadata(CONFIG_MAP_NAME, None),
        data: Some(
            settings
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..ConfigMap::default()
    }
}

/// `https://s3.example.net:3900/x` into `https` and `s3.example.net:3900`:
/// Mastodon builds media URLs from `S3_PROTOCOL` and `S3_HOSTNAME`.
pub(super) fn split_endpoint(endpoint: &str) -> (&str, &str) {
    let (protocol, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    let hostname = rest.split('/').next().unwrap_or(rest);
    (protocol, hostname)
}
