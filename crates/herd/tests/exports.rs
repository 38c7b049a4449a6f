//! Exports through `herd serve` on the real local stack: a tenant filled with
//! a Mastodon-like fixture comes out as an archive that verifies, whose dump
//! restores to the same database and whose media are the bucket's, byte for
//! byte; only the owner and operators see it; a crash mid-export loses nothing.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use herd_core::archive::SYSTEM_DIR;
use herd_core::secrets::{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, DB_PASS};
use herd_core::tenant::TenantNames;
use herd_fixture::{BucketFingerprint, DatabaseFingerprint, FixtureSpec};
use herd_tenancy::{
    AccessKey, DatabaseServer, ObjectStore, PgTools, RolePassword, TenantCredentials,
    TenantDatabase,
};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Api, Installation, stack_setting, unique};

const PROVISIONING_DEADLINE: Duration = Duration::from_secs(60);
const EXPORT_DEADLINE: Duration = Duration::from_secs(120);

/// The tenant's database and bucket, reached with the tenant's own
/// credentials as Herd stored them.
struct Tenant {
    credentials: TenantCredentials,
    media: ObjectStore,
}

async fn tenant(installation: &Installation, instance_id: &str) -> Tenant {
    let pool = herd_db::connect(&installation.database_url, 2);
    let mut conn = pool.get().await.expect("connection");
    let sealer = herd_db::Sealer::new(&installation.secret_key, &[]).expect("sealer");
    let secrets: BTreeMap<String, String> =
        herd_db::instances::load_secrets(&mut conn, &sealer, instance_id.parse().unwrap())
            .await
            .expect("secrets")
            .expect("stored secrets");
    let names = TenantNames::for_instance(instance_id);
    let server = DatabaseServer::new(&stack_setting("HERD_PG_ADMIN_URL")).unwrap();
    let credentials = server.tenant_credentials(
        &names.database,
        &names.role,
        &RolePassword::new(secrets[DB_PASS].clone()),
    );
    let media = ObjectStore::new(
        &stack_setting("HERD_S3_ENDPOINT"),
        &stack_setting("HERD_S3_REGION"),
        &names.bucket,
        &AccessKey {
            access_key_id: secrets[AWS_ACCESS_KEY_ID].clone(),
            secret_access_key: secrets[AWS_SECRET_ACCESS_KEY].clone(),
        },
    )
    .unwrap();
    Tenant { credentials, media }
}

async fn running_instance(api: &Api, domain: &str) -> String {
    let (instance, operation) = api.order(domain).await;
    api.assert_succeeds(&operation, PROVISIONING_DEADLINE).await;
    instance
}

/// Starts an export and waits for it to complete; returns the export.
async fn export(api: &Api, instance: &str, request: Value) -> Value {
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/exports"),
            Some(request),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let operation = body["operation"]["id"].as_str().unwrap().to_owned();
    api.assert_succeeds(&operation, EXPORT_DEADLINE).await;
    let id = body["export"]["id"].as_str().unwrap();
    let (status, export) = api
        .call(Method::GET, &format!("/api/v1/exports/{id}"), None)
        .await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["state"], "complete", "{export}");
    export
}

async fn download(api: &Api, export: &Value, to: &Path) {
    let id = export["id"].as_str().unwrap();
    let response = api
        .http
        .get(format!("{}/api/v1/exports/{id}/download", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, export["size"].as_u64().unwrap());
    assert_eq!(sha256_hex(&bytes), export["sha256"].as_str().unwrap());
    std::fs::write(to, &bytes).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Restores the archive's dump into a database of its own, as a tenant
/// role would, and fingerprints it.
async fn restored_fingerprint(archive: &Path) -> DatabaseFingerprint {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("database.dump");
    let mut out = std::fs::File::create(&dump).unwrap();
    herd_portability::read_archive(
        std::fs::File::open(archive).unwrap(),
        herd_portability::ReadOptions::default(),
        |member| {
            if member.path() == "database.dump" {
                std::io::copy(member, &mut out)?;
            }
            Ok(())
        },
    )
    .expect("the archive reads");
    let name = unique("restored-").replace('-', "_");
    let server = DatabaseServer::new(&stack_setting("HERD_PG_ADMIN_URL")).unwrap();
    let credentials = server
        .ensure_tenant(
            &TenantDatabase {
                name: name.clone(),
                role: name.clone(),
                connection_limit: 5,
            },
            &herd_tenancy::generate_password().unwrap(),
        )
        .await
        .unwrap();
    let report = PgTools::default()
        .restore(&credentials, &dump)
        .await
        .unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    let fingerprint = herd_fixture::database_fingerprint(&credentials.database_url())
        .await
        .unwrap();
    server.drop_tenant(&name, &name).await.unwrap();
    fingerprint
}

/// The media the archive holds, keyed as in the bucket.
fn archived_media(verified: &herd_portability::VerifiedArchive) -> BucketFingerprint {
    let prefix = format!("{SYSTEM_DIR}/");
    let objects: BTreeMap<_, _> = verified
        .manifest
        .files
        .iter()
        .filter_map(|file| {
            file.path.strip_prefix(&prefix).map(|key| {
                (
                    key.to_owned(),
                    herd_fixture::ObjectFingerprint {
                        size: file.size,
                        sha256: file.sha256.clone(),
                    },
                )
            })
        })
        .collect();
    BucketFingerprint {
        total_bytes: objects.values().map(|o| o.size).sum(),
        objects,
    }
}

#[tokio::test]
async fn an_export_holds_the_whole_instance_and_only_its_owner_sees_it() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let owner = installation.api(&format!("{}@example.com", unique("owner-")), "customer");
    owner.wait_until_serving().await;
    let domain = format!("{}.example.social", unique("export-"));
    let instance = running_instance(&owner, &domain).await;

    let tenant = tenant(&installation, &instance).await;
    herd_fixture::generate(
        &tenant.credentials.database_url(),
        &tenant.media,
        &FixtureSpec {
            seed: 7,
            scale: 1,
            media_percent: 10,
            local_domain: domain.clone(),
        },
    )
    .await
    .expect("fixture");
    let database = herd_fixture::database_fingerprint(&tenant.credentials.database_url())
        .await
        .unwrap();
    let media = herd_fixture::bucket_fingerprint(&tenant.media, Some("cache/"))
        .await
        .unwrap();

    let plain = export(&owner, &instance, json!({})).await;
    assert_eq!(plain["compressed"], true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(plain["file_name"].as_str().unwrap());
    download(&owner, &plain, &path).await;
    let verified = herd_portability::verify(&path, None).expect("the export verifies");
    assert_eq!(verified.manifest.description.local_domain.as_str(), domain);
    assert!(verified.manifest.description.schema_migration_version > 0);
    assert_eq!(archived_media(&verified), media, "media differ");
    assert!(
        verified
            .manifest
            .files
            .iter()
            .all(|f| !f.path.starts_with("system/cache/")),
        "the remote media cache is left out"
    );
    assert!(
        verified
            .manifest
            .description
            .left_out
            .iter()
            .any(|l| l.path == "system/cache/")
    );
    assert_eq!(verified.env.get("LOCAL_DOMAIN"), Some(domain.as_str()));
    assert!(verified.env.get("SECRET_KEY_BASE").is_some());
    assert_eq!(restored_fingerprint(&path).await, database, "database differs");

    // The signed link works without a token.
    let link = plain["download_url"].as_str().expect("a download link");
    let linked = reqwest::get(link).await.unwrap();
    assert_eq!(linked.status(), 200);
    assert_eq!(
        sha256_hex(&linked.bytes().await.unwrap()),
        plain["sha256"].as_str().unwrap()
    );

    // Encrypted to the customer's key: only that key reads it.
    let identity = herd_portability::Identity::generate();
    let sealed = export(
        &owner,
        &instance,
        json!({"recipient": identity.to_public().to_string(), "compress": false}),
    )
    .await;
    assert!(sealed["file_name"].as_str().unwrap().ends_with(".tar.age"));
    let sealed_path = dir.path().join("sealed.tar.age");
    download(&owner, &sealed, &sealed_path).await;
    assert!(herd_portability::verify(&sealed_path, None).is_err());
    let opened = herd_portability::verify(&sealed_path, Some(&identity)).expect("verifies");
    assert_eq!(archived_media(&opened), media);

    // Another customer sees none of it; an operator sees all of it.
    let stranger = installation.api(&format!("{}@example.com", unique("other-")), "customer");
    let export_id = plain["id"].as_str().unwrap();
    for (method, path, body) in [
        (
            Method::POST,
            format!("/api/v1/instances/{instance}/exports"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/instances/{instance}/exports"),
            None,
        ),
        (Method::GET, format!("/api/v1/exports/{export_id}"), None),
        (
            Method::GET,
            format!("/api/v1/exports/{export_id}/download"),
            None,
        ),
    ] {
        let (status, answer) = stranger.call(method, &path, body).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    let (status, listed) = operator
        .call(
            Method::GET,
            &format!("/api/v1/instances/{instance}/exports"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["exports"].as_array().unwrap().len(), 2);

    // Bad requests change nothing.
    let (status, problem) = owner
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/exports"),
            Some(json!({"recipient": "not-a-key"})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_recipient");
    installation.drop_database().await;
}

#[tokio::test]
async fn an_export_killed_mid_way_completes_after_a_restart_and_verifies() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let owner_email = format!("{}@example.com", unique("owner-"));
    let instance = {
        let _server = installation.serve(None);
        let owner = installation.api(&owner_email, "customer");
        owner.wait_until_serving().await;
        running_instance(&owner, &format!("{}.example.social", unique("crash-"))).await
    };
    let tenant = tenant(&installation, &instance).await;
    for index in 0..20 {
        tenant
            .media
            .put(
                &format!("media_attachments/files/000/000/{index:03}/original/a.png"),
                vec![index as u8; 4096].into(),
            )
            .await
            .unwrap();
    }

    for point in ["before-checkpoint", "after-checkpoint"] {
        let owner = installation.api(&owner_email, "customer");
        let mut crashing = installation.serve(Some(&format!("export_instance/archive/{point}")));
        owner.wait_until_serving().await;
        let (status, body) = owner
            .call(
                Method::POST,
                &format!("/api/v1/instances/{instance}/exports"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let status = crashing.wait_for_exit(EXPORT_DEADLINE);
        assert!(!status.success(), "the crash point was reached");

        let _server = installation.serve(None);
        owner.wait_until_serving().await;
        let operation = body["operation"]["id"].as_str().unwrap();
        owner.assert_succeeds(operation, EXPORT_DEADLINE).await;
        let id = body["export"]["id"].as_str().unwrap();
        let (_, export) = owner
            .call(Method::GET, &format!("/api/v1/exports/{id}"), None)
            .await;
        assert_eq!(export["state"], "complete", "{export}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.tar.zst");
        download(&owner, &export, &path).await;
        let verified = herd_portability::verify(&path, None).expect("verifies");
        assert_eq!(archived_media(&verified).objects.len(), 20);
    }
    installation.drop_database().await;
}
