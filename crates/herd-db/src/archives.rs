//! Archives in the database: the bucket Herd keeps them in on each object
//! store, and the exports customers asked for.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::accounts::Principal;
use crate::schema::{archive_buckets, exports, instances};
use crate::{DbError, Sealer};

/// Herd's archive bucket on one object store, with its own key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveBucket {
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for ArchiveBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveBucket")
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn archive_bucket_context(object_store_id: Uuid) -> String {
    format!("archive_bucket:{object_store_id}")
}

/// The store's archive bucket as first recorded: `proposed` is kept only if
/// none was recorded before, so concurrent callers all end with one bucket.
pub async fn keep_archive_bucket(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    object_store_id: Uuid,
    proposed: &ArchiveBucket,
) -> Result<ArchiveBucket, DbError> {
    let plaintext = serde_json::to_vec(proposed).expect("an archive bucket always serialises");
    let sealed = sealer.seal(&plaintext, &archive_bucket_context(object_store_id))?;
    diesel::insert_into(archive_buckets::table)
        .values((
            archive_buckets::object_store_id.eq(object_store_id),
            archive_buckets::bucket.eq(&proposed.bucket),
            archive_buckets::access_key_sealed.eq(sealed),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    load_archive_bucket(conn, sealer, object_store_id)
        .await?
        .ok_or(DbError::Query(diesel::result::Error::NotFound))
}

pub async fn load_archive_bucket(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    object_store_id: Uuid,
) -> Result<Option<ArchiveBucket>, DbError> {
    let sealed: Option<Vec<u8>> = archive_buckets::table
        .find(object_store_id)
        .select(archive_buckets::access_key_sealed)
        .first(conn)
        .await
        .optional()?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let plaintext = sealer.open(&sealed, &archive_bucket_context(object_store_id))?;
    serde_json::from_slice(&plaintext)
        .map(Some)
        .map_err(|err| DbError::Corrupt {
            what: "archive bucket",
            message: err.to_string(),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportState {
    Pending,
    Running,
    Complete,
    Failed,
    Expired,
}

impl ExportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportState::Pending => "pending",
            ExportState::Running => "running",
            ExportState::Complete => "complete",
            ExportState::Failed => "failed",
            ExportState::Expired => "expired",
        }
    }

    fn parse(stored: &str) -> Result<Self, DbError> {
        Ok(match stored {
            "pending" => ExportState::Pending,
            "running" => ExportState::Running,
            "complete" => ExportState::Complete,
            "failed" => ExportState::Failed,
            "expired" => ExportState::Expired,
            other => {
                return Err(DbError::Corrupt {
                    what: "export state",
                    message: other.to_owned(),
                });
            }
        })
    }
}

/// Where a finished archive is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArchive {
    pub object_store_id: Uuid,
    pub object_key: String,
    /// The name a download is saved under.
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub operation_id: Uuid,
    /// `None` when Herd made it (the final export before a deletion).
    pub requested_by: Option<Uuid>,
    pub state: ExportState,
    pub compressed: bool,
    pub recipient: Option<String>,
    pub push: bool,
    pub archive: Option<StoredArchive>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = exports)]
struct ExportRow {
    id: Uuid,
    instance_id: Uuid,
    operation_id: Uuid,
    requested_by: Option<Uuid>,
    state: String,
    compressed: bool,
    recipient: Option<String>,
    push_sealed: Option<Vec<u8>>,
    object_store_id: Option<Uuid>,
    object_key: Option<String>,
    file_name: Option<String>,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

impl TryFrom<ExportRow> for Export {
    type Error = DbError;

    fn try_from(row: ExportRow) -> Result<Self, DbError> {
        let archive = match (
            row.object_store_id,
            row.object_key,
            row.file_name,
            row.size_bytes,
            row.sha256,
        ) {
            (
                Some(object_store_id),
                Some(object_key),
                Some(file_name),
                Some(size),
                Some(sha256),
            ) => Some(StoredArchive {
                object_store_id,
                object_key,
                file_name,
                size: u64::try_from(size).unwrap_or_default(),
                sha256,
            }),
            _ => None,
        };
        Ok(Export {
            state: ExportState::parse(&row.state)?,
            id: row.id,
            instance_id: row.instance_id,
            operation_id: row.operation_id,
            requested_by: row.requested_by,
            compressed: row.compressed,
            recipient: row.recipient,
            push: row.push_sealed.is_some(),
            archive,
            created_at: row.created_at,
            completed_at: row.completed_at,
            expires_at: row.expires_at,
        })
    }
}

/// A customer's own S3 bucket a finished archive is copied to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTarget {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// The object key; the archive's file name when absent.
    pub key: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTarget")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn push_context(export_id: Uuid) -> String {
    format!("export_push:{export_id}")
}

pub struct NewExport<'a> {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub operation_id: Uuid,
    pub requested_by: Option<Uuid>,
    pub compressed: bool,
    pub recipient: Option<&'a str>,
    pub push: Option<&'a PushTarget>,
}

pub async fn create_export(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    new: NewExport<'_>,
) -> Result<Export, DbError> {
    let push_sealed = new
        .push
        .map(|target| {
            let plaintext = serde_json::to_vec(target).expect("a push target always serialises");
            sealer.seal(&plaintext, &push_context(new.id))
        })
        .transpose()?;
    diesel::insert_into(exports::table)
        .values((
            exports::id.eq(new.id),
            exports::instance_id.eq(new.instance_id),
            exports::operation_id.eq(new.operation_id),
            exports::requested_by.eq(new.requested_by),
            exports::compressed.eq(new.compressed),
            exports::recipient.eq(new.recipient),
            exports::push_sealed.eq(push_sealed),
        ))
        .returning(ExportRow::as_returning())
        .get_result(conn)
        .await?
        .try_into()
}

/// One export, if the principal may see its instance.
pub async fn find_export(
    conn: &mut AsyncPgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<Option<Export>, DbError> {
    let mut query = exports::table
        .inner_join(instances::table)
        .filter(exports::id.eq(id))
        .into_boxed();
    if let Some(owner) = principal.owner_filter() {
        query = query.filter(instances::owner_id.eq(owner));
    }
    query
        .select(ExportRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Export::try_from)
        .transpose()
}

/// The instance's exports, newest first.
pub async fn list_exports(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
) -> Result<Vec<Export>, DbError> {
    exports::table
        .filter(exports::instance_id.eq(instance_id))
        .order(exports::created_at.desc())
        .select(ExportRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(Export::try_from)
        .collect()
}

pub async fn load_export(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<Export>, DbError> {
    exports::table
        .find(id)
        .select(ExportRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Export::try_from)
        .transpose()
}

pub async fn load_push_target(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    id: Uuid,
) -> Result<Option<PushTarget>, DbError> {
    let sealed: Option<Option<Vec<u8>>> = exports::table
        .find(id)
        .select(exports::push_sealed)
        .first(conn)
        .await
        .optional()?;
    let Some(sealed) = sealed.flatten() else {
        return Ok(None);
    };
    let plaintext = sealer.open(&sealed, &push_context(id))?;
    serde_json::from_slice(&plaintext)
        .map(Some)
        .map_err(|err| DbError::Corrupt {
            what: "export push target",
            message: err.to_string(),
        })
}

pub async fn set_export_state(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    state: ExportState,
) -> Result<(), DbError> {
    diesel::update(exports::table.find(id))
        .set(exports::state.eq(state.as_str()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the finished archive; it is downloadable until `expires_at`.
pub async fn complete_export(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    archive: &StoredArchive,
    expires_at: DateTime<Utc>,
) -> Result<(), DbError> {
    diesel::update(exports::table.find(id))
        .set((
            exports::state.eq(ExportState::Complete.as_str()),
            exports::object_store_id.eq(archive.object_store_id),
            exports::object_key.eq(&archive.object_key),
            exports::file_name.eq(&archive.file_name),
            exports::size_bytes.eq(i64::try_from(archive.size).unwrap_or(i64::MAX)),
            exports::sha256.eq(&archive.sha256),
            exports::completed_at.eq(diesel::dsl::now),
            exports::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Complete exports whose time is up, oldest first.
pub async fn expired_exports(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<Export>, DbError> {
    exports::table
        .filter(exports::state.eq(ExportState::Complete.as_str()))
        .filter(exports::expires_at.lt(diesel::dsl::now))
        .order(exports::expires_at)
        .limit(limit)
        .select(ExportRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(Export::try_from)
        .collect()
}
