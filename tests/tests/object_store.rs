//! Garage is a real S3 store: a bucket and a key made through its admin API
//! put, get and list objects over S3, and a key is confined to its bucket.

use bytes::Bytes;
use herd_e2e::{stack_setting, unique_name};
use herd_tenancy::{BucketPermissions, GarageAdmin, ObjectStore, TenancyError};

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
