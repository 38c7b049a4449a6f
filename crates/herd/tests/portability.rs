//! Exports and imports through `herd serve` on the real local stack.
//!
//! A tenant filled with a Mastodon-like fixture comes out as an archive that
//! verifies, whose dump restores to the same database and whose media are the
//! bucket's, byte for byte; only the owner and operators see it; a crash
//! mid-export loses nothing. The archive, or a plain backup as other hosts
//! make it, comes back in as a new instance with the same tables, media and
//! secrets; hostile uploads are refused and leave nothing behind.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use herd_core::archive::{Consistency, ConsistencyMethod, Description, SYSTEM_DIR};
use herd_core::domain::Domain;
use herd_core::secrets::DB_PASS;
use herd_core::tenant::TenantNames;
use herd_core::version::DEFAULT_VERSION;
use herd_fixture::{BucketFingerprint, DatabaseFingerprint, FixtureSpec};
use herd_portability::WriteOptions;
use herd_tenancy::{DatabaseServer, ObjectStore, PgTools, TenantDatabase};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::tenant::{
    Filled, carried_secrets, filled_instance, running_instance, secrets_of, tenant,
};
use support::{Api, Installation, stack_setting, unique};

const EXPORT_DEADLINE: Duration = Duration::from_secs(120);

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

    // Pushed to a bucket of the customer's own as well.
    let garage = herd_tenancy::GarageAdmin::new(
        &stack_setting("HERD_GARAGE_ADMIN_URL"),
        stack_setting("HERD_GARAGE_ADMIN_TOKEN"),
    )
    .unwrap();
    let backups = unique("backups-");
    let bucket = garage.create_bucket(&backups).await.unwrap();
    let key = garage.create_key(&backups).await.unwrap();
    garage
        .allow_key_on_bucket(
            &bucket,
            &key.access_key_id,
            herd_tenancy::BucketPermissions::READ_WRITE,
        )
        .await
        .unwrap();
    let plain = export(
        &owner,
        &instance,
        json!({"push": {
            "endpoint": stack_setting("HERD_S3_ENDPOINT"),
            "region": stack_setting("HERD_S3_REGION"),
            "bucket": backups,
            "key": "mastodon/latest.tar.zst",
            "access_key_id": key.access_key_id,
            "secret_access_key": key.secret_access_key,
        }}),
    )
    .await;
    assert_eq!(plain["pushed"], true);
    let pushed = ObjectStore::new(
        &stack_setting("HERD_S3_ENDPOINT"),
        &stack_setting("HERD_S3_REGION"),
        &backups,
        &key,
    )
    .unwrap()
    .get("mastodon/latest.tar.zst")
    .await
    .unwrap();
    assert_eq!(sha256_hex(&pushed), plain["sha256"].as_str().unwrap());
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
    assert_eq!(
        restored_fingerprint(&path).await,
        database,
        "database differs"
    );

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

    // Once its time is up, an export's archive is deleted.
    let owner = installation.api(&owner_email, "customer");
    let client = installation.sql().await;
    let expiring: String = client
        .query_one(
            "UPDATE exports SET expires_at = now() - interval '1 minute' \
             WHERE id = (SELECT id FROM exports ORDER BY created_at LIMIT 1) RETURNING id::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let _server = installation.serve(None);
    owner.wait_until_serving().await;
    let started = std::time::Instant::now();
    loop {
        let (_, export) = owner
            .call(Method::GET, &format!("/api/v1/exports/{expiring}"), None)
            .await;
        if export["state"] == "expired" {
            break;
        }
        assert!(started.elapsed() < EXPORT_DEADLINE, "{export}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, problem) = owner
        .call(
            Method::GET,
            &format!("/api/v1/exports/{expiring}/download"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    installation.drop_database().await;
}

/// The files of an import, by form field.
type Upload = Vec<(&'static str, Vec<u8>)>;

async fn delete_instance(api: &Api, instance: &str) {
    let (status, body) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/instances/{instance}"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.assert_succeeds(body["operation"]["id"].as_str().unwrap(), EXPORT_DEADLINE)
        .await;
}

/// Takes a database server out of placement, as an operator does before
/// retiring it; its instances stay where they are.
async fn drain_database_server(installation: &Installation, id: uuid::Uuid) {
    let client = installation.sql().await;
    let drained = client
        .execute(
            "UPDATE database_servers SET state = 'draining' WHERE id::text = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(drained, 1);
}

async fn post_import(api: &Api, domain: &str, files: Upload) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new()
        .text("domain", domain.to_owned())
        .text("plan", "small")
        .text("owner_email", "owner@example.org");
    for (name, bytes) in files {
        form = form.part(name, reqwest::multipart::Part::bytes(bytes).file_name(name));
    }
    let response = api
        .http
        .post(format!("{}/api/v1/imports", api.base))
        .bearer_auth(&api.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Imports, waits for the instance to run, checks it holds `expected` and
/// returns the import's answer.
async fn assert_imported(
    installation: &Installation,
    api: &Api,
    domain: &str,
    files: Upload,
    expected: &Filled,
    media_left_out: Option<&str>,
) -> Value {
    let (status, body) = post_import(api, domain, files).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["operation"]["kind"], "import");
    api.assert_succeeds(body["operation"]["id"].as_str().unwrap(), EXPORT_DEADLINE)
        .await;
    let instance = body["instance"]["id"].as_str().unwrap().to_owned();
    let tenant = tenant(installation, &instance).await;
    assert_eq!(
        herd_fixture::database_fingerprint(&tenant.credentials.database_url())
            .await
            .unwrap(),
        expected.database,
        "the imported database differs"
    );
    let mut media = expected.media.clone();
    if let Some(prefix) = media_left_out {
        media.objects.retain(|key, _| !key.starts_with(prefix));
        media.total_bytes = media.objects.values().map(|o| o.size).sum();
    }
    assert_eq!(
        herd_fixture::bucket_fingerprint(&tenant.media, None)
            .await
            .unwrap(),
        media,
        "the imported media differ"
    );
    let secrets = secrets_of(installation, &instance).await;
    assert_eq!(
        carried_secrets(&secrets),
        carried_secrets(&expected.secrets)
    );
    assert_ne!(
        secrets[DB_PASS], expected.secrets[DB_PASS],
        "the new host's own password"
    );
    body
}

#[tokio::test]
async fn an_exported_instance_imports_with_the_same_tables_media_and_secrets() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let api = installation.api(&format!("{}@example.com", unique("mover-")), "customer");
    api.wait_until_serving().await;
    let domain = format!("{}.example.social", unique("moving-"));
    let source = filled_instance(&installation, &api, &domain, 11).await;
    let export = export(&api, &source.instance, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.tar.zst");
    download(&api, &export, &path).await;

    // The domain is free again once the old server is gone, as when moving
    // hosts. The new one is on another database server: the source's takes
    // no new databases.
    delete_instance(&api, &source.instance).await;
    let source_server = installation
        .database_server_of(&source.instance)
        .await
        .expect("the source was placed");
    drain_database_server(&installation, source_server.id).await;
    let archive = std::fs::read(&path).unwrap();
    let imported = assert_imported(
        &installation,
        &api,
        &domain,
        vec![("archive", archive)],
        &source,
        Some("cache/"),
    )
    .await;
    let imported_id = imported["instance"]["id"].as_str().unwrap();
    assert_ne!(imported_id, source.instance);
    let imported_server = installation
        .database_server_of(imported_id)
        .await
        .expect("the import was placed");
    assert_ne!(
        imported_server.id, source_server.id,
        "imported on the source's database server"
    );
    assert_ne!(
        TenantNames::for_instance(imported_id).bucket,
        TenantNames::for_instance(&source.instance).bucket
    );
    // What the import holds came from the archive alone.
    nothing_left_of(&installation, &source.instance).await;

    // The same archive fetched by Herd from a link, as from another host.
    delete_instance(&api, imported_id).await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/imports",
            Some(json!({
                "domain": domain,
                "plan": "small",
                "owner_email": "owner@example.org",
                "url": export["download_url"],
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.assert_succeeds(body["operation"]["id"].as_str().unwrap(), EXPORT_DEADLINE)
        .await;
    let fetched = tenant(&installation, body["instance"]["id"].as_str().unwrap()).await;
    assert_eq!(
        herd_fixture::database_fingerprint(&fetched.credentials.database_url())
            .await
            .unwrap(),
        source.database
    );
    installation.drop_database().await;
}

/// A tar of the bucket as `public/system`, as a self-hosted server has it.
async fn system_tar(media: &ObjectStore) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for key in media.list("").await.unwrap() {
        let body = media.get(&key).await.unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, format!("public/system/{key}"), body.as_ref())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

#[tokio::test]
async fn a_plain_backup_from_another_host_imports_with_the_same_tables_media_and_secrets() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let api = installation.api(&format!("{}@example.com", unique("arriving-")), "customer");
    api.wait_until_serving().await;
    let domain = format!("{}.example.social", unique("elsewhere-"));
    let source = filled_instance(&installation, &api, &domain, 12).await;
    let tenant = tenant(&installation, &source.instance).await;
    let mut dump = Vec::new();
    PgTools::default()
        .dump(&tenant.credentials, &mut dump)
        .await
        .unwrap();
    let system = system_tar(&tenant.media).await;
    let mut env = format!(
        "LOCAL_DOMAIN={domain}\nDB_HOST=db.other-host.example\nREDIS_HOST=redis\nSMTP_SERVER=mail\nSOME_UNKNOWN_SETTING=1\n"
    );
    for (key, value) in carried_secrets(&source.secrets) {
        env.push_str(&format!("{key}={value}\n"));
    }
    delete_instance(&api, &source.instance).await;

    let body = assert_imported(
        &installation,
        &api,
        &domain,
        vec![
            ("database", dump),
            ("system", system),
            ("env", env.into_bytes()),
        ],
        &source,
        None,
    )
    .await;
    let dropped = body["env"]["dropped"].as_object().unwrap();
    for key in [
        "DB_HOST",
        "REDIS_HOST",
        "SMTP_SERVER",
        "SOME_UNKNOWN_SETTING",
    ] {
        assert!(dropped.contains_key(key), "{key} is dropped: {body}");
    }
    installation.drop_database().await;
}

/// One tar member written byte for byte, whatever a well-behaved tar writer
/// would refuse.
fn raw_member(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, declared: u64, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(declared);
    header.set_mode(0o644);
    header.set_mtime(0);
    if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
        header.set_link_name("/etc/passwd").unwrap();
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn end_of_tar(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; 1024]);
}

/// A valid archive of `domain` with the given dump, plain tar.
fn archive_of(domain: &str, dump: &[u8]) -> Vec<u8> {
    let mut writer =
        herd_portability::ArchiveWriter::new(Vec::new(), &WriteOptions::default()).unwrap();
    writer.add_bytes("database.dump", dump).unwrap();
    writer
        .add_bytes(
            "env.production",
            format!("LOCAL_DOMAIN={domain}\nSECRET_KEY_BASE=0123456789abcdef\n").as_bytes(),
        )
        .unwrap();
    writer
        .add_bytes(
            "system/accounts/avatars/000/000/001/original/a.png",
            b"\x89PNG",
        )
        .unwrap();
    let description = Description {
        herd_version: "test".into(),
        local_domain: Domain::parse(domain).unwrap(),
        web_domain: Domain::parse(domain).unwrap(),
        mastodon_version: DEFAULT_VERSION,
        schema_migration_version: 20250101000000,
        created_at: "2026-11-23T12:00:00Z".into(),
        consistency: Consistency {
            method: ConsistencyMethod::Snapshot,
            detail: "test".into(),
        },
        left_out: Vec::new(),
    };
    writer.finish(description).unwrap().1
}

/// `archive`'s members again, each passed through `change`.
fn rewritten(archive: &[u8], change: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let data = change(&path, data);
        raw_member(
            &mut out,
            &path,
            tar::EntryType::Regular,
            data.len() as u64,
            &data,
        );
    }
    end_of_tar(&mut out);
    out
}

/// Members a hostile archive adds before the manifest, which a reader meets first.
fn with_member(archive: &[u8], name: &str, kind: tar::EntryType, declared: u64) -> Vec<u8> {
    let mut out = Vec::new();
    raw_member(&mut out, name, kind, declared, b"");
    out.extend_from_slice(archive);
    out
}

/// A zstd-compressed tar whose one member inflates to 256 MiB of zeros.
fn compression_bomb() -> Vec<u8> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let mut header = Vec::new();
    raw_member(
        &mut header,
        "system/zeros",
        tar::EntryType::Regular,
        256 << 20,
        b"",
    );
    std::io::Write::write_all(&mut encoder, &header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
    }
    encoder.finish().unwrap()
}

/// A custom-format dump with a function in C: only a superuser may create one.
async fn dump_with_c_function() -> Vec<u8> {
    let name = unique("hostile-").replace('-', "_");
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
    let mut admin_url = url::Url::parse(&stack_setting("HERD_PG_ADMIN_URL")).unwrap();
    admin_url.set_path(&name);
    let (client, connection) = tokio_postgres::connect(admin_url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE FUNCTION public.escape() RETURNS int LANGUAGE c \
             AS '$libdir/plpgsql', 'plpgsql_call_handler';",
        )
        .await
        .unwrap();
    drop(client);
    let (tenant, connection) =
        tokio_postgres::connect(&credentials.database_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    tenant
        .batch_execute("CREATE TABLE public.accounts (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    drop(tenant);
    let mut dump = Vec::new();
    PgTools::default()
        .dump(&credentials, &mut dump)
        .await
        .unwrap();
    server.drop_tenant(&name, &name).await.unwrap();
    dump
}

async fn instances_with_domain(installation: &Installation, domain: &str) -> Vec<(String, String)> {
    let client = installation.sql().await;
    client
        .query(
            "SELECT id::text, state FROM instances WHERE domain = $1",
            &[&domain],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Neither database, role nor bucket of the instance exists, nor its namespace.
async fn nothing_left_of(installation: &Installation, instance: &str) {
    let names = TenantNames::for_instance(instance);
    let placed = installation
        .database_server_of(instance)
        .await
        .expect("the instance was placed");
    let server = DatabaseServer::new(&placed.admin_url).unwrap();
    let state = server
        .inspect_tenant(&names.database, &names.role)
        .await
        .unwrap();
    assert!(
        state.database.is_none() && state.role.is_none(),
        "{state:?}"
    );
    let garage = herd_tenancy::GarageAdmin::new(
        &stack_setting("HERD_GARAGE_ADMIN_URL"),
        stack_setting("HERD_GARAGE_ADMIN_TOKEN"),
    )
    .unwrap();
    assert!(garage.find_bucket(&names.bucket).await.unwrap().is_none());
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(herd_kube::client(None).await.unwrap());
    let namespace = herd_kube::children::namespace_name(instance);
    let started = std::time::Instant::now();
    while namespaces.get_opt(&namespace).await.unwrap().is_some() {
        assert!(started.elapsed() < EXPORT_DEADLINE, "{namespace} stays");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn hostile_uploads_are_refused_and_leave_nothing_behind() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let api = installation.api(&format!("{}@example.com", unique("hostile-")), "customer");
    api.wait_until_serving().await;
    let domain = format!("{}.example.social", unique("hostile-"));
    let valid = archive_of(&domain, b"PGDMP not really");
    let half = valid.len() / 2;
    let cases: Vec<(&str, Upload, &str)> = vec![
        (
            "path traversal",
            vec![(
                "archive",
                with_member(
                    &valid,
                    "system/../../etc/cron.d/x",
                    tar::EntryType::Regular,
                    0,
                ),
            )],
            "invalid_archive",
        ),
        (
            "absolute path",
            vec![(
                "archive",
                with_member(&valid, "/etc/passwd", tar::EntryType::Regular, 0),
            )],
            "invalid_archive",
        ),
        (
            "symbolic link",
            vec![(
                "archive",
                with_member(&valid, "system/link", tar::EntryType::Symlink, 0),
            )],
            "invalid_archive",
        ),
        (
            "hard link",
            vec![(
                "archive",
                with_member(&valid, "system/link", tar::EntryType::Link, 0),
            )],
            "invalid_archive",
        ),
        (
            "checksum mismatch",
            vec![(
                "archive",
                rewritten(&valid, |path, mut data| {
                    if path == "database.dump" {
                        data[0] ^= 1;
                    }
                    data
                }),
            )],
            "invalid_archive",
        ),
        (
            "truncated archive",
            vec![("archive", valid[..half].to_vec())],
            "invalid_archive",
        ),
        (
            "manifest of a future version",
            vec![(
                "archive",
                rewritten(&valid, |path, data| {
                    if path != "manifest.json" {
                        return data;
                    }
                    let mut manifest: Value = serde_json::from_slice(&data).unwrap();
                    manifest["format_version"] = json!(99);
                    serde_json::to_vec(&manifest).unwrap()
                }),
            )],
            "invalid_archive",
        ),
        (
            "huge declared size",
            vec![(
                "archive",
                with_member(&valid, "system/huge", tar::EntryType::Regular, 1 << 41),
            )],
            "invalid_archive",
        ),
        (
            "compression bomb",
            vec![("archive", compression_bomb())],
            "invalid_archive",
        ),
        (
            "an archive two minor releases behind",
            vec![(
                "archive",
                rewritten(&valid, |path, data| {
                    if path != "manifest.json" {
                        return data;
                    }
                    let mut manifest: Value = serde_json::from_slice(&data).unwrap();
                    manifest["mastodon_version"] = json!("4.3.0");
                    serde_json::to_vec(&manifest).unwrap()
                }),
            )],
            "unsupported_upgrade",
        ),
        (
            "another server's archive",
            vec![("archive", archive_of("other.example.social", b"PGDMP"))],
            "domain_mismatch",
        ),
        (
            "plain backup with a dump that is not pg_dump -Fc",
            vec![
                ("database", b"CREATE ROLE evil SUPERUSER;".to_vec()),
                (
                    "env",
                    format!("LOCAL_DOMAIN={domain}\nSECRET_KEY_BASE=x\n").into_bytes(),
                ),
            ],
            "invalid_archive",
        ),
    ];
    for (case, files, code) in cases {
        let (status, problem) = post_import(&api, &domain, files).await;
        assert_eq!(status, 422, "{case}: {problem}");
        assert_eq!(problem["code"], code, "{case}: {problem}");
        assert!(
            instances_with_domain(&installation, &domain)
                .await
                .is_empty(),
            "{case} created an instance"
        );
    }

    // A dump the instance's role may not restore is found only by restoring
    // it: the import fails and removes everything it made.
    let hostile = archive_of(&domain, &dump_with_c_function().await);
    let (status, body) = post_import(&api, &domain, vec![("archive", hostile)]).await;
    assert_eq!(status, 202, "{body}");
    let operation = api
        .wait_for_operation(body["operation"]["id"].as_str().unwrap(), EXPORT_DEADLINE)
        .await;
    assert_eq!(operation["state"], "failed", "{operation}");
    assert!(
        operation["error"].as_str().unwrap().contains("may not run"),
        "{operation}"
    );
    let instance = body["instance"]["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    while instances_with_domain(&installation, &domain).await[0].1 != "deleted" {
        assert!(
            started.elapsed() < EXPORT_DEADLINE,
            "the failed import is not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    nothing_left_of(&installation, instance).await;
    installation.drop_database().await;
}

#[tokio::test]
async fn an_import_killed_mid_restore_completes_after_a_restart() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let email = format!("{}@example.com", unique("restarting-"));
    let domain = format!("{}.example.social", unique("restarting-"));
    let (source, archive) = {
        let _server = installation.serve(None);
        let api = installation.api(&email, "customer");
        api.wait_until_serving().await;
        let source = filled_instance(&installation, &api, &domain, 13).await;
        let export = export(&api, &source.instance, json!({"compress": false})).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.tar");
        download(&api, &export, &path).await;
        delete_instance(&api, &source.instance).await;
        (source, std::fs::read(&path).unwrap())
    };
    let api = installation.api(&email, "customer");
    let mut crashing = installation.serve(Some("provision_instance/restore/before-checkpoint"));
    api.wait_until_serving().await;
    let (status, body) = post_import(&api, &domain, vec![("archive", archive)]).await;
    assert_eq!(status, 202, "{body}");
    assert!(!crashing.wait_for_exit(EXPORT_DEADLINE).success());

    let _server = installation.serve(None);
    api.wait_until_serving().await;
    api.assert_succeeds(body["operation"]["id"].as_str().unwrap(), EXPORT_DEADLINE)
        .await;
    let instance = body["instance"]["id"].as_str().unwrap();
    let tenant = tenant(&installation, instance).await;
    assert_eq!(
        herd_fixture::database_fingerprint(&tenant.credentials.database_url())
            .await
            .unwrap(),
        source.database
    );
    installation.drop_database().await;
}
