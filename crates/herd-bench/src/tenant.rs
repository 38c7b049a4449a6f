//! A tenant's database and bucket, reached with the credentials Herd sealed
//! for it, as the tenant's own processes reach them.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use herd_core::secrets::{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, DB_PASS};
use herd_core::tenant::TenantNames;
use herd_tenancy::{AccessKey, DatabaseServer, ObjectStore, RolePassword, TenantCredentials};
use serde_json::{Value, json};

use crate::installation::stack;

/// Herd leaves the remote media cache out of exports: Mastodon refetches it.
pub const REMOTE_CACHE_PREFIX: &str = "cache/";

pub struct Tenant {
    pub credentials: TenantCredentials,
    pub media: ObjectStore,
    pub bucket: String,
    pub key: AccessKey,
}

impl Tenant {
    /// Opens the instance's secrets with the installation's sealing key.
    pub async fn of(instance_id: &str) -> anyhow::Result<Tenant> {
        let secrets = secrets(instance_id).await?;
        let secret = |name: &str| {
            secrets
                .get(name)
                .cloned()
                .with_context(|| format!("the instance's secrets hold no {name}"))
        };
        let names = TenantNames::for_instance(instance_id);
        let credentials = DatabaseServer::new(&stack("HERD_PG_ADMIN_URL")?)?.tenant_credentials(
            &names.database,
            &names.role,
            &RolePassword::new(secret(DB_PASS)?),
        );
        let key = AccessKey {
            access_key_id: secret(AWS_ACCESS_KEY_ID)?,
            secret_access_key: secret(AWS_SECRET_ACCESS_KEY)?,
        };
        let media = ObjectStore::new(
            &stack("HERD_S3_ENDPOINT")?,
            &stack("HERD_S3_REGION")?,
            &names.bucket,
            &key,
        )?;
        Ok(Tenant {
            credentials,
            media,
            bucket: names.bucket,
            key,
        })
    }

    /// What the tenant holds, and how much of it an export carries.
    pub async fn size(&self) -> anyhow::Result<TenantSize> {
        let (client, connection) =
            tokio_postgres::connect(&self.credentials.database_url(), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(connection);
        let database_bytes: i64 = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await?
            .get(0);
        let mut size = TenantSize {
            database_bytes: u64::try_from(database_bytes)?,
            ..TenantSize::default()
        };
        for object in self.media.list_objects("").await? {
            if object.key.starts_with(REMOTE_CACHE_PREFIX) {
                size.remote_cache_objects += 1;
                size.remote_cache_bytes += object.size;
            } else {
                size.media_objects += 1;
                size.media_bytes += object.size;
            }
        }
        Ok(size)
    }
}

async fn secrets(instance_id: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let pool = herd_db::connect(&stack("DATABASE_URL")?, 1);
    let mut conn = pool.get().await.map_err(|err| anyhow!("{err}"))?;
    let sealer = herd_db::Sealer::new(&stack("HERD_SECRET_KEY")?, &[])?;
    herd_db::instances::load_secrets(&mut conn, &sealer, instance_id.parse()?)
        .await?
        .with_context(|| format!("instance {instance_id} has no stored secrets"))
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TenantSize {
    /// `pg_database_size`: tables, indexes and the catalog.
    pub database_bytes: u64,
    /// Media outside the remote cache: what an export carries.
    pub media_objects: u64,
    pub media_bytes: u64,
    pub remote_cache_objects: u64,
    pub remote_cache_bytes: u64,
}

impl TenantSize {
    /// The database and the media an export carries; both throughputs are
    /// of these bytes.
    pub fn carried_bytes(&self) -> u64 {
        self.database_bytes + self.media_bytes
    }

    pub fn json(&self) -> Value {
        json!({
            "database_bytes": self.database_bytes,
            "media_objects": self.media_objects,
            "media_bytes": self.media_bytes,
            "remote_cache_objects": self.remote_cache_objects,
            "remote_cache_bytes": self.remote_cache_bytes,
            "carried_bytes": self.carried_bytes(),
            "total_bytes": self.carried_bytes() + self.remote_cache_bytes,
        })
    }
}
