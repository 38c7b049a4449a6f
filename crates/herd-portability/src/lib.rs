//! Herd archives on the wire: format v1 (`docs/export-format.md`) written and
//! read as one stream, and plain Mastodon backups converted into one.
//!
//! The archive is a tar file, optionally zstd-compressed, optionally
//! age-encrypted (encryption outermost, so the compressed size reveals
//! nothing but the length). Both directions stream with constant memory per
//! byte of content: only the list of files (path, size and digest, for the
//! manifest) grows, with the number of files.
//!
//! The code is synchronous, built on the `tar`, `zstd` and `age` crates'
//! `Read` and `Write` adapters. Async callers run it in a blocking task and
//! bridge their streams with `tokio_util::io::SyncIoBridge`: a single pass
//! with no seeking needs nothing more, and the sync `tar` crate is the
//! maintained reference implementation, where the async forks lag behind.

mod digest;
mod error;
mod layers;
mod members;
mod plain;
mod reader;
mod restore;
mod writer;

pub use error::{ArchiveError, Mismatch};
pub use layers::{parse_identity_file, parse_recipient};
pub use plain::{PlainBackup, pack_plain_backup};
pub use reader::{Member, ReadOptions, VerifiedArchive, read_archive, verify, verify_with};
pub use restore::{RESTORE_TEMPLATE, render_restore};
pub use writer::{ArchiveWriter, WriteOptions, encrypt};

/// Re-exported so callers name identities and recipients without depending
/// on `age` themselves.
pub use age::x25519::{Identity, Recipient};
