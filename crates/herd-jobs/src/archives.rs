//! Where archives are kept while Herd holds them: finished exports until they
//! expire, and imports until they are restored. Each object store of the
//! fleet has one archive bucket per installation, with a key only Herd holds;
//! tenants' keys cannot reach it.
//!
//! Archives are assembled in a scratch directory on local disk first: an
//! archive is written in one pass and verified in a second before anyone may
//! download it, and an upload resumes nothing, so a crash starts the
//! directory over.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use herd_db::archives::ArchiveBucket;
use herd_tenancy::{AccessKey, BucketPermissions, GarageAdmin, ObjectStore};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::JobError;

pub struct Archives {
    pool: herd_db::Pool,
    sealer: herd_db::Sealer,
    installation: String,
    scratch: PathBuf,
    buckets: Mutex<HashMap<Uuid, ObjectStore>>,
}

impl Archives {
    pub fn new(
        pool: herd_db::Pool,
        sealer: herd_db::Sealer,
        installation: String,
        scratch: PathBuf,
    ) -> Self {
        Archives {
            pool,
            sealer,
            installation,
            scratch,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Seals what archives carry besides themselves (a push target's key).
    pub fn sealer(&self) -> &herd_db::Sealer {
        &self.sealer
    }

    /// The archive bucket on `object_store_id`, created with its key the
    /// first time any process asks.
    pub async fn bucket(&self, object_store_id: Uuid) -> Result<ObjectStore, JobError> {
        let mut buckets = self.buckets.lock().await;
        if let Some(store) = buckets.get(&object_store_id) {
            return Ok(store.clone());
        }
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|err| JobError::Pool(err.to_string()))?;
        let access =
            herd_db::fleet::object_store_access(&mut conn, &self.sealer, object_store_id).await?;
        let recorded =
            match herd_db::archives::load_archive_bucket(&mut conn, &self.sealer, object_store_id)
                .await?
            {
                Some(recorded) => recorded,
                None => {
                    let proposed = self.propose_bucket()?;
                    herd_db::archives::keep_archive_bucket(
                        &mut conn,
                        &self.sealer,
                        object_store_id,
                        &proposed,
                    )
                    .await?
                }
            };
        drop(conn);
        let key = AccessKey {
            access_key_id: recorded.access_key_id.clone(),
            secret_access_key: recorded.secret_access_key.clone(),
        };
        let admin = GarageAdmin::new(&access.admin_endpoint, access.admin_token)?;
        let bucket_id = admin.ensure_bucket(&recorded.bucket).await?;
        admin.ensure_key(&key, &recorded.bucket).await?;
        admin
            .allow_key_on_bucket(
                &bucket_id,
                &key.access_key_id,
                BucketPermissions::READ_WRITE,
            )
            .await?;
        let store = ObjectStore::new(
            &access.s3_endpoint,
            &access.s3_region,
            &recorded.bucket,
            &key,
        )?;
        buckets.insert(object_store_id, store.clone());
        Ok(store)
    }

    fn propose_bucket(&self) -> Result<ArchiveBucket, JobError> {
        let (access_key_id, secret_access_key) =
            crate::with_os_random(herd_core::secrets::s3_access_key)?;
        Ok(ArchiveBucket {
            bucket: format!("herd-archives-{}", self.installation),
            access_key_id,
            secret_access_key,
        })
    }

    /// An empty scratch directory for one piece of work, whatever an earlier
    /// attempt left in it.
    pub async fn scratch(&self, name: &str) -> Result<PathBuf, JobError> {
        let dir = self.scratch.join(name);
        remove_dir(&dir).await?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|err| JobError::Scratch(err.to_string()))?;
        Ok(dir)
    }

    pub async fn discard_scratch(&self, name: &str) -> Result<(), JobError> {
        remove_dir(&self.scratch.join(name)).await
    }
}

async fn remove_dir(dir: &Path) -> Result<(), JobError> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(JobError::Scratch(err.to_string()))
        }
        _ => Ok(()),
    }
}

/// Runs file and archive work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| JobError::Scratch(format!("archive task: {err}")))?
}

pub(crate) fn scratch_error(err: std::io::Error) -> JobError {
    JobError::Scratch(err.to_string())
}
