//! Restoring an imported archive into the tenant's freshly made database and
//! bucket: the provisioning of an imported instance runs this between its
//! data services and its workloads.
//!
//! The archive was verified before the instance was created and waits in
//! Herd's archive bucket; it is read again in one pass, media going to the
//! tenant's bucket as they pass and the dump to scratch disk. The dump is
//! restored as the tenant's own role: whatever it holds can do no more than
//! the tenant may, and a statement refused fails the import, which then
//! removes everything it made.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_core::archive::{DATABASE_PATH, MemberKind, SYSTEM_DIR};
use herd_db::instances::Instance;
use herd_portability::{Member, ReadOptions};
use herd_tenancy::{ObjectStore, PgTools};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;

use crate::archives::blocking;
use crate::{JobError, Services, StagedArchive, tenant_data};

/// Objects up to this size are uploaded from memory; larger ones are
/// spooled to scratch disk first and sent as multipart uploads.
const IN_MEMORY_OBJECT_BYTES: u64 = 4 * 1024 * 1024;
/// Uploads in flight; with the size above, bounds the memory they hold.
const UPLOADS_IN_FLIGHT: usize = 8;

pub async fn restore(
    services: &Services,
    instance: &Instance,
    archive: &StagedArchive,
    connection_limit: u32,
) -> Result<(), JobError> {
    let scratch_name = format!("import-{}", instance.id);
    let scratch = services.archives.scratch(&scratch_name).await?;
    // `pg_restore` refuses objects that exist: a retry after a crash
    // restores into an empty database again.
    tenant_data::recreate_database(services, instance, connection_limit).await?;
    let tenant = tenant_data::connect(services, instance).await?;
    let (_, body) = services
        .archives
        .bucket(archive.object_store_id)
        .await?
        .get_reader(&archive.object_key)
        .await?;

    let runtime = Handle::current();
    let uploads = Uploads {
        runtime: runtime.clone(),
        media: tenant.media.clone(),
        spool: scratch.clone(),
        permits: Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT)),
        running: JoinSet::new(),
        spooled: 0,
    };
    let dump_path = scratch.join(DATABASE_PATH);
    let dump_target = dump_path.clone();
    let (verified, uploads) = blocking(move || {
        let mut uploads = uploads;
        let input = SyncIoBridge::new_with_handle(body, runtime);
        let verified = herd_portability::read_archive(input, ReadOptions::default(), |member| {
            match member.kind() {
                MemberKind::Database => {
                    let mut file = std::fs::File::create(&dump_target)?;
                    std::io::copy(member, &mut file)?;
                    file.sync_all()
                }
                MemberKind::Media => uploads.start(member),
                _ => Ok(()),
            }
        })?;
        Ok((verified, uploads))
    })
    .await?;
    uploads.finish().await?;
    if verified.manifest.description.local_domain.as_str() != instance.domain {
        return Err(JobError::Refused(format!(
            "the archive is of {}, not of {}",
            verified.manifest.description.local_domain, instance.domain
        )));
    }

    let report = PgTools::default()
        .restore(&tenant.credentials, &dump_path)
        .await?;
    if !report.refused.is_empty() {
        return Err(JobError::Refused(format!(
            "the database dump holds statements the instance's role may not run: {}",
            report.refused.join("; ")
        )));
    }
    services.archives.discard_scratch(&scratch_name).await?;
    Ok(())
}

/// Media uploads to the tenant's bucket, a bounded number at a time, started
/// from the blocking archive reader.
struct Uploads {
    runtime: Handle,
    media: ObjectStore,
    spool: PathBuf,
    permits: Arc<Semaphore>,
    running: JoinSet<Result<(), JobError>>,
    spooled: u64,
}

impl Uploads {
    fn start(&mut self, member: &mut Member<'_>) -> std::io::Result<()> {
        let key = member
            .path()
            .strip_prefix(&format!("{SYSTEM_DIR}/"))
            .unwrap_or(member.path())
            .to_owned();
        let permit = self
            .runtime
            .block_on(self.permits.clone().acquire_owned())
            .map_err(std::io::Error::other)?;
        let media = self.media.clone();
        if member.size() <= IN_MEMORY_OBJECT_BYTES {
            let mut body = Vec::with_capacity(usize::try_from(member.size()).unwrap_or(0));
            member.read_to_end(&mut body)?;
            self.running.spawn_on(
                async move {
                    let _permit = permit;
                    media.put(&key, body.into()).await.map_err(JobError::from)
                },
                &self.runtime,
            );
        } else {
            self.spooled += 1;
            let path = self.spool.join(format!("object-{}", self.spooled));
            let mut file = std::fs::File::create(&path)?;
            std::io::copy(member, &mut file)?;
            drop(file);
            self.running.spawn_on(
                async move {
                    let _permit = permit;
                    media.put_file(&key, &path).await?;
                    remove_spooled(&path).await
                },
                &self.runtime,
            );
        }
        // Report a failed upload early rather than after the whole archive.
        while let Some(done) = self.running.try_join_next() {
            flatten(done).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), JobError> {
        while let Some(done) = self.running.join_next().await {
            flatten(done)?;
        }
        Ok(())
    }
}

fn flatten(done: Result<Result<(), JobError>, tokio::task::JoinError>) -> Result<(), JobError> {
    done.map_err(|err| JobError::Scratch(format!("upload task: {err}")))?
}

async fn remove_spooled(path: &Path) -> Result<(), JobError> {
    tokio::fs::remove_file(path)
        .await
        .map_err(|err| JobError::Scratch(err.to_string()))
}
