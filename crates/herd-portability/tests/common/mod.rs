//! What the archive and the plain backup tests share.

use herd_core::archive::{Consistency, ConsistencyMethod, Description, LeftOut};
use herd_core::domain::Domain;
use sha2::{Digest, Sha256};

pub const ENV: &str = "LOCAL_DOMAIN=example.social\nWEB_DOMAIN=social.example.org\nSECRET_KEY_BASE=0123abcd\nOTP_SECRET=feed\n";

pub fn description() -> Description {
    Description {
        herd_version: "0.1.0".to_owned(),
        local_domain: Domain::parse("example.social").unwrap(),
        web_domain: Domain::parse("social.example.org").unwrap(),
        mastodon_version: "4.5.2".parse().unwrap(),
        schema_migration_version: 20_250_728_104_413,
        created_at: "2026-11-23T14:00:00Z".to_owned(),
        consistency: Consistency {
            method: ConsistencyMethod::Snapshot,
            detail: "exported snapshot 00000003-0000001B-1".to_owned(),
        },
        left_out: vec![LeftOut::remote_media_cache(), LeftOut::home_feeds()],
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends a member with the tar crate's low-level header API, which
/// writes whatever it is told: any path, type and declared size.
pub fn append_raw(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &[u8],
    entry_type: tar::EntryType,
    size: u64,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    let name = &mut header.as_old_mut().name;
    name[..path.len()].copy_from_slice(path);
    header.set_entry_type(entry_type);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append(&header, data).unwrap();
}
