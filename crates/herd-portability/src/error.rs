use std::fmt;
use std::io;

use herd_core::archive::{EnvError, LimitError, ManifestError, PathError};
use thiserror::Error;

/// Why an archive cannot be written or is refused. Every variant names the
/// member at fault where there is one.
#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("member `{path}`: {error}")]
    Path { path: String, error: PathError },
    #[error("a member path is not UTF-8")]
    NotUtf8Path,
    #[error("`{path}` is a {kind}; an archive holds only regular files and directories")]
    EntryType { path: String, kind: &'static str },
    #[error("a {kind} longer than {limit} bytes")]
    ExtensionTooLarge { kind: &'static str, limit: u64 },
    #[error("the archive has {0}")]
    ExtensionHeader(&'static str),
    #[error("`{0}` appears twice in the archive")]
    Duplicate(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("env.production is not UTF-8")]
    EnvNotUtf8,
    #[error(
        "the archive has no manifest.json: it was cut short (the manifest is written last) or is not a Herd archive"
    )]
    NoManifest,
    #[error("`{0}` follows manifest.json, which must be the last member")]
    AfterManifest(String),
    #[error("the archive ends inside `{0}`: it was cut short")]
    Truncated(String),
    #[error("the archive ends inside a tar header: it was cut short")]
    TruncatedHeader,
    #[error("the media tar ends without tar's end-of-archive blocks: it was cut short")]
    NoTarEnd,
    #[error(
        "the tar is gzip-compressed, which Herd does not read: decompress it with gunzip, or recompress it with zstd"
    )]
    Gzip,
    #[error(
        "the database dump is not in pg_dump's custom format (it does not start with PGDMP); make it with `pg_dump -Fc`"
    )]
    NotCustomDump,
    #[error("the archive does not match its manifest: {}", MismatchList(.0))]
    Mismatch(Vec<Mismatch>),
    #[error(
        "the archive is encrypted with age; give the identity (secret key) it was encrypted to"
    )]
    IdentityRequired,
    #[error("cannot decrypt the archive: {0}")]
    Decrypt(#[from] age::DecryptError),
    #[error("cannot encrypt the archive: {0}")]
    Encrypt(#[from] age::EncryptError),
    #[error("the encrypted data does not authenticate: the archive was cut short or altered ({0})")]
    Unauthenticated(io::Error),
    #[error("`{0}` is not an age X25519 recipient (age1...)")]
    Recipient(String),
    #[error("the identity file holds no age identity")]
    NoIdentity,
    #[error("`{path}` was declared as {declared} bytes but its source gave {actual}")]
    SourceSize {
        path: String,
        declared: u64,
        actual: String,
    },
    #[error("`{0}` is written by the archive writer itself")]
    Reserved(String),
    #[error("the writer failed earlier; its output is not an archive")]
    WriterFailed,
    #[error("the caller stopped at `{path}`: {error}")]
    Visitor { path: String, error: io::Error },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// One way the members differ from what the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Listed in the manifest, absent from the archive.
    Missing(String),
    /// In the archive, not listed in the manifest.
    Unlisted(String),
    Size {
        path: String,
        listed: u64,
        actual: u64,
    },
    Checksum {
        path: String,
        listed: String,
        actual: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing(path) => write!(f, "`{path}` is listed but missing"),
            Mismatch::Unlisted(path) => write!(f, "`{path}` is present but not listed"),
            Mismatch::Size {
                path,
                listed,
                actual,
            } => write!(f, "`{path}` is {actual} bytes, listed as {listed}"),
            Mismatch::Checksum {
                path,
                listed,
                actual,
            } => write!(f, "`{path}` has SHA-256 {actual}, listed as {listed}"),
        }
    }
}

/// Names the first problems, then how many more there are, so one error
/// line stays readable when a whole tree is damaged.
struct MismatchList<'a>(&'a [Mismatch]);

const SHOWN_MISMATCHES: usize = 20;

impl fmt::Display for MismatchList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, mismatch) in self.0.iter().take(SHOWN_MISMATCHES).enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{mismatch}")?;
        }
        if self.0.len() > SHOWN_MISMATCHES {
            write!(f, "; and {} more", self.0.len() - SHOWN_MISMATCHES)?;
        }
        Ok(())
    }
}
