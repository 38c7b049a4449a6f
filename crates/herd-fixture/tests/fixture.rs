//! The fixture and its fingerprints against the real local stack (PostgreSQL
//! and Garage); run through `deploy/test.sh`, or with a stack's env sourced.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use herd_fixture::{
    BucketFingerprint, FixtureSpec, bucket_fingerprint, database_fingerprint, generate,
    id_partition,
};
use herd_tenancy::{AccessKey, BucketPermissions, GarageAdmin, ObjectStore};
use tokio::process::Command;
use tokio_postgres::{Client, NoTls};

fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run these tests through `deploy/test.sh`, or source a stack's env from `deploy/stack.sh up`")
    })
}

/// Unique across tests in this process and across runs that left debris.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A fresh database and a fresh bucket with a key of its own.
struct Tenant {
    database: String,
    url: String,
    bucket_id: String,
    key: AccessKey,
    store: ObjectStore,
}

impl Tenant {
    async fn create() -> Tenant {
        let admin_url = setting("HERD_PG_ADMIN_URL");
        let name = unique("fixture");
        let database = name.replace('-', "_");
        connect(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        let mut url = url::Url::parse(&admin_url).expect("admin URL");
        url.set_path(&database);

        let garage = garage();
        let bucket_id = garage.create_bucket(&name).await.expect("create bucket");
        let key = garage.create_key(&name).await.expect("create key");
        garage
            .allow_key_on_bucket(
                &bucket_id,
                &key.access_key_id,
                BucketPermissions::READ_WRITE,
            )
            .await
            .expect("allow key");
        let store = ObjectStore::new(
            &setting("HERD_S3_ENDPOINT"),
            &setting("HERD_S3_REGION"),
            &name,
            &key,
        )
        .expect("object store");
        Tenant {
            database,
            url: url.to_string(),
            bucket_id,
            key,
            store,
        }
    }

    async fn generated(seed: u64) -> Tenant {
        let tenant = Tenant::create().await;
        let spec = FixtureSpec {
            seed,
            scale: 1,
            media_percent: 100,
            local_domain: "fixture.example".into(),
        };
        let summary = generate(&tenant.url, &tenant.store, &spec)
            .await
            .expect("generate");
        assert!(summary.rows["statuses"] >= 2_000, "{summary:?}");
        assert!(summary.objects > 100, "{summary:?}");
        tenant
    }

    async fn remove(self) {
        connect(&setting("HERD_PG_ADMIN_URL"))
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.database))
            .await
            .expect("drop database");
        self.store.empty().await.expect("empty bucket");
        let garage = garage();
        garage
            .delete_bucket(&self.bucket_id)
            .await
            .expect("delete bucket");
        garage
            .delete_key(&self.key.access_key_id)
            .await
            .expect("delete key");
    }
}

fn garage() -> GarageAdmin {
    GarageAdmin::new(
        &setting("HERD_GARAGE_ADMIN_URL"),
        setting("HERD_GARAGE_ADMIN_TOKEN"),
    )
    .expect("Garage admin client")
}

/// A PostgreSQL client program: from the installation `pg_config` names, or
/// else from `PATH`.
async fn pg_program(name: &str) -> PathBuf {
    let bindir = Command::new("pg_config").arg("--bindir").output().await;
    match bindir {
        Ok(output) if output.status.success() => {
            let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join(name);
            if path.exists() { path } else { name.into() }
        }
        _ => name.into(),
    }
}

async fn run(program: &str, args: &[&str]) {
    let output = Command::new(pg_program(program).await)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| panic!("run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn copy_objects(from: &ObjectStore, to: &ObjectStore) {
    for key in from.list("").await.expect("list") {
        let body = from.get(&key).await.expect("get");
        to.put(&key, body).await.expect("put");
    }
}

fn without_cache(fingerprint: &BucketFingerprint) -> BucketFingerprint {
    let objects: std::collections::BTreeMap<_, _> = fingerprint
        .objects
        .iter()
        .filter(|(key, _)| !key.starts_with("cache/"))
        .map(|(key, object)| (key.clone(), object.clone()))
        .collect();
    BucketFingerprint {
        total_bytes: objects.values().map(|object| object.size).sum(),
        objects,
    }
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fixture_and_another_seed_another() {
    let (first, second, other) = tokio::join!(
        Tenant::generated(42),
        Tenant::generated(42),
        Tenant::generated(43)
    );
    let database = database_fingerprint(&first.url).await.unwrap();
    assert_eq!(database, database_fingerprint(&second.url).await.unwrap());
    let bucket = bucket_fingerprint(&first.store, None).await.unwrap();
    assert_eq!(
        bucket,
        bucket_fingerprint(&second.store, None).await.unwrap()
    );

    let different = database_fingerprint(&other.url).await.unwrap();
    assert_ne!(
        database.tables["statuses"].checksum,
        different.tables["statuses"].checksum
    );
    assert_ne!(
        bucket,
        bucket_fingerprint(&other.store, None).await.unwrap()
    );

    for tenant in [first, second, other] {
        tenant.remove().await;
    }
}

#[tokio::test]
async fn the_fixture_has_mastodons_shape() {
    let tenant = Tenant::generated(7).await;
    let client = connect(&tenant.url).await;
    let fingerprint = database_fingerprint(&tenant.url).await.unwrap();
    for table in [
        "accounts",
        "users",
        "statuses",
        "media_attachments",
        "follows",
        "favourites",
        "notifications",
        "tags",
        "statuses_tags",
        "oauth_applications",
        "oauth_access_tokens",
        "domain_blocks",
        "settings",
        "schema_migrations",
        "ar_internal_metadata",
    ] {
        assert!(fingerprint.tables[table].rows > 0, "{table} is empty");
    }
    assert!(
        fingerprint
            .functions
            .contains_key("timestamp_id(table_name text)")
    );
    assert!(
        fingerprint.sequences.values().all(Option::is_some),
        "every sequence is advanced past the rows: {:?}",
        fingerprint.sequences
    );
    assert!(
        fingerprint.tables["statuses"]
            .columns
            .iter()
            .any(|column| column == "id bigint NOT NULL DEFAULT timestamp_id('statuses'::text)")
    );

    // Local accounts have no domain, a private key and a user; remote ones neither.
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE a.domain IS NULL AND a.private_key IS NOT NULL AND u.id IS NOT NULL),
                    count(*) FILTER (WHERE a.domain IS NOT NULL AND a.private_key IS NULL AND u.id IS NULL),
                    count(*)
             FROM accounts a LEFT JOIN users u ON u.account_id = a.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0) + row.get::<_, i64>(1),
        row.get::<_, i64>(2)
    );

    // The edge cases are there.
    let edges = client
        .query_one(
            "SELECT (SELECT count(*) FROM statuses WHERE octet_length(text) >= 100 * 1024),
                    (SELECT count(*) FROM statuses WHERE text = '' AND reblog_of_id IS NULL),
                    (SELECT count(*) FROM statuses WHERE text LIKE '%\\N%'),
                    (SELECT count(*) FROM statuses WHERE text ~ '[\\u0590-\\u06FF]' AND text ~ '[\\u3040-\\u30FF]'),
                    (SELECT count(*) FROM users WHERE current_sign_in_at IN ('infinity', '-infinity') OR current_sign_in_at < '0001-01-02'),
                    (SELECT count(*) FROM users WHERE otp_secret IS NOT NULL)",
            &[],
        )
        .await
        .unwrap();
    for column in 0..6 {
        assert!(
            edges.get::<_, i64>(column) > 0,
            "edge case {column} missing"
        );
    }

    // Every attachment's files are where Mastodon looks for them.
    let bucket = bucket_fingerprint(&tenant.store, None).await.unwrap();
    let media = client
        .query(
            "SELECT m.id, m.file_file_name, m.file_file_size, a.domain IS NULL
             FROM media_attachments m JOIN accounts a ON a.id = m.account_id",
            &[],
        )
        .await
        .unwrap();
    assert!(!media.is_empty());
    for row in &media {
        let prefix = if row.get::<_, bool>(3) { "" } else { "cache/" };
        let key = format!(
            "{prefix}media_attachments/files/{}/original/{}",
            id_partition(row.get(0)),
            row.get::<_, String>(1)
        );
        let object = bucket
            .objects
            .get(&key)
            .unwrap_or_else(|| panic!("{key} is missing"));
        assert_eq!(object.size, row.get::<_, i32>(2) as u64);
    }
    assert!(
        bucket
            .objects
            .keys()
            .any(|key| key.starts_with("accounts/avatars/"))
    );
    assert!(bucket.objects.keys().any(|key| key.contains("/small/")));
    assert!(bucket.objects.values().any(|object| object.size == 0));

    // timestamp_id behaves like Mastodon's: now in milliseconds above 16 bits.
    let row = client
        .query_one(
            "INSERT INTO statuses (account_id, created_at, updated_at)
             SELECT id, now(), now() FROM accounts LIMIT 1
             RETURNING id, (extract(epoch FROM now()) * 1000)::bigint",
            &[],
        )
        .await
        .unwrap();
    let (id, now_ms): (i64, i64) = (row.get(0), row.get(1));
    assert!((id >> 16).abs_diff(now_ms) <= 1, "id {id} vs now {now_ms}");

    tenant.remove().await;
}

#[tokio::test]
async fn fingerprints_are_stable_and_a_dump_and_restore_keeps_them() {
    let source = Tenant::generated(11).await;
    let target = Tenant::create().await;
    let database = database_fingerprint(&source.url).await.unwrap();
    assert_eq!(database, database_fingerprint(&source.url).await.unwrap());

    let dump = std::env::temp_dir().join(format!("{}.dump", source.database));
    let dump_path = dump.to_str().unwrap();
    run("pg_dump", &["-Fc", "-f", dump_path, "-d", &source.url]).await;
    run("pg_restore", &["--no-owner", "-d", &target.url, dump_path]).await;
    std::fs::remove_file(&dump).unwrap();
    assert_eq!(database, database_fingerprint(&target.url).await.unwrap());

    let bucket = bucket_fingerprint(&source.store, None).await.unwrap();
    assert_eq!(
        bucket,
        bucket_fingerprint(&source.store, None).await.unwrap()
    );
    copy_objects(&source.store, &target.store).await;
    assert_eq!(
        bucket,
        bucket_fingerprint(&target.store, None).await.unwrap()
    );

    let without = bucket_fingerprint(&target.store, Some("cache/"))
        .await
        .unwrap();
    assert!(without.objects.len() < bucket.objects.len());
    assert_eq!(without, without_cache(&bucket));

    source.remove().await;
    target.remove().await;
}

#[tokio::test]
async fn one_changed_row_or_object_changes_the_fingerprint() {
    let tenant = Tenant::generated(5).await;
    let before = database_fingerprint(&tenant.url).await.unwrap();
    connect(&tenant.url)
        .await
        .batch_execute(
            "UPDATE statuses SET sensitive = NOT sensitive WHERE id = (SELECT min(id) FROM statuses)",
        )
        .await
        .unwrap();
    let after = database_fingerprint(&tenant.url).await.unwrap();
    for (table, fingerprint) in &before.tables {
        let changed = fingerprint.checksum != after.tables[table].checksum;
        assert_eq!(changed, table == "statuses", "{table}");
        assert_eq!(fingerprint.rows, after.tables[table].rows);
    }

    let bucket = bucket_fingerprint(&tenant.store, None).await.unwrap();
    let (key, object) = bucket
        .objects
        .iter()
        .find(|(_, object)| object.size > 0)
        .unwrap();
    let mut body = tenant.store.get(key).await.unwrap().to_vec();
    body[object.size as usize / 2] ^= 1;
    tenant.store.put(key, body.into()).await.unwrap();
    let changed = bucket_fingerprint(&tenant.store, None).await.unwrap();
    assert_eq!(changed.objects.len(), bucket.objects.len());
    assert_ne!(changed.objects[key], bucket.objects[key]);
    assert_eq!(changed.total_bytes, bucket.total_bytes);

    tenant.remove().await;
}
