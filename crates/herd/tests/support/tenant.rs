//! A tenant's data as the tests reach it, and the fixture that fills it: the
//! checks that an instance's data came through an export, an import or a
//! move unchanged (tables, rows, checksums, columns, indexes, constraints,
//! sequences and functions through the database fingerprint; media by
//! SHA-256; the secrets an instance keeps).

use std::collections::BTreeMap;
use std::time::Duration;

use herd_core::secrets::{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, DB_PASS};
use herd_core::tenant::TenantNames;
use herd_fixture::{BucketFingerprint, DatabaseFingerprint, FixtureSpec};
use herd_tenancy::{AccessKey, DatabaseServer, ObjectStore, RolePassword, TenantCredentials};

use super::{Api, Installation};

pub const PROVISIONING_DEADLINE: Duration = Duration::from_secs(60);

/// The tenant's database, on the server the instance was placed on, and its
/// bucket, on the object store it was placed on, reached with the tenant's
/// own credentials as Herd stored them.
pub struct Tenant {
    pub credentials: TenantCredentials,
    pub media: ObjectStore,
}

pub async fn tenant(installation: &Installation, instance_id: &str) -> Tenant {
    let pool = herd_db::connect(&installation.database_url, 2);
    let mut conn = pool.get().await.expect("connection");
    let sealer = herd_db::Sealer::new(&installation.secret_key, &[]).expect("sealer");
    let secrets: BTreeMap<String, String> =
        herd_db::instances::load_secrets(&mut conn, &sealer, instance_id.parse().unwrap())
            .await
            .expect("secrets")
            .expect("stored secrets");
    let names = TenantNames::for_instance(instance_id);
    let placed = installation
        .database_server_of(instance_id)
        .await
        .expect("the instance is placed");
    let server = DatabaseServer::new(&placed.admin_url).unwrap();
    let credentials = server.tenant_credentials(
        &names.database,
        &names.role,
        &RolePassword::new(secrets[DB_PASS].clone()),
    );
    let store = herd_db::instances::load_instance(&mut conn, instance_id.parse().unwrap())
        .await
        .expect("instance")
        .and_then(|instance| instance.object_store_id)
        .expect("the instance has an object store");
    let store = herd_db::fleet::object_store_access(&mut conn, &sealer, store)
        .await
        .expect("object store");
    let media = ObjectStore::new(
        &store.s3_endpoint,
        &store.s3_region,
        &names.bucket,
        &AccessKey {
            access_key_id: secrets[AWS_ACCESS_KEY_ID].clone(),
            secret_access_key: secrets[AWS_SECRET_ACCESS_KEY].clone(),
        },
    )
    .unwrap();
    Tenant { credentials, media }
}

pub async fn running_instance(api: &Api, domain: &str) -> String {
    let (instance, operation) = api.order(domain).await;
    api.assert_succeeds(&operation, PROVISIONING_DEADLINE).await;
    instance
}

/// An instance filled with a fixture, and the fingerprints of what it holds.
pub struct Filled {
    pub instance: String,
    pub database: DatabaseFingerprint,
    pub media: BucketFingerprint,
    pub secrets: BTreeMap<String, String>,
}

pub async fn filled_instance(
    installation: &Installation,
    api: &Api,
    domain: &str,
    seed: u64,
) -> Filled {
    let instance = running_instance(api, domain).await;
    let tenant = tenant(installation, &instance).await;
    herd_fixture::generate(
        &tenant.credentials.database_url(),
        &tenant.media,
        &FixtureSpec {
            seed,
            scale: 1,
            media_percent: 5,
            local_domain: domain.to_owned(),
        },
    )
    .await
    .expect("fixture");
    Filled {
        database: herd_fixture::database_fingerprint(&tenant.credentials.database_url())
            .await
            .unwrap(),
        media: herd_fixture::bucket_fingerprint(&tenant.media, None)
            .await
            .unwrap(),
        secrets: secrets_of(installation, &instance).await,
        instance,
    }
}

pub async fn secrets_of(
    installation: &Installation,
    instance_id: &str,
) -> BTreeMap<String, String> {
    let pool = herd_db::connect(&installation.database_url, 2);
    let mut conn = pool.get().await.expect("connection");
    let sealer = herd_db::Sealer::new(&installation.secret_key, &[]).expect("sealer");
    herd_db::instances::load_secrets(&mut conn, &sealer, instance_id.parse().unwrap())
        .await
        .expect("secrets")
        .expect("stored secrets")
}

/// The secrets a restored server must keep: sessions, two-factor secrets,
/// push subscriptions and encrypted columns depend on them.
pub fn carried_secrets(secrets: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    secrets
        .iter()
        .filter(|(key, _)| {
            key.as_str() == "SECRET_KEY_BASE"
                || key.starts_with("VAPID_")
                || key.starts_with("ACTIVE_RECORD_ENCRYPTION_")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
