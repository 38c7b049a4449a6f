//! Archive format v1: the manifest, the rules every member path obeys, the
//! `.env.production` file and the limits a reader enforces.
//!
//! An archive crosses a trust boundary in both directions: customers take it
//! to any host, and Herd imports archives made anywhere. So everything here
//! is a check that refuses early with an error naming the exact fault, and
//! nothing here touches a file: the streaming belongs to `herd-portability`.
//! `docs/export-format.md` is the specification these rules implement.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::Domain;
use crate::version::MastodonVersion;

/// The format version this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

pub const MANIFEST_PATH: &str = "manifest.json";
pub const DATABASE_PATH: &str = "database.dump";
pub const ENV_PATH: &str = "env.production";
pub const RESTORE_PATH: &str = "RESTORE.md";
/// The media tree, laid out as Mastodon's `public/system` (and its bucket).
pub const SYSTEM_DIR: &str = "system";

/// Longest member path in bytes: far above Mastodon's longest media key, far
/// below what would let a manifest of `max_files` entries exhaust memory.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest path segment: what common file systems accept.
pub const MAX_SEGMENT_BYTES: usize = 255;
/// `env.production` is read whole, so it has a small bound of its own.
pub const MAX_ENV_BYTES: u64 = 64 * 1024;
/// Manifest bytes allowed per listed file (a maximal path plus its size and
/// digest in JSON), used to bound the manifest by the file-count limit.
const MANIFEST_BYTES_PER_FILE: u64 = MAX_PATH_BYTES as u64 + 256;
/// Manifest bytes allowed besides the file list.
const MANIFEST_BASE_BYTES: u64 = 64 * 1024;
/// Decompressed bytes a reader accepts before the ratio limit applies: the
/// first blocks of any archive (tar headers, a small manifest) compress far
/// better than the whole, and a bomb is still stopped after this much.
pub const RATIO_GRACE_BYTES: u64 = 1024 * 1024;

/// What a member path designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    Manifest,
    Database,
    Env,
    Restore,
    /// A file below `system/`.
    Media,
}

impl MemberKind {
    /// Whether a member of this kind must be present in every archive.
    pub fn is_required(self) -> bool {
        !matches!(self, MemberKind::Media)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("`{0}` is absolute; member paths are relative to the archive root")]
    Absolute(String),
    #[error("`{0}` contains `..`, which could escape the restore directory")]
    ParentSegment(String),
    #[error("`{0}` contains `.` as a segment")]
    CurrentSegment(String),
    #[error("`{0}` contains an empty segment (`//` or a trailing `/`)")]
    EmptySegment(String),
    #[error("`{0}` contains a backslash, which some systems read as a separator")]
    Backslash(String),
    #[error("the path contains a NUL or control character")]
    ControlCharacter,
    #[error("the path is {0} bytes long; at most {MAX_PATH_BYTES} are allowed")]
    TooLong(usize),
    #[error("`{0}` has a segment longer than {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong(String),
    #[error(
        "`{0}` is not a member of format v1 (manifest.json, database.dump, env.production, RESTORE.md or system/...)"
    )]
    UnknownEntry(String),
}

/// Checks a member path and tells what it designates.
///
/// Paths are compared byte for byte: there is no normalisation, so two
/// spellings of one file cannot both pass.
pub fn check_member_path(path: &str) -> Result<MemberKind, PathError> {
    check_path_shape(path)?;
    match path {
        MANIFEST_PATH => Ok(MemberKind::Manifest),
        DATABASE_PATH => Ok(MemberKind::Database),
        ENV_PATH => Ok(MemberKind::Env),
        RESTORE_PATH => Ok(MemberKind::Restore),
        _ => match path.split_once('/') {
            Some((SYSTEM_DIR, _)) => Ok(MemberKind::Media),
            _ => Err(PathError::UnknownEntry(path.to_owned())),
        },
    }
}

/// Checks the path of a directory entry. Directories carry nothing (they are
/// not listed in the manifest) but `tar` of a `public/system` tree writes
/// them, so they are accepted at `system` and below.
pub fn check_directory_path(path: &str) -> Result<(), PathError> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    check_path_shape(trimmed)?;
    if trimmed == SYSTEM_DIR || trimmed.starts_with("system/") {
        Ok(())
    } else {
        Err(PathError::UnknownEntry(path.to_owned()))
    }
}

fn check_path_shape(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(path.len()));
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash(path.to_owned()));
    }
    // `C:` would be absolute on Windows even without a leading separator.
    let drive =
        path.len() >= 2 && path.as_bytes()[1] == b':' && path.as_bytes()[0].is_ascii_alphabetic();
    if path.starts_with('/') || drive {
        return Err(PathError::Absolute(path.to_owned()));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment(path.to_owned())),
            "." => return Err(PathError::CurrentSegment(path.to_owned())),
            ".." => return Err(PathError::ParentSegment(path.to_owned())),
            _ if segment.len() > MAX_SEGMENT_BYTES => {
                return Err(PathError::SegmentTooLong(path.to_owned()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One file of the archive as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, 64 lowercase hex digits.
    pub sha256: String,
}

/// How the archive's point in time was obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    pub method: ConsistencyMethod,
    /// What a person needs to judge the point in time, e.g. the snapshot's
    /// name or the maintenance window's start and end.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyMethod {
    /// Database and media were read from one snapshot while the server ran.
    Snapshot,
    /// The server was stopped while database and media were read.
    MaintenanceWindow,
}

impl fmt::Display for ConsistencyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsistencyMethod::Snapshot => "snapshot",
            ConsistencyMethod::MaintenanceWindow => "maintenance_window",
        })
    }
}

/// Something deliberately not in the archive, and how the restored server
/// gets it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The path it would have had, e.g. `system/cache/`.
    pub path: String,
    pub reason: String,
    pub rebuild: String,
}

impl LeftOut {
    /// The remote media cache: copies of other servers' media, which
    /// Mastodon refetches on demand.
    pub fn remote_media_cache() -> Self {
        LeftOut {
            path: "system/cache/".to_owned(),
            reason: "copies of media from other servers; often most of the bucket".to_owned(),
            rebuild: "refetched on demand when viewed; `tootctl media refresh` refetches ahead"
                .to_owned(),
        }
    }

    /// Home feeds live in Redis, which is not part of a backup.
    pub fn home_feeds() -> Self {
        LeftOut {
            path: "redis".to_owned(),
            reason: "home and list feeds are kept in Redis, derived from the database".to_owned(),
            rebuild: "`tootctl feeds build` after the restore".to_owned(),
        }
    }
}

/// Everything the manifest says besides the file list: what the archive is
/// of, and when and how it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The version of the Herd (or other tool) that wrote the archive.
    pub herd_version: String,
    pub local_domain: Domain,
    pub web_domain: Domain,
    pub mastodon_version: MastodonVersion,
    /// The newest row of Mastodon's `schema_migrations` table, e.g.
    /// 20250728104413: the restoring side needs the same or a newer schema.
    pub schema_migration_version: u64,
    /// RFC 3339 (`2026-11-23T14:00:00Z`); the caller owns the clock.
    pub created_at: String,
    pub consistency: Consistency,
    pub left_out: Vec<LeftOut>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    #[serde(flatten)]
    pub description: Description,
    /// Every member except `manifest.json` itself, in archive order.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    #[error("manifest.json is not JSON: {0}")]
    Json(String),
    #[error("manifest.json has no numeric format_version")]
    NoVersion,
    #[error(
        "the archive is format version {0}, newer than version {FORMAT_VERSION} which this Herd reads; use a newer Herd"
    )]
    FutureVersion(u32),
    #[error("the archive claims format version 0, which never existed")]
    ZeroVersion,
    #[error("manifest.json does not fit format v{FORMAT_VERSION}: {0}")]
    Invalid(String),
    #[error("created_at `{0}` is not an RFC 3339 time like 2026-11-23T14:00:00Z")]
    CreatedAt(String),
    #[error("the manifest lists `{path}`: {error}")]
    Path { path: String, error: PathError },
    #[error("the manifest lists `{0}` twice")]
    Duplicate(String),
    #[error("the manifest lists manifest.json itself")]
    ListsItself,
    #[error("the manifest does not list {0}, which every archive holds")]
    MissingRequired(&'static str),
    #[error("the sha256 of `{0}` is not 64 lowercase hex digits")]
    Digest(String),
}

impl Manifest {
    pub fn new(description: Description, files: Vec<FileEntry>) -> Self {
        Manifest {
            format_version: FORMAT_VERSION,
            description,
            files,
        }
    }

    /// Parses and validates `manifest.json`. The version is read before the
    /// rest, so a future archive is named as such instead of failing on a
    /// field it renamed.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Probe {
            format_version: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        let version = probe
            .format_version
            .and_then(|v| v.as_u64())
            .ok_or(ManifestError::NoVersion)?;
        match u32::try_from(version) {
            Ok(0) => return Err(ManifestError::ZeroVersion),
            Ok(FORMAT_VERSION) => {}
            Ok(future) => return Err(ManifestError::FutureVersion(future)),
            Err(_) => return Err(ManifestError::FutureVersion(u32::MAX)),
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        json.push(b'\n');
        json
    }

    /// Checks what the types cannot: the time's shape, every listed path, no
    /// duplicates, the required members, the digests.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ManifestError::FutureVersion(self.format_version));
        }
        if !is_rfc3339(&self.description.created_at) {
            return Err(ManifestError::CreatedAt(
                self.description.created_at.clone(),
            ));
        }
        let mut seen = HashSet::with_capacity(self.files.len());
        let mut kinds = HashSet::new();
        for file in &self.files {
            let kind = check_member_path(&file.path).map_err(|error| ManifestError::Path {
                path: file.path.clone(),
                error,
            })?;
            if kind == MemberKind::Manifest {
                return Err(ManifestError::ListsItself);
            }
            if !seen.insert(file.path.as_str()) {
                return Err(ManifestError::Duplicate(file.path.clone()));
            }
            if !is_sha256_hex(&file.sha256) {
                return Err(ManifestError::Digest(file.path.clone()));
            }
            kinds.insert(kind);
        }
        for (kind, path) in [
            (MemberKind::Database, DATABASE_PATH),
            (MemberKind::Env, ENV_PATH),
            (MemberKind::Restore, RESTORE_PATH),
        ] {
            if !kinds.contains(&kind) {
                return Err(ManifestError::MissingRequired(path));
            }
        }
        Ok(())
    }
}

fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` with plausible field ranges.
fn is_rfc3339(text: &str) -> bool {
    fn number(text: &str, range: std::ops::RangeInclusive<u32>) -> bool {
        text.bytes().all(|b| b.is_ascii_digit())
            && text.parse::<u32>().is_ok_and(|n| range.contains(&n))
    }
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !matches!(bytes[10], b'T' | b't') {
        return false;
    }
    let (date, rest) = text.split_at(10);
    let (time, mut offset) = rest[1..].split_at(8);
    let date_ok = date.as_bytes()[4] == b'-'
        && date.as_bytes()[7] == b'-'
        && number(&date[..4], 0..=9999)
        && number(&date[5..7], 1..=12)
        && number(&date[8..10], 1..=31);
    let time_ok = time.as_bytes()[2] == b':'
        && time.as_bytes()[5] == b':'
        && number(&time[..2], 0..=23)
        && number(&time[3..5], 0..=59)
        && number(&time[6..8], 0..=60);
    if let Some(fraction) = offset.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        offset = &fraction[digits..];
    }
    let offset_ok = matches!(offset, "Z" | "z")
        || (offset.len() == 6
            && matches!(offset.as_bytes()[0], b'+' | b'-')
            && offset.as_bytes()[3] == b':'
            && number(&offset[1..3], 0..=23)
            && number(&offset[4..6], 0..=59));
    date_ok && time_ok && offset_ok
}

/// How much a reader accepts. Memory grows with `max_files` (one path and
/// digest per file until the manifest is checked), never with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sum of all member sizes.
    pub max_total_bytes: u64,
    /// Size of any one member.
    pub max_file_bytes: u64,
    /// Number of members, directories included.
    pub max_files: u64,
    /// Decompressed bytes per compressed byte, over the whole stream.
    pub max_ratio: u64,
}

impl Default for Limits {
    /// Sized for the largest instance a plan offers, with room: 1 TiB in all,
    /// 256 GiB for one file (the database dump), a million files. A ratio of
    /// 200 passes any real archive (the dump and the media are compressed
    /// already; tar headers of tiny files compress about 30 to 1).
    fn default() -> Self {
        Limits {
            max_total_bytes: 1 << 40,
            max_file_bytes: 256 << 30,
            max_files: 1_000_000,
            max_ratio: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitError {
    #[error("`{path}` is {size} bytes; at most {limit} are allowed for one file")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("the members add up to more than {limit} bytes")]
    TotalTooLarge { limit: u64 },
    #[error("the archive has more than {limit} members")]
    TooManyFiles { limit: u64 },
    #[error(
        "{decompressed} bytes came out of {compressed} compressed bytes, a ratio over {limit}: refusing a likely compression bomb"
    )]
    Ratio {
        compressed: u64,
        decompressed: u64,
        limit: u64,
    },
    #[error("`{path}` is {size} bytes; at most {limit} are read for it")]
    SmallFileTooLarge { path: String, size: u64, limit: u64 },
}

impl Limits {
    /// Checks a member's declared size against the per-file limit and the
    /// running total (`total_before` excludes this member).
    pub fn check_member(&self, path: &str, size: u64, total_before: u64) -> Result<(), LimitError> {
        if size > self.max_file_bytes {
            return Err(LimitError::FileTooLarge {
                path: path.to_owned(),
                size,
                limit: self.max_file_bytes,
            });
        }
        if total_before.saturating_add(size) > self.max_total_bytes {
            return Err(LimitError::TotalTooLarge {
                limit: self.max_total_bytes,
            });
        }
        Ok(())
    }

    /// Checks the number of members seen so far, this one included.
    pub fn check_count(&self, count: u64) -> Result<(), LimitError> {
        if count > self.max_files {
            Err(LimitError::TooManyFiles {
                limit: self.max_files,
            })
        } else {
            Ok(())
        }
    }

    /// Checks the decompression ratio so far. Called as bytes come out of
    /// the decompressor, it stops a bomb after at most
    /// `max(RATIO_GRACE_BYTES, max_ratio * compressed)` bytes.
    pub fn check_ratio(&self, compressed: u64, decompressed: u64) -> Result<(), LimitError> {
        let allowed = compressed
            .saturating_mul(self.max_ratio)
            .max(RATIO_GRACE_BYTES);
        if decompressed > allowed {
            Err(LimitError::Ratio {
                compressed,
                decompressed,
                limit: self.max_ratio,
            })
        } else {
            Ok(())
        }
    }

    /// The most bytes `manifest.json` may have: enough to list `max_files`
    /// files of the longest path.
    pub fn max_manifest_bytes(&self) -> u64 {
        MANIFEST_BASE_BYTES.saturating_add(self.max_files.saturating_mul(MANIFEST_BYTES_PER_FILE))
    }

    /// Checks a member that is read whole into memory.
    pub fn check_small_file(
        &self,
        kind: MemberKind,
        path: &str,
        size: u64,
    ) -> Result<(), LimitError> {
        let limit = match kind {
            MemberKind::Manifest => self.max_manifest_bytes(),
            MemberKind::Env => MAX_ENV_BYTES,
            _ => return Ok(()),
        };
        if size > limit {
            Err(LimitError::SmallFileTooLarge {
                path: path.to_owned(),
                size,
                limit,
            })
        } else {
            Ok(())
        }
    }
}

/// Keys of `.env.production` an archive carries to the next host: the
/// instance's identity, the secrets that must never change (losing them logs
/// everybody out and makes encrypted columns unreadable), and settings that
/// shape the server's behaviour rather than where it runs.
pub const ENV_ALLOWED_KEYS: &[&str] = &[
    // Identity: never changeable after first boot.
    "LOCAL_DOMAIN",
    "WEB_DOMAIN",
    "ALTERNATE_DOMAINS",
    // Secrets.
    "SECRET_KEY_BASE",
    "OTP_SECRET",
    "VAPID_PRIVATE_KEY",
    "VAPID_PUBLIC_KEY",
    "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY",
    "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT",
    "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY",
    // Behaviour.
    "SINGLE_USER_MODE",
    "DEFAULT_LOCALE",
    "AUTHORIZED_FETCH",
    "LIMITED_FEDERATION_MODE",
    "DISALLOW_UNAUTHENTICATED_API_ACCESS",
    "EMAIL_DOMAIN_ALLOWLIST",
    "EMAIL_DOMAIN_DENYLIST",
    "IP_RETENTION_PERIOD",
    "SESSION_RETENTION_PERIOD",
    "MAX_REQUEST_POOL_SIZE",
    // The customer's own accounts at third-party services.
    "DEEPL_API_KEY",
    "DEEPL_PLAN",
    "LIBRE_TRANSLATE_ENDPOINT",
    "LIBRE_TRANSLATE_API_KEY",
    "HCAPTCHA_SECRET_KEY",
    "HCAPTCHA_SITE_KEY",
];

/// Prefixes of keys that say where and how the server runs: its database,
/// Redis, object store, mail relay, search and processes. The new host sets
/// them for its own services; carried over they would point the restored
/// server at the old host's services, with the old host's credentials.
const ENV_HOST_PREFIXES: &[&str] = &[
    "DB_",
    "DATABASE_",
    "REPLICA_DB_",
    "REDIS_",
    "SIDEKIQ_REDIS_",
    "CACHE_REDIS_",
    "S3_",
    "AWS_",
    "SWIFT_",
    "AZURE_",
    "EXTRA_MEDIA_HOSTS",
    "SMTP_",
    "ES_",
    "STREAMING_",
    "RAILS_",
    "NODE_",
    "PAPERCLIP_",
    "PREPARED_STATEMENTS",
    "WEB_CONCURRENCY",
    "MAX_THREADS",
    "BIND",
    "PORT",
    "CDN_HOST",
    "TRUSTED_PROXY_IP",
    "ALLOWED_PRIVATE_ADDRESSES",
    "STATSD_",
    "MASTODON_PROMETHEUS_",
];

/// What becomes of an `.env.production` key on import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKeyPolicy {
    /// Carried over as it is.
    Keep,
    /// Dropped because the new host sets it for its own services.
    HostOwned,
    /// Dropped because Herd does not know what it does.
    Unknown,
}

impl fmt::Display for EnvKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvKeyPolicy::Keep => "kept",
            EnvKeyPolicy::HostOwned => "set by the new host",
            EnvKeyPolicy::Unknown => "not on the allowlist",
        })
    }
}

/// Classifies a key. Connection settings are dropped rather than refused:
/// every real `.env.production` has them, so refusing would reject every
/// backup from another host, while the new host must set them anyway.
pub fn env_key_policy(key: &str) -> EnvKeyPolicy {
    if ENV_ALLOWED_KEYS.contains(&key) {
        EnvKeyPolicy::Keep
    } else if ENV_HOST_PREFIXES.iter().any(|p| key.starts_with(p)) {
        EnvKeyPolicy::HostOwned
    } else {
        EnvKeyPolicy::Unknown
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvError {
    #[error("env.production line {line}: {problem}")]
    Line {
        line: usize,
        problem: EnvLineProblem,
    },
    #[error("env.production sets {0} twice")]
    Duplicate(String),
    #[error("env.production has no {0}, which the restored server cannot do without")]
    Missing(&'static str),
    #[error("env.production sets LOCAL_DOMAIN to `{found}` but the archive is of `{expected}`")]
    DomainMismatch { expected: String, found: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvLineProblem {
    #[error("expected KEY=value")]
    NoEquals,
    #[error("`{0}` is not a variable name (letters, digits and _, not starting with a digit)")]
    BadKey(String),
    #[error("the quoted value is not closed on the same line")]
    Unterminated,
    #[error("unexpected text after the closing quote")]
    TrailingText,
    #[error("the value contains a NUL or control character")]
    ControlCharacter,
}

/// A parsed `.env.production`, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    entries: Vec<(String, String)>,
}

/// The keys an archive's env file keeps and drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredEnv {
    pub kept: EnvFile,
    pub dropped: Vec<(String, EnvKeyPolicy)>,
}

impl EnvFile {
    /// Parses the dotenv dialect Mastodon reads: `KEY=value` lines, an
    /// optional `export ` prefix, `#` comments (whole lines, or after an
    /// unquoted value and a space), single quotes taken literally, double
    /// quotes with `\n`, `\"` and `\\` escapes. `$VAR` is not expanded: the
    /// values Herd carries are secrets and names, which never reference
    /// other variables. A key set twice is refused, since which one wins is
    /// the kind of surprise an import must not have.
    pub fn parse(text: &str) -> Result<Self, EnvError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let parsed = parse_env_line(raw).map_err(|problem| EnvError::Line { line, problem })?;
            if let Some((key, value)) = parsed {
                if entries.iter().any(|(k, _)| *k == key) {
                    return Err(EnvError::Duplicate(key));
                }
                entries.push((key, value));
            }
        }
        Ok(EnvFile { entries })
    }

    /// Builds a file from pairs; keys are checked as the parser checks them.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, EnvError> {
        let mut file = EnvFile::default();
        for (index, (key, value)) in pairs.into_iter().enumerate() {
            let (key, value) = (key.into(), value.into());
            let problem = if !is_env_key(&key) {
                Some(EnvLineProblem::BadKey(key.clone()))
            } else if value.chars().any(|c| c.is_control() && c != '\n') {
                Some(EnvLineProblem::ControlCharacter)
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(EnvError::Line {
                    line: index + 1,
                    problem,
                });
            }
            if file.get(&key).is_some() {
                return Err(EnvError::Duplicate(key));
            }
            file.entries.push((key, value));
        }
        Ok(file)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Renders the file so that [`EnvFile::parse`] (and Mastodon) reads back
    /// the same values: every value double-quoted and escaped.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.entries {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            out.push_str(&format!("{key}=\"{escaped}\"\n"));
        }
        out
    }

    /// Splits the keys into those carried over and those dropped, by
    /// [`env_key_policy`].
    pub fn filter(&self) -> FilteredEnv {
        let mut kept = EnvFile::default();
        let mut dropped = Vec::new();
        for (key, value) in &self.entries {
            match env_key_policy(key) {
                EnvKeyPolicy::Keep => kept.entries.push((key.clone(), value.clone())),
                policy => dropped.push((key.clone(), policy)),
            }
        }
        FilteredEnv { kept, dropped }
    }

    /// Checks that the file can bring up the archived server: its identity
    /// matches the manifest and the first secret is there.
    pub fn check_against(&self, local_domain: &Domain) -> Result<(), EnvError> {
        let found = self
            .get("LOCAL_DOMAIN")
            .ok_or(EnvError::Missing("LOCAL_DOMAIN"))?;
        if Domain::parse(found).ok().as_ref() != Some(local_domain) {
            return Err(EnvError::DomainMismatch {
                expected: local_domain.to_string(),
                found: found.to_owned(),
            });
        }
        if self.get("SECRET_KEY_BASE").is_none_or(str::is_empty) {
            return Err(EnvError::Missing("SECRET_KEY_BASE"));
        }
        Ok(())
    }
}

fn is_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse_env_line(raw: &str) -> Result<Option<(String, String)>, EnvLineProblem> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let (key, rest) = line.split_once('=').ok_or(EnvLineProblem::NoEquals)?;
    let key = key.trim_end();
    if !is_env_key(key) {
        return Err(EnvLineProblem::BadKey(key.to_owned()));
    }
    let rest = rest.trim_start();
    let value = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            let (value, after) = parse_quoted(&rest[1..], quote)?;
            let after = after.trim_start();
            if !(after.is_empty() || after.starts_with('#')) {
                return Err(EnvLineProblem::TrailingText);
            }
            value
        }
        _ => {
            let end = rest
                .find(" #")
                .or_else(|| rest.find("\t#"))
                .unwrap_or(rest.len());
            rest[..end].trim_end().to_owned()
        }
    };
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(EnvLineProblem::ControlCharacter);
    }
    Ok(Some((key.to_owned(), value)))
}

/// Reads a quoted value up to its closing quote; returns it and the rest.
fn parse_quoted(text: &str, quote: char) -> Result<(String, &str), EnvLineProblem> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((value, &text[at + 1..])),
            '\\' if quote == '"' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped)) => value.push(escaped),
                None => return Err(EnvLineProblem::Unterminated),
            },
            c => value.push(c),
        }
    }
    Err(EnvLineProblem::Unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> Description {
        Description {
            herd_version: "0.1.0".to_owned(),
            local_domain: Domain::parse("example.social").unwrap(),
            web_domain: Domain::parse("social.example.org").unwrap(),
            mastodon_version: "4.5.2".parse().unwrap(),
            schema_migration_version: 20_250_728_104_413,
            created_at: "2026-11-23T14:00:00Z".to_owned(),
            consistency: Consistency {
                method: ConsistencyMethod::Snapshot,
                detail: "pg_export_snapshot 00000003-0000001B-1".to_owned(),
            },
            left_out: vec![LeftOut::remote_media_cache(), LeftOut::home_feeds()],
        }
    }

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned(),
        }
    }

    fn manifest() -> Manifest {
        Manifest::new(
            description(),
            [
                "database.dump",
                "env.production",
                "system/accounts/avatars/000/000/001/original/a.png",
                "RESTORE.md",
            ]
            .into_iter()
            .map(entry)
            .collect(),
        )
    }

    #[test]
    fn member_paths_of_format_v1_are_accepted() {
        assert_eq!(check_member_path("manifest.json"), Ok(MemberKind::Manifest));
        assert_eq!(check_member_path("database.dump"), Ok(MemberKind::Database));
        assert_eq!(check_member_path("env.production"), Ok(MemberKind::Env));
        assert_eq!(check_member_path("RESTORE.md"), Ok(MemberKind::Restore));
        assert_eq!(
            check_member_path("system/media_attachments/files/109/876/543/original/ä b.jpg"),
            Ok(MemberKind::Media)
        );
    }

    #[test]
    fn hostile_member_paths_are_refused() {
        let long_segment = format!("system/{}", "a".repeat(MAX_SEGMENT_BYTES + 1));
        let long_path = format!("system/{}", "a/".repeat(MAX_PATH_BYTES / 2));
        type Expected = fn(&PathError) -> bool;
        let cases: &[(&str, Expected)] = &[
            ("", |e| matches!(e, PathError::Empty)),
            ("/etc/passwd", |e| matches!(e, PathError::Absolute(_))),
            ("C:/x", |e| matches!(e, PathError::Absolute(_))),
            ("../x", |e| matches!(e, PathError::ParentSegment(_))),
            ("system/../../x", |e| {
                matches!(e, PathError::ParentSegment(_))
            }),
            ("system/./x", |e| matches!(e, PathError::CurrentSegment(_))),
            ("./database.dump", |e| {
                matches!(e, PathError::CurrentSegment(_))
            }),
            ("system//x", |e| matches!(e, PathError::EmptySegment(_))),
            ("system/x/", |e| matches!(e, PathError::EmptySegment(_))),
            ("system\\..\\x", |e| matches!(e, PathError::Backslash(_))),
            ("system/a\0b", |e| matches!(e, PathError::ControlCharacter)),
            ("system/a\nb", |e| matches!(e, PathError::ControlCharacter)),
            (&long_segment, |e| matches!(e, PathError::SegmentTooLong(_))),
            (&long_path, |e| matches!(e, PathError::TooLong(_))),
            ("system", |e| matches!(e, PathError::UnknownEntry(_))),
            ("public/system/x", |e| {
                matches!(e, PathError::UnknownEntry(_))
            }),
            ("Manifest.json", |e| matches!(e, PathError::UnknownEntry(_))),
            (".env.production", |e| {
                matches!(e, PathError::UnknownEntry(_))
            }),
        ];
        for (path, expected) in cases {
            let err = check_member_path(path).expect_err(path);
            assert!(expected(&err), "{path:?} gave {err:?}");
        }
    }

    #[test]
    fn directories_are_accepted_only_within_system() {
        assert_eq!(check_directory_path("system/"), Ok(()));
        assert_eq!(check_directory_path("system/accounts/avatars/"), Ok(()));
        assert!(matches!(
            check_directory_path("etc/"),
            Err(PathError::UnknownEntry(_))
        ));
        assert!(matches!(
            check_directory_path("system/../"),
            Err(PathError::ParentSegment(_))
        ));
        assert!(matches!(
            check_directory_path("/system/"),
            Err(PathError::Absolute(_))
        ));
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let manifest = manifest();
        let json = manifest.to_json();
        assert_eq!(Manifest::from_json(&json), Ok(manifest));
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["format_version"], 1);
        assert_eq!(value["local_domain"], "example.social");
        assert_eq!(value["mastodon_version"], "4.5.2");
        assert_eq!(value["consistency"]["method"], "snapshot");
        assert_eq!(
            value["consistency"]["method"],
            ConsistencyMethod::Snapshot.to_string()
        );
        assert_eq!(
            serde_json::to_value(ConsistencyMethod::MaintenanceWindow).unwrap(),
            ConsistencyMethod::MaintenanceWindow.to_string()
        );
        assert_eq!(value["left_out"][0]["path"], "system/cache/");
    }

    #[test]
    fn fields_a_later_v1_adds_are_ignored() {
        let mut value: serde_json::Value = serde_json::from_slice(&manifest().to_json()).unwrap();
        value["exported_by"] = "operator".into();
        value["consistency"]["lsn"] = "0/16B3748".into();
        let json = serde_json::to_vec(&value).unwrap();
        assert_eq!(Manifest::from_json(&json), Ok(manifest()));
    }

    #[test]
    fn future_and_missing_versions_are_named_before_anything_else() {
        let future = br#"{"format_version": 2, "renamed_everything": true}"#;
        let err = Manifest::from_json(future).unwrap_err();
        assert_eq!(err, ManifestError::FutureVersion(2));
        assert!(err.to_string().contains("newer Herd"), "{err}");
        assert_eq!(
            Manifest::from_json(br#"{"format_version": 99999999999}"#),
            Err(ManifestError::FutureVersion(u32::MAX))
        );
        assert_eq!(
            Manifest::from_json(br#"{"files": []}"#),
            Err(ManifestError::NoVersion)
        );
        assert_eq!(
            Manifest::from_json(br#"{"format_version": "1"}"#),
            Err(ManifestError::NoVersion)
        );
        assert_eq!(
            Manifest::from_json(br#"{"format_version": 0}"#),
            Err(ManifestError::ZeroVersion)
        );
        assert!(matches!(
            Manifest::from_json(b"not json"),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            Manifest::from_json(br#"{"format_version": 1}"#),
            Err(ManifestError::Invalid(_))
        ));
    }

    #[test]
    fn manifest_validation_names_the_fault() {
        let check = |change: fn(&mut Manifest)| {
            let mut manifest = manifest();
            change(&mut manifest);
            Manifest::from_json(&manifest.to_json()).unwrap_err()
        };
        assert_eq!(
            check(|m| m.files.push(entry("database.dump"))),
            ManifestError::Duplicate("database.dump".to_owned())
        );
        assert_eq!(
            check(|m| m.files.push(entry("manifest.json"))),
            ManifestError::ListsItself
        );
        assert!(matches!(
            check(|m| m.files.push(entry("../evil"))),
            ManifestError::Path {
                error: PathError::ParentSegment(_),
                ..
            }
        ));
        assert_eq!(
            check(|m| m.files.retain(|f| f.path != "env.production")),
            ManifestError::MissingRequired("env.production")
        );
        assert_eq!(
            check(|m| m.files[0].sha256 = m.files[0].sha256.to_uppercase()),
            ManifestError::Digest("database.dump".to_owned())
        );
        assert!(matches!(
            check(|m| m.description.created_at = "yesterday".to_owned()),
            ManifestError::CreatedAt(_)
        ));
    }

    #[test]
    fn created_at_must_be_rfc3339() {
        for good in [
            "2026-11-23T14:00:00Z",
            "2026-11-23T14:00:00.123456Z",
            "2026-11-23T14:00:00+01:00",
            "2026-11-23t14:00:00-05:30",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2026-11-23 14:00:00Z",
            "2026-11-23T14:00:00",
            "2026-13-23T14:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T14:00:00.Z",
            "2026-11-23T14:00:00+0100",
            "+026-11-23T14:00:00Z",
            "2026-11-23T14:00:00Zjunk",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn limits_refuse_sizes_counts_and_ratios() {
        let limits = Limits {
            max_total_bytes: 100,
            max_file_bytes: 60,
            max_files: 3,
            max_ratio: 10,
        };
        assert_eq!(limits.check_member("a", 60, 40), Ok(()));
        assert!(matches!(
            limits.check_member("a", 61, 0),
            Err(LimitError::FileTooLarge {
                size: 61,
                limit: 60,
                ..
            })
        ));
        assert_eq!(
            limits.check_member("a", 50, 51),
            Err(LimitError::TotalTooLarge { limit: 100 })
        );
        assert_eq!(
            limits.check_member("a", 50, u64::MAX),
            Err(LimitError::TotalTooLarge { limit: 100 })
        );
        assert_eq!(limits.check_count(3), Ok(()));
        assert_eq!(
            limits.check_count(4),
            Err(LimitError::TooManyFiles { limit: 3 })
        );
        // Below the grace amount any ratio passes; above it the ratio counts.
        assert_eq!(limits.check_ratio(1, RATIO_GRACE_BYTES), Ok(()));
        assert!(matches!(
            limits.check_ratio(1, RATIO_GRACE_BYTES + 1),
            Err(LimitError::Ratio { limit: 10, .. })
        ));
        assert_eq!(
            limits.check_ratio(RATIO_GRACE_BYTES, 10 * RATIO_GRACE_BYTES),
            Ok(())
        );
        assert!(
            limits
                .check_ratio(RATIO_GRACE_BYTES, 10 * RATIO_GRACE_BYTES + 1)
                .is_err()
        );
    }

    #[test]
    fn small_files_have_small_limits() {
        let limits = Limits::default();
        assert_eq!(
            limits.check_small_file(MemberKind::Env, ENV_PATH, MAX_ENV_BYTES),
            Ok(())
        );
        assert!(matches!(
            limits.check_small_file(MemberKind::Env, ENV_PATH, MAX_ENV_BYTES + 1),
            Err(LimitError::SmallFileTooLarge { .. })
        ));
        let few = Limits {
            max_files: 10,
            ..limits
        };
        assert!(
            few.check_small_file(MemberKind::Manifest, MANIFEST_PATH, 1 << 20)
                .is_err()
        );
        assert_eq!(
            few.check_small_file(MemberKind::Database, DATABASE_PATH, u64::MAX),
            Ok(())
        );
    }

    const MASTODON_ENV: &str = r#"# Generated with mastodon:setup
LOCAL_DOMAIN=example.social
WEB_DOMAIN = social.example.org
export SINGLE_USER_MODE=false
SECRET_KEY_BASE='abc$def"ghi'
OTP_SECRET="with \"escapes\" \\ and\nnewline"
VAPID_PUBLIC_KEY=BPub # trailing comment
VAPID_PRIVATE_KEY=priv#not-a-comment

DB_HOST=db.internal
DB_PASS=hunter2
REDIS_URL=redis://10.0.0.2
AWS_SECRET_ACCESS_KEY=shh
SMTP_PASSWORD=mail
MY_CUSTOM_FLAG=1
EMPTY=
"#;

    #[test]
    fn mastodon_dotenv_is_parsed() {
        let env = EnvFile::parse(MASTODON_ENV).unwrap();
        assert_eq!(env.get("LOCAL_DOMAIN"), Some("example.social"));
        assert_eq!(env.get("WEB_DOMAIN"), Some("social.example.org"));
        assert_eq!(env.get("SINGLE_USER_MODE"), Some("false"));
        assert_eq!(env.get("SECRET_KEY_BASE"), Some("abc$def\"ghi"));
        assert_eq!(
            env.get("OTP_SECRET"),
            Some("with \"escapes\" \\ and\nnewline")
        );
        assert_eq!(env.get("VAPID_PUBLIC_KEY"), Some("BPub"));
        assert_eq!(env.get("VAPID_PRIVATE_KEY"), Some("priv#not-a-comment"));
        assert_eq!(env.get("EMPTY"), Some(""));
        assert_eq!(env.get("NOPE"), None);
    }

    #[test]
    fn malformed_dotenv_lines_are_refused_with_their_number() {
        let line = |text: &str| match EnvFile::parse(text) {
            Err(EnvError::Line { line, problem }) => (line, problem),
            other => panic!("{text:?} gave {other:?}"),
        };
        assert_eq!(line("A=1\nJUST_A_WORD"), (2, EnvLineProblem::NoEquals));
        assert_eq!(line("1A=x"), (1, EnvLineProblem::BadKey("1A".to_owned())));
        assert_eq!(line("A-B=x"), (1, EnvLineProblem::BadKey("A-B".to_owned())));
        assert_eq!(line("A=\"open"), (1, EnvLineProblem::Unterminated));
        assert_eq!(line("A='x' y"), (1, EnvLineProblem::TrailingText));
        assert_eq!(line("A=x\0y"), (1, EnvLineProblem::ControlCharacter));
        assert_eq!(
            EnvFile::parse("A=1\nexport A=2"),
            Err(EnvError::Duplicate("A".to_owned()))
        );
    }

    #[test]
    fn env_renders_what_it_parses() {
        let env = EnvFile::parse(MASTODON_ENV).unwrap();
        assert_eq!(EnvFile::parse(&env.render()), Ok(env));
        let built = EnvFile::from_pairs([("A", "x\"y"), ("B", "1")]).unwrap();
        assert_eq!(EnvFile::parse(&built.render()), Ok(built));
        assert!(matches!(
            EnvFile::from_pairs([("A B", "x")]),
            Err(EnvError::Line {
                problem: EnvLineProblem::BadKey(_),
                ..
            })
        ));
        assert_eq!(
            EnvFile::from_pairs([("A", "x"), ("A", "y")]),
            Err(EnvError::Duplicate("A".to_owned()))
        );
    }

    #[test]
    fn env_filter_keeps_secrets_and_drops_connections() {
        let filtered = EnvFile::parse(MASTODON_ENV).unwrap().filter();
        let kept: Vec<&str> = filtered.kept.entries().map(|(k, _)| k).collect();
        assert_eq!(
            kept,
            [
                "LOCAL_DOMAIN",
                "WEB_DOMAIN",
                "SINGLE_USER_MODE",
                "SECRET_KEY_BASE",
                "OTP_SECRET",
                "VAPID_PUBLIC_KEY",
                "VAPID_PRIVATE_KEY"
            ]
        );
        let dropped: Vec<(&str, EnvKeyPolicy)> = filtered
            .dropped
            .iter()
            .map(|(k, p)| (k.as_str(), *p))
            .collect();
        assert_eq!(
            dropped,
            [
                ("DB_HOST", EnvKeyPolicy::HostOwned),
                ("DB_PASS", EnvKeyPolicy::HostOwned),
                ("REDIS_URL", EnvKeyPolicy::HostOwned),
                ("AWS_SECRET_ACCESS_KEY", EnvKeyPolicy::HostOwned),
                ("SMTP_PASSWORD", EnvKeyPolicy::HostOwned),
                ("MY_CUSTOM_FLAG", EnvKeyPolicy::Unknown),
                ("EMPTY", EnvKeyPolicy::Unknown),
            ]
        );
        for key in ENV_ALLOWED_KEYS {
            assert_eq!(env_key_policy(key), EnvKeyPolicy::Keep, "{key}");
        }
    }

    #[test]
    fn env_must_match_the_archived_instance() {
        let domain = Domain::parse("example.social").unwrap();
        let env = |text: &str| EnvFile::parse(text).unwrap();
        assert_eq!(
            env("LOCAL_DOMAIN=Example.Social\nSECRET_KEY_BASE=s").check_against(&domain),
            Ok(())
        );
        assert_eq!(
            env("SECRET_KEY_BASE=s").check_against(&domain),
            Err(EnvError::Missing("LOCAL_DOMAIN"))
        );
        assert!(matches!(
            env("LOCAL_DOMAIN=other.social\nSECRET_KEY_BASE=s").check_against(&domain),
            Err(EnvError::DomainMismatch { .. })
        ));
        assert_eq!(
            env("LOCAL_DOMAIN=example.social\nSECRET_KEY_BASE=").check_against(&domain),
            Err(EnvError::Missing("SECRET_KEY_BASE"))
        );
    }
}
