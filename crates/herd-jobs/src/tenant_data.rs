//! An instance's database, role, bucket and key on the servers it was placed on.
//! Every function converges: run twice, or after a crash half-way, it ends
//! in the same state.

use std::collections::BTreeMap;

use herd_core::secrets::{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, DB_PASS};
use herd_core::tenant::TenantNames;
use herd_db::instances::Instance;
use herd_tenancy::{
    AccessKey, BucketPermissions, DatabaseServer, GarageAdmin, ObjectStore, RolePassword,
    TenantCredentials, TenantDatabase,
};
use uuid::Uuid;

use crate::{JobError, Services};

const GIB: u64 = 1024 * 1024 * 1024;

fn secret<'s>(secrets: &'s BTreeMap<String, String>, key: &str) -> Result<&'s str, JobError> {
    secrets
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| JobError::Payload(format!("the stored secrets lack {key}")))
}

fn access_key(secrets: &BTreeMap<String, String>) -> Result<AccessKey, JobError> {
    Ok(AccessKey {
        access_key_id: secret(secrets, AWS_ACCESS_KEY_ID)?.to_owned(),
        secret_access_key: secret(secrets, AWS_SECRET_ACCESS_KEY)?.to_owned(),
    })
}

fn placed(instance: &Instance) -> Result<(Uuid, Uuid), JobError> {
    match (instance.database_server_id, instance.object_store_id) {
        (Some(database), Some(store)) => Ok((database, store)),
        _ => Err(JobError::NotYet(format!(
            "instance {} is not placed yet",
            instance.id
        ))),
    }
}

/// The tenant's database and bucket as the tenant reaches them: with its
/// own role and key, never an administrator's.
pub struct TenantConnection {
    pub credentials: TenantCredentials,
    pub media: ObjectStore,
    pub secrets: BTreeMap<String, String>,
}

pub async fn connect(
    services: &Services,
    instance: &Instance,
) -> Result<TenantConnection, JobError> {
    let (database_server, store) = placed(instance)?;
    let secrets = services.stored_secrets(instance.id).await?;
    let (database, store) = {
        let mut conn = services.conn().await?;
        (
            herd_db::fleet::database_server_access(&mut conn, &services.sealer, database_server)
                .await?,
            herd_db::fleet::object_store_access(&mut conn, &services.sealer, store).await?,
        )
    };
    let names = TenantNames::for_instance(&instance.id.to_string());
    let credentials = DatabaseServer::new(&database.admin_url)?.tenant_credentials(
        &names.database,
        &names.role,
        &RolePassword::new(secret(&secrets, DB_PASS)?),
    );
    let media = ObjectStore::new(
        &store.s3_endpoint,
        &store.s3_region,
        &names.bucket,
        &access_key(&secrets)?,
    )?;
    Ok(TenantConnection {
        credentials,
        media,
        secrets,
    })
}

pub async fn ensure_database(
    services: &Services,
    instance: &Instance,
    secrets: &BTreeMap<String, String>,
    connection_limit: u32,
) -> Result<(), JobError> {
    let (database_server, _) = placed(instance)?;
    let access = {
        let mut conn = services.conn().await?;
        herd_db::fleet::database_server_access(&mut conn, &services.sealer, database_server).await?
    };
    let names = TenantNames::for_instance(&instance.id.to_string());
    let tenant = TenantDatabase {
        name: names.database,
        role: names.role,
        connection_limit: u16::try_from(connection_limit).unwrap_or(u16::MAX),
    };
    DatabaseServer::new(&access.admin_url)?
        .ensure_tenant(&tenant, &RolePassword::new(secret(secrets, DB_PASS)?))
        .await?;
    Ok(())
}

pub async fn ensure_bucket(
    services: &Services,
    instance: &Instance,
    secrets: &BTreeMap<String, String>,
    media_storage_gib: u32,
) -> Result<(), JobError> {
    let (_, store) = placed(instance)?;
    let access = {
        let mut conn = services.conn().await?;
        herd_db::fleet::object_store_access(&mut conn, &services.sealer, store).await?
    };
    let names = TenantNames::for_instance(&instance.id.to_string());
    let admin = GarageAdmin::new(&access.admin_endpoint, access.admin_token)?;
    let bucket = admin.ensure_bucket(&names.bucket).await?;
    let key = access_key(secrets)?;
    admin.ensure_key(&key, &names.bucket).await?;
    admin
        .allow_key_on_bucket(&bucket, &key.access_key_id, BucketPermissions::READ_WRITE)
        .await?;
    admin
        .set_bucket_quota(&bucket, u64::from(media_storage_gib) * GIB)
        .await?;
    Ok(())
}

/// Drops the tenant's database and role and makes them again, empty.
pub async fn recreate_database(
    services: &Services,
    instance: &Instance,
    connection_limit: u32,
) -> Result<(), JobError> {
    let (database_server, _) = placed(instance)?;
    let secrets = services.stored_secrets(instance.id).await?;
    let access = {
        let mut conn = services.conn().await?;
        herd_db::fleet::database_server_access(&mut conn, &services.sealer, database_server).await?
    };
    let names = TenantNames::for_instance(&instance.id.to_string());
    DatabaseServer::new(&access.admin_url)?
        .drop_tenant(&names.database, &names.role)
        .await?;
    ensure_database(services, instance, &secrets, connection_limit).await
}

/// Removes the database, role, bucket (with every object) and key. What is
/// already gone is skipped, so cleanup can run from the finalizer and again
/// from the deletion job.
pub async fn remove_all(services: &Services, instance: &Instance) -> Result<(), JobError> {
    let names = TenantNames::for_instance(&instance.id.to_string());
    let secrets = {
        let mut conn = services.conn().await?;
        herd_db::instances::load_secrets(&mut conn, &services.sealer, instance.id).await?
    };
    if let Some(database_server) = instance.database_server_id {
        let access = {
            let mut conn = services.conn().await?;
            herd_db::fleet::database_server_access(&mut conn, &services.sealer, database_server)
                .await?
        };
        DatabaseServer::new(&access.admin_url)?
            .drop_tenant(&names.database, &names.role)
            .await?;
    }
    if let Some(store) = instance.object_store_id {
        let access = {
            let mut conn = services.conn().await?;
            herd_db::fleet::object_store_access(&mut conn, &services.sealer, store).await?
        };
        let admin = GarageAdmin::new(&access.admin_endpoint, access.admin_token.clone())?;
        if let Some(bucket) = admin.find_bucket(&names.bucket).await? {
            if let Some(secrets) = &secrets {
                let key = access_key(secrets)?;
                // Garage deletes only empty buckets, and the tenant's own key lists and
                // deletes its objects; a crash during provisioning may have left the key
                // not yet allowed on the bucket. The key goes last, so it still exists here.
                admin.ensure_key(&key, &names.bucket).await?;
                admin
                    .allow_key_on_bucket(&bucket, &key.access_key_id, BucketPermissions::READ_WRITE)
                    .await?;
                let objects =
                    ObjectStore::new(&access.s3_endpoint, &access.s3_region, &names.bucket, &key)?;
                objects.empty().await?;
            }
            admin.delete_bucket(&bucket).await?;
        }
        if let Some(secrets) = &secrets {
            admin
                .delete_key(secret(secrets, AWS_ACCESS_KEY_ID)?)
                .await?;
        }
    }
    Ok(())
}
