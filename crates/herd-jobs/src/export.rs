//! Export: everything an instance is, as one archive of format v1.
//!
//! archive -> push (when the customer named a bucket) -> finish.
//!
//! The archive step dumps the database first, as the tenant's role, in one
//! snapshot (`pg_dump` runs in a single repeatable-read transaction), then
//! streams the media object by object and verifies the result. A crash
//! anywhere in it starts the step over in an empty scratch directory, and
//! the export is marked complete only after its archive was verified and
//! stored: an archive that does not verify is never offered.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use diesel_async::AsyncConnection;
use futures::StreamExt;
use herd_core::archive::{
    Consistency, ConsistencyMethod, DATABASE_PATH, Description, ENV_PATH, EnvFile, LeftOut,
    SYSTEM_DIR,
};
use herd_core::domain::Domain;
use herd_db::archives::{Export, ExportState, NewExport, PushTarget, StoredArchive};
use herd_db::audit::{Actor, AuditEntry};
use herd_db::instances::Instance;
use herd_db::jobs::JobId;
use herd_db::jobs::NewJob;
use herd_db::operations::{NewOperation, Operation};
use herd_kube::children::InstanceSecrets;
use herd_portability::{ArchiveWriter, WriteOptions};
use herd_tenancy::{ObjectStore, PgTools};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::io::SyncIoBridge;
use uuid::Uuid;

use crate::archives::{blocking, scratch_error};
use crate::resource::desired_resource;
use crate::steps::StepRunner;
use crate::{JobError, Services, tenant_data};

pub const KIND: &str = "export_instance";

/// How long a finished export stays downloadable.
const RETENTION_DAYS: i64 = 7;
/// How long the last export of an instance deleted for want of payment stays:
/// long enough for a customer who missed the notices to take their server along.
const FINAL_RETENTION_DAYS: i64 = 90;
/// A dump or an upload that failed on a restart of the database or the store
/// succeeds on a later attempt.
const ATTEMPTS: i32 = 5;
/// The remote media cache: copies of other servers' media Mastodon refetches.
const REMOTE_CACHE_PREFIX: &str = "cache/";
/// zstd's own default: most of an archive is media and a compressed dump,
/// which higher levels do not shrink further, only slow down.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportJob {
    pub instance_id: Uuid,
    pub operation_id: Uuid,
    pub export_id: Uuid,
    /// The last export of an instance whose retention ran out: it is kept
    /// longer, and the instance is deleted once it is complete.
    #[serde(default)]
    pub final_export: bool,
}

/// An export to start, as a customer or Herd asks for it.
pub struct StartExport<'a> {
    pub instance_id: Uuid,
    /// Who asked; `None` for Herd itself.
    pub requested_by: Option<Uuid>,
    pub compressed: bool,
    pub recipient: Option<&'a str>,
    pub push: Option<&'a PushTarget>,
    pub final_export: bool,
}

/// Records an export, its operation and its job in the caller's transaction.
pub async fn start(
    conn: &mut diesel_async::AsyncPgConnection,
    sealer: &herd_db::Sealer,
    request: StartExport<'_>,
) -> Result<(Export, Operation), JobError> {
    let export_id = Uuid::now_v7();
    let operation_id = Uuid::now_v7();
    let job = ExportJob {
        instance_id: request.instance_id,
        operation_id,
        export_id,
        final_export: request.final_export,
    };
    let job = herd_db::jobs::enqueue(
        conn,
        NewJob {
            kind: KIND,
            payload: serde_json::to_value(&job).expect("a job payload always serialises"),
            dedupe_key: Some(&format!("export:{export_id}")),
            max_attempts: ATTEMPTS,
        },
    )
    .await?;
    let steps: &[&str] = if request.push.is_some() {
        &["archive", "push", "finish"]
    } else {
        &["archive", "finish"]
    };
    let operation = herd_db::operations::create_operation(
        conn,
        NewOperation {
            id: operation_id,
            instance_id: request.instance_id,
            kind: "export",
            steps,
            started_by: request.requested_by,
            job_id: Some(job.0),
        },
    )
    .await?;
    let export = herd_db::archives::create_export(
        conn,
        sealer,
        NewExport {
            id: export_id,
            instance_id: request.instance_id,
            operation_id,
            requested_by: request.requested_by,
            compressed: request.compressed,
            recipient: request.recipient,
            push: request.push,
        },
    )
    .await?;
    Ok((export, operation))
}

pub async fn run(services: &Services, job: JobId, payload: &ExportJob) -> Result<(), JobError> {
    let mut steps = StepRunner::resume(services, KIND, job, payload.operation_id).await?;
    let (instance, export) = {
        let mut conn = services.conn().await?;
        let instance = herd_db::instances::load_instance(&mut conn, payload.instance_id)
            .await?
            .ok_or(JobError::MissingInstance(payload.instance_id))?;
        let export = herd_db::archives::load_export(&mut conn, payload.export_id)
            .await?
            .ok_or_else(|| JobError::Payload(format!("export {} is gone", payload.export_id)))?;
        herd_db::archives::set_export_state(&mut conn, export.id, ExportState::Running).await?;
        (instance, export)
    };
    let stored = steps
        .step("archive", || write_archive(services, &instance, &export))
        .await?;
    if export.push {
        steps
            .step("push", || push(services, &export, &stored))
            .await?;
    }
    steps
        .step("finish", || {
            finish(services, &export, &stored, payload.final_export)
        })
        .await?;
    let mut conn = services.conn().await?;
    herd_db::operations::finish_operation(&mut conn, payload.operation_id, None).await?;
    Ok(())
}

/// The name of the export's scratch directory.
fn scratch_name(export: &Export) -> String {
    format!("export-{}", export.id)
}

async fn write_archive(
    services: &Services,
    instance: &Instance,
    export: &Export,
) -> Result<StoredArchive, JobError> {
    let Some(store_id) = instance.object_store_id else {
        return Err(JobError::Refused(format!(
            "instance {} has no data to export yet",
            instance.id
        )));
    };
    let dir = services.archives.scratch(&scratch_name(export)).await?;
    let tenant = tenant_data::connect(services, instance).await?;
    let environment = environment(services, instance, &tenant.secrets).await?;

    // The consistency point: the dump's snapshot is taken right after.
    let created_at = Utc::now();
    let dump_path = dir.join(DATABASE_PATH);
    let mut dump_file = tokio::fs::File::create(&dump_path)
        .await
        .map_err(scratch_error)?;
    PgTools::default()
        .dump(&tenant.credentials, &mut dump_file)
        .await?;
    drop(dump_file);
    let schema_migration_version =
        herd_tenancy::schema_migration_version(&tenant.credentials).await?;

    let mut objects = tenant.media.list_objects("").await?;
    objects.retain(|object| !object.key.starts_with(REMOTE_CACHE_PREFIX));
    let description = Description {
        herd_version: env!("CARGO_PKG_VERSION").to_owned(),
        local_domain: parse_domain(&instance.domain)?,
        web_domain: parse_domain(&instance.web_domain)?,
        mastodon_version: instance.version.parse().map_err(|err| {
            JobError::Payload(format!("stored version {}: {err}", instance.version))
        })?,
        schema_migration_version: schema_migration_version.unwrap_or_default(),
        created_at: created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        consistency: Consistency {
            method: ConsistencyMethod::Snapshot,
            detail: format!(
                "database: one pg_dump snapshot taken at {}; media: read after it, while the \
                 server ran",
                created_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        },
        left_out: vec![LeftOut::remote_media_cache(), LeftOut::home_feeds()],
    };

    let recipient = export
        .recipient
        .as_deref()
        .map(herd_portability::parse_recipient)
        .transpose()?;
    let file_name = file_name(instance, export, created_at);
    let plain_path = dir.join("archive.tar");
    let media = tenant.media.clone();
    let options = WriteOptions {
        zstd_level: export.compressed.then_some(ZSTD_LEVEL),
        recipient: None,
        mtime: u64::try_from(created_at.timestamp()).unwrap_or_default(),
    };
    let runtime = tokio::runtime::Handle::current();
    let mut fetched = fetch_ahead(media, objects);
    let written = plain_path.clone();
    blocking(move || {
        let output = BufWriter::new(std::fs::File::create(&written).map_err(scratch_error)?);
        let mut writer = ArchiveWriter::new(output, &options)?;
        let dump_size = std::fs::metadata(&dump_path).map_err(scratch_error)?.len();
        let dump = std::fs::File::open(&dump_path).map_err(scratch_error)?;
        writer.add_file(DATABASE_PATH, dump_size, dump)?;
        writer.add_bytes(ENV_PATH, environment.render().as_bytes())?;
        while let Some(object) = fetched.blocking_recv() {
            let Some((key, body)) = object? else {
                continue;
            };
            let path = format!("{SYSTEM_DIR}/{key}");
            match body {
                Fetched::Whole(bytes) => writer.add_bytes(&path, &bytes)?,
                Fetched::Streaming(size, body) => writer.add_file(
                    &path,
                    size,
                    SyncIoBridge::new_with_handle(body, runtime.clone()),
                )?,
            };
        }
        let (_, output) = writer.finish(description)?;
        let file = output
            .into_inner()
            .map_err(|err| scratch_error(err.into_error()))?;
        file.sync_all().map_err(scratch_error)?;
        std::fs::remove_file(&dump_path).map_err(scratch_error)?;
        Ok(())
    })
    .await?;

    let verified = plain_path.clone();
    let final_path = dir.join(&file_name);
    let sealed = final_path.clone();
    let (size, sha256) = blocking(move || {
        herd_portability::verify(&verified, None)?;
        match recipient {
            None => {
                std::fs::rename(&verified, &sealed).map_err(scratch_error)?;
                digest_file(&sealed)
            }
            Some(recipient) => encrypt_file(&verified, &sealed, &recipient),
        }
    })
    .await?;

    let object_key = format!("exports/{}/{file_name}", export.id);
    services
        .archives
        .bucket(store_id)
        .await?
        .put_file(&object_key, &final_path)
        .await?;
    services
        .archives
        .discard_scratch(&scratch_name(export))
        .await?;
    Ok(StoredArchive {
        object_store_id: store_id,
        object_key,
        file_name,
        size,
        sha256,
    })
}

/// Objects fetched while earlier ones are written: one GET at a time would
/// spend most of an export waiting for the store's answers.
const FETCHES_IN_FLIGHT: usize = 16;
/// Objects up to this size are read whole; larger ones stream when their
/// turn comes. With the fetches in flight, bounds the memory held.
const WHOLE_OBJECT_BYTES: u64 = 1024 * 1024;

/// An object's content as the writer takes it.
enum Fetched {
    Whole(bytes::Bytes),
    Streaming(u64, Box<dyn tokio::io::AsyncRead + Send + Unpin>),
}

/// The objects' contents in listing order, fetched ahead on the runtime.
/// An object deleted since the listing comes as `None`: it went with a
/// status deleted after the snapshot, and nothing refers to it any more.
fn fetch_ahead(
    media: ObjectStore,
    objects: Vec<herd_tenancy::StoredObject>,
) -> tokio::sync::mpsc::Receiver<Result<Option<(String, Fetched)>, JobError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(FETCHES_IN_FLIGHT);
    tokio::spawn(async move {
        let mut fetches = futures::stream::iter(objects)
            .map(|object| fetch(media.clone(), object))
            .buffered(FETCHES_IN_FLIGHT);
        while let Some(fetched) = fetches.next().await {
            let failed = fetched.is_err();
            if sender.send(fetched).await.is_err() || failed {
                return;
            }
        }
    });
    receiver
}

async fn fetch(
    media: ObjectStore,
    object: herd_tenancy::StoredObject,
) -> Result<Option<(String, Fetched)>, JobError> {
    let fetched = if object.size <= WHOLE_OBJECT_BYTES {
        media.get(&object.key).await.map(Fetched::Whole)
    } else {
        media
            .get_reader(&object.key)
            .await
            .map(|(size, body)| Fetched::Streaming(size, Box::new(body)))
    };
    match fetched {
        Ok(body) => Ok(Some((object.key, body))),
        Err(herd_tenancy::TenancyError::Rejected { status: 404, .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// `social.example-20261123T140000Z.tar.zst.age`: what it is, from when, and
/// which layers to take off.
fn file_name(instance: &Instance, export: &Export, created_at: DateTime<Utc>) -> String {
    let mut name = format!(
        "{}-{}.tar",
        instance.domain,
        created_at.format("%Y%m%dT%H%M%SZ")
    );
    if export.compressed {
        name.push_str(".zst");
    }
    if export.recipient.is_some() {
        name.push_str(".age");
    }
    name
}

fn parse_domain(stored: &str) -> Result<Domain, JobError> {
    Domain::parse(stored).map_err(|err| JobError::Payload(format!("stored domain {stored}: {err}")))
}

/// The instance's `.env.production` as its processes see it.
async fn environment(
    services: &Services,
    instance: &Instance,
    secrets: &std::collections::BTreeMap<String, String>,
) -> Result<EnvFile, JobError> {
    let resource = desired_resource(services, instance).await?;
    let environment = herd_kube::manifests::environment(
        &resource,
        &InstanceSecrets {
            env: secrets.clone(),
        },
        &services.profile,
    );
    EnvFile::from_pairs(environment).map_err(|err| JobError::Payload(err.to_string()))
}

/// Copies the stored archive to the customer's bucket.
async fn push(
    services: &Services,
    export: &Export,
    stored: &StoredArchive,
) -> Result<(), JobError> {
    let target = {
        let mut conn = services.conn().await?;
        herd_db::archives::load_push_target(&mut conn, &services.sealer, export.id).await?
    };
    let Some(target) = target else {
        return Ok(());
    };
    let destination = ObjectStore::new(
        &target.endpoint,
        &target.region,
        &target.bucket,
        &herd_tenancy::AccessKey {
            access_key_id: target.access_key_id.clone(),
            secret_access_key: target.secret_access_key.clone(),
        },
    )?;
    let (size, body) = services
        .archives
        .bucket(stored.object_store_id)
        .await?
        .get_reader(&stored.object_key)
        .await?;
    let key = target.key.as_deref().unwrap_or(&stored.file_name);
    destination.put_reader(key, size, body).await?;
    Ok(())
}

async fn finish(
    services: &Services,
    export: &Export,
    stored: &StoredArchive,
    final_export: bool,
) -> Result<(), JobError> {
    let days = if final_export {
        FINAL_RETENTION_DAYS
    } else {
        RETENTION_DAYS
    };
    let expires_at = Utc::now() + chrono::Duration::days(days);
    let (id, instance_id, requested_by) = (export.id, export.instance_id, export.requested_by);
    let stored = stored.clone();
    let mut conn = services.conn().await?;
    conn.transaction::<_, JobError, _>(async move |conn| {
        herd_db::archives::complete_export(conn, id, &stored, expires_at).await?;
        let facts = json!({
            "export_id": id,
            "instance_id": instance_id,
            "requested_by": requested_by,
            "size": stored.size,
            "sha256": stored.sha256,
        });
        herd_db::outbox::publish(conn, "export.completed", facts.clone()).await?;
        herd_db::audit::record(
            conn,
            AuditEntry {
                actor: Actor::System("exporter"),
                action: "instance.export.completed",
                object_kind: "instance",
                object_id: instance_id.to_string(),
                details: facts,
            },
        )
        .await?;
        if final_export {
            crate::delete::request(
                conn,
                instance_id,
                "billing",
                "instance.retention_expired",
                json!({ "final_export_id": id }),
            )
            .await?;
        }
        Ok(())
    })
    .await
}

/// Size and SHA-256 of a file, as the download will be checked against.
fn digest_file(path: &Path) -> Result<(u64, String), JobError> {
    let mut file = std::fs::File::open(path).map_err(scratch_error)?;
    let mut hasher = HashingWriter::around(std::io::sink());
    std::io::copy(&mut file, &mut hasher).map_err(scratch_error)?;
    Ok(hasher.finish())
}

/// Encrypts the verified archive to the customer's recipient; the plain
/// copy is removed at once.
fn encrypt_file(
    plain: &PathBuf,
    sealed: &PathBuf,
    recipient: &herd_portability::Recipient,
) -> Result<(u64, String), JobError> {
    let output = std::fs::File::create(sealed).map_err(scratch_error)?;
    let mut hashing = HashingWriter::around(BufWriter::new(output));
    let mut input = std::fs::File::open(plain).map_err(scratch_error)?;
    herd_portability::encrypt(&mut input as &mut dyn Read, &mut hashing, recipient)?;
    hashing.flush().map_err(scratch_error)?;
    std::fs::remove_file(plain).map_err(scratch_error)?;
    Ok(hashing.finish())
}

/// Counts and hashes what passes through to an optional inner writer.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn around(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(self) -> (u64, String) {
        let digest = self.hasher.finalize();
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        (self.size, hex)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
