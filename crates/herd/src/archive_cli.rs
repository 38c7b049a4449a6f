//! `herd archive ...`: instance archives checked offline, with no server,
//! so a customer can trust an export before the old server is gone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use herd_portability::VerifiedArchive;

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Check an archive (structure, limits, checksums, manifest) and print a
    /// summary; exits non-zero naming what is wrong.
    Verify {
        file: PathBuf,
        /// age identity file (AGE-SECRET-KEY-1...) for an encrypted archive.
        #[arg(long)]
        identity: Option<PathBuf>,
    },
}

pub async fn run(command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Verify { file, identity } => {
            // Reading, hashing and decompressing are blocking work.
            let summary =
                tokio::task::spawn_blocking(move || verify(&file, identity.as_deref())).await??;
            print!("{summary}");
            Ok(())
        }
    }
}

fn verify(file: &Path, identity: Option<&Path>) -> anyhow::Result<String> {
    let identity = identity
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the identity file {}", path.display()))?;
            herd_portability::parse_identity_file(&text)
                .with_context(|| format!("reading the identity file {}", path.display()))
        })
        .transpose()?;
    let verified = herd_portability::verify(file, identity.as_ref())
        .with_context(|| format!("{} is not a valid Herd archive", file.display()))?;
    Ok(summary(file, &verified))
}

fn summary(file: &Path, verified: &VerifiedArchive) -> String {
    let manifest = &verified.manifest;
    let about = &manifest.description;
    let container = match (verified.compressed, verified.encrypted) {
        (false, false) => "tar",
        (true, false) => "tar, zstd",
        (false, true) => "tar, age",
        (true, true) => "tar, zstd, age",
    };
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "{}: valid archive, format v{} ({container})",
        file.display(),
        manifest.format_version
    ));
    line(format!(
        "instance: {} (web {}), Mastodon {}, schema {}",
        about.local_domain,
        about.web_domain,
        about.mastodon_version,
        about.schema_migration_version
    ));
    line(format!(
        "created: {} by Herd {}; consistency: {} ({})",
        about.created_at, about.herd_version, about.consistency.method, about.consistency.detail
    ));
    line(format!(
        "members: {} files, {} directories, {} bytes; every size and SHA-256 matches the manifest",
        verified.files, verified.directories, verified.content_bytes
    ));
    for left_out in &about.left_out {
        line(format!(
            "left out: {}: {}; rebuilt: {}",
            left_out.path, left_out.reason, left_out.rebuild
        ));
    }
    let env = verified.env.filter();
    let mut dropped = String::new();
    for (key, policy) in &env.dropped {
        let _ = write!(
            dropped,
            "{}{key} ({policy})",
            if dropped.is_empty() { "" } else { ", " }
        );
    }
    line(format!(
        "env.production: {} keys carried over{}",
        env.kept.entries().count(),
        if dropped.is_empty() {
            String::new()
        } else {
            format!("; dropped on import: {dropped}")
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use herd_core::archive::{Consistency, ConsistencyMethod, Description};
    use herd_core::domain::Domain;
    use herd_portability::{ArchiveWriter, Identity, WriteOptions};

    use super::*;

    fn write(path: &Path, options: &WriteOptions) {
        let mut writer = ArchiveWriter::new(std::fs::File::create(path).unwrap(), options).unwrap();
        writer.add_bytes("database.dump", b"PGDMP").unwrap();
        writer
            .add_bytes(
                "env.production",
                b"LOCAL_DOMAIN=example.social\nSECRET_KEY_BASE=s\nDB_HOST=db\n",
            )
            .unwrap();
        writer
            .add_bytes("system/accounts/avatars/000/000/001/original/a.png", b"png")
            .unwrap();
        writer
            .finish(Description {
                herd_version: "0.1.0".to_owned(),
                local_domain: Domain::parse("example.social").unwrap(),
                web_domain: Domain::parse("example.social").unwrap(),
                mastodon_version: "4.5.2".parse().unwrap(),
                schema_migration_version: 20_250_728_104_413,
                created_at: "2026-11-23T14:00:00Z".to_owned(),
                consistency: Consistency {
                    method: ConsistencyMethod::MaintenanceWindow,
                    detail: "stopped 14:00 to 14:05".to_owned(),
                },
                left_out: Vec::new(),
            })
            .unwrap();
    }

    #[test]
    fn a_valid_archive_is_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        write(&path, &WriteOptions::default());
        let summary = verify(&path, None).unwrap();
        assert!(
            summary.contains("valid archive, format v1 (tar)"),
            "{summary}"
        );
        assert!(summary.contains("instance: example.social"), "{summary}");
        assert!(
            summary.contains("consistency: maintenance_window (stopped"),
            "{summary}"
        );
        assert!(summary.contains("5 files, 0 directories"), "{summary}");
        assert!(
            summary.contains("dropped on import: DB_HOST (set by the new host)"),
            "{summary}"
        );
    }

    #[test]
    fn an_encrypted_archive_needs_the_identity_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.zst.age");
        let identity = Identity::generate();
        write(
            &path,
            &WriteOptions {
                zstd_level: Some(3),
                recipient: Some(identity.to_public()),
                ..WriteOptions::default()
            },
        );
        let err = verify(&path, None).unwrap_err();
        assert!(format!("{err:#}").contains("give the identity"), "{err:#}");

        let key = dir.path().join("key.txt");
        let secret = identity.to_string();
        std::fs::write(
            &key,
            format!(
                "# a comment\n{}\n",
                age::secrecy::ExposeSecret::expose_secret(&secret)
            ),
        )
        .unwrap();
        let summary = verify(&path, Some(&key)).unwrap();
        assert!(summary.contains("(tar, zstd, age)"), "{summary}");
    }

    #[test]
    fn a_damaged_archive_is_named_with_its_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        write(&path, &WriteOptions::default());
        let mut bytes = std::fs::read(&path).unwrap();
        // The database dump's content sits in the second block.
        bytes[512] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", verify(&path, None).unwrap_err());
        assert!(err.contains("is not a valid Herd archive"), "{err}");
        assert!(err.contains("`database.dump` has SHA-256"), "{err}");
    }
}
