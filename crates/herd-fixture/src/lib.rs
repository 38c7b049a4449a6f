//! Fixtures of a Mastodon tenant, and the fingerprints that prove a copy of one
//! identical.
//!
//! [`generate`] creates, in a tenant's PostgreSQL database and S3 bucket,
//! what a Mastodon server holds after a while of use:
//!
//! - the central tables in the `public` schema as Mastodon's migrations create
//!   them (`accounts`, `users`, `statuses`, `media_attachments`, `follows`,
//!   `favourites`, `notifications`, `tags`, `statuses_tags`,
//!   `oauth_applications`, `oauth_access_tokens`, `domain_blocks`, `settings`,
//!   `schema_migrations`, `ar_internal_metadata`) with Mastodon's indexes and
//!   foreign keys, and its `timestamp_id('<table>')` function with the
//!   `<table>_id_seq` sequences as the default id of accounts, statuses and
//!   media attachments; the ids in the rows are made the way that function
//!   makes them;
//! - rows with local accounts (`domain` NULL, a `private_key`, a user with an
//!   encrypted `otp_secret` now and then) and remote ones, replies, boosts,
//!   attachments, hashtags, follows, favourites and the notifications they
//!   caused; text in many scripts with emoji, right-to-left and combining
//!   marks, 100 KB statuses, empty strings, NULLs, text that looks like COPY's
//!   own escapes, and timestamps at the edges of the type (`infinity`, BC);
//! - media in Mastodon's key layout: `accounts/avatars/<id partition>/original/`
//!   and `media_attachments/files/<id partition>/{original,small}/` for local
//!   accounts, the same under `cache/` for remote ones (a cache Mastodon
//!   refetches, which exports may leave out); the bodies are pseudo-random
//!   bytes behind an image or video magic number, and one is empty.
//!
//! The seed decides everything: the same seed and scale give the same rows
//! and the same bytes. Each scale unit adds 50 accounts and 2,000 statuses
//! with their relations (about 3 MB of database) and about 28 MB of media
//! (`media_percent` scales the object sizes, to weigh the two). Rows
//! stream in through `COPY` and objects are generated one by one as they are
//! uploaded, so memory stays flat up to fixtures of several GB.
//!
//! [`database_fingerprint`] and [`bucket_fingerprint`] summarise a database
//! (per table: rows, an order-independent content checksum, columns, indexes,
//! constraints; sequences; functions) and a bucket (every key with its size and
//! SHA-256). Compare two with `assert_eq!`. The `herd-fixture` binary offers
//! both as `generate` and `checksum`.

mod copy;
mod error;
mod fingerprint;
mod generate;
mod model;
mod rng;

pub use error::FixtureError;
pub use fingerprint::{
    BucketFingerprint, DatabaseFingerprint, ObjectFingerprint, TableFingerprint,
    bucket_fingerprint, database_fingerprint,
};
pub use generate::{FixtureSpec, FixtureSummary, generate};
pub use model::id_partition;
