//! Garage is a real S3 store: a bucket and a key made through its admin API
//! put, get and list objects over S3, and a key is confined to its bucket.
//! Whole servers go in and out as streams and multipart uploads, and
//! presigned URLs hand single objects to anyone until they expire.

use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use herd_e2e::{stack_setting, unique_name};
use herd_tenancy::{AccessKey, BucketPermissions, GarageAdmin, ObjectStore, TenancyError};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn bucket_and_key_from_the_admin_api_serve_s3() {
    let admin = GarageAdmin::new(
        &stack_setting("HERD_GARAGE_ADMIN_URL"),
        stack_setting("HERD_GARAGE_ADMIN_TOKEN"),
    )
    .expect("admin client");
    let endpoint = stack_setting("HERD_S3_ENDPOINT");
    let region = stack_setting("HERD_S3_REGION");

    let bucket_name = unique_name("herd-smoke");
    let bucket_id = admin
        .create_bucket(&bucket_name)
        .await
        .expect("create bucket");
    let key = admin.create_key(&bucket_name).await.expect("create key");
    admin
        .allow_key_on_bucket(
            &bucket_id,
            &key.access_key_id,
            BucketPermissions::READ_WRITE,
        )
        .await
        .expect("allow");

    let store = ObjectStore::new(&endpoint, &region, &bucket_name, &key).expect("store");
    let avatar = "accounts/avatars/000/000/001/original/avatar.png";
    let attachment = "media_attachments/files/109/348/123/original/photo.jpg";
    store
        .put(avatar, Bytes::from_static(b"\x89PNG avatar"))
        .await
        .expect("put avatar");
    store
        .put(attachment, Bytes::from(vec![7u8; 256 * 1024]))
        .await
        .expect("put attachment");

    assert_eq!(
        store.get(avatar).await.expect("get").as_ref(),
        b"\x89PNG avatar"
    );
    assert_eq!(store.get(attachment).await.expect("get").len(), 256 * 1024);
    assert_eq!(
        store.list("accounts/").await.expect("list"),
        vec![avatar.to_owned()]
    );
    assert_eq!(store.list("").await.expect("list all").len(), 2);

    // Another tenant's key gets nothing from this bucket.
    let stranger = admin
        .create_key(&unique_name("herd-stranger"))
        .await
        .expect("second key");
    let trespass = ObjectStore::new(&endpoint, &region, &bucket_name, &stranger).expect("store");
    match trespass.get(avatar).await {
        Err(TenancyError::Rejected { status: 403, .. }) => {}
        other => panic!("a key not allowed on the bucket read it: {other:?}"),
    }

    for object in [avatar, attachment] {
        store.delete(object).await.expect("delete object");
    }
    admin
        .delete_bucket(&bucket_id)
        .await
        .expect("delete bucket");
    admin
        .delete_key(&key.access_key_id)
        .await
        .expect("delete key");
    admin
        .delete_key(&stranger.access_key_id)
        .await
        .expect("delete second key");
}

/// A bucket of its own and a key allowed on it, for one test.
struct TestBucket {
    admin: GarageAdmin,
    bucket_id: String,
    key: AccessKey,
    store: ObjectStore,
}

impl TestBucket {
    async fn create(prefix: &str) -> Self {
        let admin = GarageAdmin::new(
            &stack_setting("HERD_GARAGE_ADMIN_URL"),
            stack_setting("HERD_GARAGE_ADMIN_TOKEN"),
        )
        .expect("admin client");
        let name = unique_name(prefix);
        let bucket_id = admin.create_bucket(&name).await.expect("create bucket");
        let key = admin.create_key(&name).await.expect("create key");
        admin
            .allow_key_on_bucket(
                &bucket_id,
                &key.access_key_id,
                BucketPermissions::READ_WRITE,
            )
            .await
            .expect("allow");
        let store = ObjectStore::new(
            &stack_setting("HERD_S3_ENDPOINT"),
            &stack_setting("HERD_S3_REGION"),
            &name,
            &key,
        )
        .expect("store");
        TestBucket {
            admin,
            bucket_id,
            key,
            store,
        }
    }

    async fn delete(self) {
        self.store.empty().await.expect("empty bucket");
        self.admin
            .delete_bucket(&self.bucket_id)
            .await
            .expect("delete bucket");
        self.admin
            .delete_key(&self.key.access_key_id)
            .await
            .expect("delete key");
    }
}

/// Bytes that do not compress or repeat, so a part sent twice or out of
/// order cannot go unnoticed.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Hashes a reader to its end, a buffer at a time, and counts its bytes.
async fn sha256_of(mut reader: impl AsyncRead + Unpin) -> (u64, Vec<u8>) {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        let read = reader.read(&mut buffer).await.expect("read the object");
        if read == 0 {
            return (total, hasher.finalize().to_vec());
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
}

#[tokio::test]
async fn a_large_file_goes_up_in_parts_and_streams_back_intact() {
    let bucket = TestBucket::create("herd-multipart").await;
    let store = &bucket.store;
    let content = pseudo_random_bytes(40 * MIB, 0x5eed_cafe_f00d_d00d);
    let expected_sha256 = Sha256::digest(&content).to_vec();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("media.tar");
    std::fs::write(&path, &content).expect("write the file");
    drop(content);

    let key = "exports/media.tar";
    let size = store.put_file(key, &path).await.expect("put file");
    assert_eq!(size, 40 * MIB as u64);

    assert_eq!(store.head(key).await.expect("head"), Some(size));
    let listed = store.list_objects("exports/").await.expect("list objects");
    let keys_and_sizes: Vec<(&str, u64)> =
        listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys_and_sizes, [(key, size)]);
    // S3 gives a multipart object the ETag `<digest>-<parts>`: 16 MiB parts make three.
    let first_byte = reqwest::Client::new()
        .get(store.presigned_get(key, Duration::from_secs(60)))
        .header(reqwest::header::RANGE, "bytes=0-0")
        .send()
        .await
        .expect("ranged GET");
    let etag = first_byte.headers()[reqwest::header::ETAG]
        .to_str()
        .expect("ETag")
        .to_owned();
    assert!(etag.trim_matches('"').ends_with("-3"), "ETag {etag}");
    // The listing tells the same tag, which lets a copy skip what is there already.
    assert_eq!(
        listed[0].etag.as_deref().map(|tag| tag.trim_matches('"')),
        Some(etag.trim_matches('"'))
    );

    let (announced, reader) = store.get_reader(key).await.expect("get reader");
    assert_eq!(announced, size);
    assert_eq!(sha256_of(reader).await, (size, expected_sha256));

    bucket.delete().await;
}

#[tokio::test]
async fn streams_heads_and_presigned_urls() {
    let bucket = TestBucket::create("herd-streams").await;
    let store = &bucket.store;

    let content = pseudo_random_bytes(5 * MIB + 7, 42);
    let key = "backups/dump.pgcustom";
    store
        .put_reader(key, content.len() as u64, Cursor::new(content.clone()))
        .await
        .expect("put reader");
    let (size, mut reader) = store.get_reader(key).await.expect("get reader");
    assert_eq!(size, content.len() as u64);
    let mut read_back = Vec::new();
    reader
        .read_to_end(&mut read_back)
        .await
        .expect("read the object");
    assert!(read_back == content, "the object came back different");

    // A small file goes up in one PUT.
    let dir = tempfile::tempdir().expect("temp dir");
    let small_file = dir.path().join("avatar.png");
    std::fs::write(&small_file, &content[..MIB]).expect("write the file");
    let small = "accounts/avatar.png";
    assert_eq!(
        store
            .put_file(small, &small_file)
            .await
            .expect("put small file"),
        MIB as u64
    );
    assert!(store.get(small).await.expect("get small file") == content[..MIB]);

    // A reader shorter than announced must not leave a truncated object behind.
    let short = "backups/short";
    store
        .put_reader(short, 1024, Cursor::new(vec![1u8; 1000]))
        .await
        .expect_err("a reader ending early failed the upload");
    assert_eq!(store.head(short).await.expect("head short"), None);

    assert_eq!(store.head("backups/missing").await.expect("head"), None);
    match store.get_reader("backups/missing").await {
        Err(TenancyError::Rejected { status: 404, .. }) => {}
        Err(other) => panic!("a missing object gave {other:?}"),
        Ok((size, _)) => panic!("a missing object gave a reader of {size} bytes"),
    }

    // Anyone holding the URL may fetch the object, without any key.
    let anyone = reqwest::Client::new();
    let shared = anyone
        .get(store.presigned_get(key, Duration::from_secs(60)))
        .send()
        .await
        .expect("presigned GET");
    assert_eq!(shared.status(), reqwest::StatusCode::OK);
    assert!(shared.bytes().await.expect("body") == content);

    let brief = store.presigned_get(key, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expired = anyone.get(brief).send().await.expect("expired GET");
    // AWS answers an expired URL with 403, Garage with 400 ("Date is too old").
    let status = expired.status().as_u16();
    assert!(
        matches!(status, 400 | 403),
        "an expired URL got {status}: {}",
        expired.text().await.unwrap_or_default()
    );

    bucket.delete().await;
}
