//! Archives written to disk and read back, and hostile archives crafted
//! header by header, each refused with its own error.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use herd_core::archive::{
    FileEntry, LimitError, Limits, Manifest, ManifestError, MemberKind, PathError,
    RATIO_GRACE_BYTES,
};
use herd_portability::{
    ArchiveError, ArchiveWriter, Identity, Mismatch, ReadOptions, WriteOptions, read_archive,
    verify, verify_with,
};

mod common;
use common::{ENV, append_raw, description, sha256_hex};

/// Deterministic bytes that do not compress, produced as a stream.
struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    fn new(seed: u64, len: u64) -> Self {
        Noise {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
        }
    }

    fn bytes(seed: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Noise::new(seed, len).read_to_end(&mut out).unwrap();
        out
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for byte in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *byte = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The content of a realistic small archive, by member path.
fn content() -> Vec<(String, Vec<u8>)> {
    vec![
        ("database.dump".to_owned(), Noise::bytes(1, 300_000)),
        ("env.production".to_owned(), ENV.as_bytes().to_vec()),
        (
            "system/accounts/avatars/109/876/543/original/ä b.png".to_owned(),
            Noise::bytes(2, 5_000),
        ),
        (
            format!(
                "system/media_attachments/files/{}/original/{}.jpg",
                "123/".repeat(40).trim_end_matches('/'),
                "long".repeat(30)
            ),
            Noise::bytes(3, 70_000),
        ),
        ("system/empty.txt".to_owned(), Vec::new()),
    ]
}

fn write_archive(path: &Path, options: &WriteOptions) -> Manifest {
    let mut writer = ArchiveWriter::new(fs::File::create(path).unwrap(), options).unwrap();
    for (member, bytes) in content() {
        writer
            .add_file(&member, bytes.len() as u64, bytes.as_slice())
            .unwrap();
    }
    // A large member, streamed: never held in memory by the test either.
    writer
        .add_file(
            "system/site_uploads/files/000/000/001/original/big.bin",
            3 << 20,
            Noise::new(4, 3 << 20),
        )
        .unwrap();
    let (manifest, file) = writer.finish(description()).unwrap();
    file.sync_all().unwrap();
    manifest
}

fn round_trip(options: WriteOptions, identity: Option<&Identity>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive");
    let written = write_archive(&path, &options);

    let verified = verify(&path, identity).unwrap();
    assert_eq!(verified.manifest, written);
    assert_eq!(verified.encrypted, options.recipient.is_some());
    assert_eq!(verified.compressed, options.zstd_level.is_some());
    assert_eq!(verified.files, 8, "6 added, RESTORE.md and the manifest");
    assert_eq!(verified.env.get("SECRET_KEY_BASE"), Some("0123abcd"));
    let listed: Vec<&str> = written.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(listed.last(), Some(&"RESTORE.md"));
    assert!(!listed.contains(&"manifest.json"));

    // Every member comes back byte for byte, in archive order.
    let mut seen = Vec::new();
    read_archive(
        fs::File::open(&path).unwrap(),
        ReadOptions {
            identity,
            limits: Limits::default(),
        },
        |member| {
            let mut bytes = Vec::new();
            member.read_to_end(&mut bytes)?;
            assert_eq!(bytes.len() as u64, member.size());
            seen.push((member.path().to_owned(), member.kind(), sha256_hex(&bytes)));
            if member.kind() == MemberKind::Restore {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.starts_with("# Restoring example.social"));
            }
            Ok(())
        },
    )
    .unwrap();
    let expected: Vec<(String, String)> = written
        .files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    let got: Vec<(String, String)> = seen
        .iter()
        .map(|(p, _, h)| (p.clone(), h.clone()))
        .collect();
    assert_eq!(got, expected);
    for (member, bytes) in content() {
        let entry = written.files.iter().find(|f| f.path == member).unwrap();
        assert_eq!(entry.sha256, sha256_hex(&bytes), "{member}");
    }
}

#[test]
fn plain_archive_round_trips() {
    round_trip(WriteOptions::default(), None);
}

#[test]
fn zstd_archive_round_trips() {
    round_trip(
        WriteOptions {
            zstd_level: Some(3),
            ..WriteOptions::default()
        },
        None,
    );
}

#[test]
fn age_archive_round_trips() {
    let identity = Identity::generate();
    round_trip(
        WriteOptions {
            recipient: Some(identity.to_public()),
            ..WriteOptions::default()
        },
        Some(&identity),
    );
}

#[test]
fn zstd_and_age_archive_round_trips() {
    let identity = Identity::generate();
    round_trip(
        WriteOptions {
            zstd_level: Some(3),
            recipient: Some(identity.to_public()),
            ..WriteOptions::default()
        },
        Some(&identity),
    );
}

#[test]
fn encrypted_archive_needs_the_right_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive");
    let identity = Identity::generate();
    write_archive(
        &path,
        &WriteOptions {
            recipient: Some(identity.to_public()),
            ..WriteOptions::default()
        },
    );
    assert!(matches!(
        verify(&path, None),
        Err(ArchiveError::IdentityRequired)
    ));
    let other = Identity::generate();
    assert!(matches!(
        verify(&path, Some(&other)),
        Err(ArchiveError::Decrypt(age::DecryptError::NoMatchingKeys))
    ));
}

#[test]
fn identity_and_recipient_files_are_parsed() {
    let identity = Identity::generate();
    let file = format!(
        "# created: 2026-11-23T14:00:00Z\n# public key: {}\n{}\n",
        identity.to_public(),
        age::secrecy::ExposeSecret::expose_secret(&identity.to_string())
    );
    let parsed = herd_portability::parse_identity_file(&file).unwrap();
    assert_eq!(
        parsed.to_public().to_string(),
        identity.to_public().to_string()
    );
    assert!(matches!(
        herd_portability::parse_identity_file("# nothing\n"),
        Err(ArchiveError::NoIdentity)
    ));
    let recipient =
        herd_portability::parse_recipient(&format!(" {} \n", identity.to_public())).unwrap();
    assert_eq!(recipient.to_string(), identity.to_public().to_string());
    assert!(matches!(
        herd_portability::parse_recipient("age1nope"),
        Err(ArchiveError::Recipient(_))
    ));
}

#[test]
fn writer_refuses_what_the_reader_would_refuse() {
    let mut writer = ArchiveWriter::new(Vec::new(), &WriteOptions::default()).unwrap();
    assert!(matches!(
        writer.add_bytes("../x", b"x"),
        Err(ArchiveError::Path {
            error: PathError::ParentSegment(_),
            ..
        })
    ));
    assert!(matches!(
        writer.add_bytes("manifest.json", b"{}"),
        Err(ArchiveError::Reserved(_))
    ));
    assert!(matches!(
        writer.add_bytes("RESTORE.md", b"x"),
        Err(ArchiveError::Reserved(_))
    ));
    writer.add_bytes("database.dump", b"x").unwrap();
    assert!(matches!(
        writer.add_bytes("database.dump", b"y"),
        Err(ArchiveError::Duplicate(_))
    ));
    // Without env.production the manifest would be refused by readers.
    assert!(matches!(
        writer.finish(description()),
        Err(ArchiveError::Manifest(ManifestError::MissingRequired(
            "env.production"
        )))
    ));
}

#[test]
fn writer_refuses_a_source_of_another_size_and_stays_failed() {
    let mut writer = ArchiveWriter::new(Vec::new(), &WriteOptions::default()).unwrap();
    let shorter = writer
        .add_file("database.dump", 10, &b"12345"[..])
        .unwrap_err();
    assert!(
        matches!(&shorter, ArchiveError::SourceSize { declared: 10, actual, .. } if actual == "5"),
        "{shorter}"
    );
    assert!(matches!(
        writer.add_bytes("env.production", b"x"),
        Err(ArchiveError::WriterFailed)
    ));
    assert!(matches!(
        writer.finish(description()),
        Err(ArchiveError::WriterFailed)
    ));

    let mut writer = ArchiveWriter::new(Vec::new(), &WriteOptions::default()).unwrap();
    let longer = writer
        .add_file("database.dump", 3, &b"12345"[..])
        .unwrap_err();
    assert!(
        matches!(&longer, ArchiveError::SourceSize { actual, .. } if actual == "more"),
        "{longer}"
    );
}

/// Builds archives member by member.
struct Crafted {
    tar: tar::Builder<Vec<u8>>,
    listed: Vec<FileEntry>,
}

impl Crafted {
    fn new() -> Self {
        Crafted {
            tar: tar::Builder::new(Vec::new()),
            listed: Vec::new(),
        }
    }

    /// The members every archive needs, listed in the manifest.
    fn valid() -> Self {
        let mut crafted = Crafted::new();
        crafted.listed_file("database.dump", b"PGDMP fake dump");
        crafted.listed_file("env.production", ENV.as_bytes());
        crafted.listed_file("RESTORE.md", b"# Restoring\n");
        crafted
    }

    fn raw(&mut self, path: &[u8], entry_type: tar::EntryType, size: u64, data: &[u8]) {
        append_raw(&mut self.tar, path, entry_type, size, data);
    }

    fn file(&mut self, path: &str, data: &[u8]) {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Regular,
            data.len() as u64,
            data,
        );
    }

    fn listed_file(&mut self, path: &str, data: &[u8]) {
        self.file(path, data);
        self.list(path, data);
    }

    fn list(&mut self, path: &str, data: &[u8]) {
        self.listed.push(FileEntry {
            path: path.to_owned(),
            size: data.len() as u64,
            sha256: sha256_hex(data),
        });
    }

    fn manifest_json(&self) -> Vec<u8> {
        Manifest::new(description(), self.listed.clone()).to_json()
    }

    fn finish_with(mut self, manifest: &[u8]) -> Vec<u8> {
        self.file("manifest.json", manifest);
        self.tar.into_inner().unwrap()
    }

    fn finish(self) -> Vec<u8> {
        let manifest = self.manifest_json();
        self.finish_with(&manifest)
    }
}

fn read_bytes(
    bytes: &[u8],
    limits: Limits,
) -> Result<herd_portability::VerifiedArchive, ArchiveError> {
    read_archive(
        bytes,
        ReadOptions {
            identity: None,
            limits,
        },
        |_| Ok(()),
    )
}

fn refuse(bytes: &[u8]) -> ArchiveError {
    read_bytes(bytes, Limits::default()).unwrap_err()
}

#[test]
fn crafted_valid_archive_passes() {
    let mut crafted = Crafted::valid();
    crafted.raw(b"system/accounts/", tar::EntryType::Directory, 0, b"");
    crafted.listed_file("system/accounts/a.png", b"png");
    let verified = read_bytes(&crafted.finish(), Limits::default()).unwrap();
    assert_eq!(verified.directories, 1);
    assert_eq!(verified.files, 5);
}

#[test]
fn path_traversal_is_refused() {
    let mut crafted = Crafted::valid();
    crafted.file("../x", b"evil");
    let err = refuse(&crafted.finish());
    assert!(
        matches!(&err, ArchiveError::Path { path, error: PathError::ParentSegment(_) } if path == "../x"),
        "{err}"
    );
    let mut crafted = Crafted::valid();
    crafted.file("system/../../x", b"evil");
    assert!(matches!(
        refuse(&crafted.finish()),
        ArchiveError::Path {
            error: PathError::ParentSegment(_),
            ..
        }
    ));
}

#[test]
fn absolute_path_is_refused() {
    let mut crafted = Crafted::valid();
    crafted.file("/etc/cron.d/x", b"evil");
    let err = refuse(&crafted.finish());
    assert!(
        matches!(
            &err,
            ArchiveError::Path {
                error: PathError::Absolute(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn links_devices_and_fifos_are_refused() {
    for (entry_type, kind) in [
        (tar::EntryType::Symlink, "symbolic link"),
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
    ] {
        let mut crafted = Crafted::valid();
        crafted.raw(b"system/x", entry_type, 0, b"");
        let err = refuse(&crafted.finish());
        assert!(
            matches!(&err, ArchiveError::EntryType { path, kind: k } if path == "system/x" && *k == kind),
            "{kind}: {err}"
        );
    }
}

#[test]
fn unknown_top_level_entries_are_refused() {
    let mut crafted = Crafted::valid();
    crafted.file("etc/passwd", b"root");
    let err = refuse(&crafted.finish());
    assert!(
        matches!(
            &err,
            ArchiveError::Path {
                error: PathError::UnknownEntry(_),
                ..
            }
        ),
        "{err}"
    );
    let mut crafted = Crafted::valid();
    crafted.raw(b"etc/", tar::EntryType::Directory, 0, b"");
    assert!(matches!(
        refuse(&crafted.finish()),
        ArchiveError::Path {
            error: PathError::UnknownEntry(_),
            ..
        }
    ));
}

#[test]
fn checksum_mismatch_is_reported_with_both_digests() {
    let mut crafted = Crafted::valid();
    crafted.file("system/a.png", b"tampered");
    crafted.list("system/a.png", b"original");
    let err = refuse(&crafted.finish());
    let ArchiveError::Mismatch(mismatches) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        mismatches,
        &[Mismatch::Checksum {
            path: "system/a.png".to_owned(),
            listed: sha256_hex(b"original"),
            actual: sha256_hex(b"tampered"),
        }]
    );
    assert!(err.to_string().contains("system/a.png"), "{err}");
}

#[test]
fn size_mismatch_is_reported() {
    let mut crafted = Crafted::valid();
    crafted.file("system/a.png", b"longer content");
    crafted.list("system/a.png", b"short");
    assert!(matches!(
        refuse(&crafted.finish()).to_string(),
        text if text.contains("`system/a.png` is 14 bytes, listed as 5")
    ));
}

#[test]
fn files_missing_from_the_manifest_or_the_archive_are_all_reported() {
    let mut crafted = Crafted::valid();
    crafted.file("system/unlisted.png", b"u");
    crafted.list("system/gone.png", b"g");
    let err = refuse(&crafted.finish());
    let ArchiveError::Mismatch(mismatches) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        mismatches,
        &[
            Mismatch::Missing("system/gone.png".to_owned()),
            Mismatch::Unlisted("system/unlisted.png".to_owned()),
        ]
    );
}

#[test]
fn archive_without_manifest_is_refused() {
    let crafted = Crafted::valid();
    let bytes = crafted.tar.into_inner().unwrap();
    assert!(matches!(refuse(&bytes), ArchiveError::NoManifest));
}

#[test]
fn members_after_the_manifest_are_refused() {
    let crafted = Crafted::valid();
    let manifest = crafted.manifest_json();
    let mut bytes = crafted;
    bytes.file("manifest.json", &manifest);
    bytes.file("system/late.png", b"late");
    let bytes = bytes.tar.into_inner().unwrap();
    assert!(
        matches!(refuse(&bytes), ArchiveError::AfterManifest(path) if path == "system/late.png")
    );
}

#[test]
fn duplicate_members_are_refused() {
    let mut crafted = Crafted::valid();
    crafted.file("database.dump", b"second copy");
    assert!(
        matches!(refuse(&crafted.finish()), ArchiveError::Duplicate(p) if p == "database.dump")
    );
}

#[test]
fn future_manifest_version_is_named() {
    let crafted = Crafted::valid();
    let manifest = String::from_utf8(crafted.manifest_json())
        .unwrap()
        .replace("\"format_version\": 1,", "\"format_version\": 2,");
    let err = refuse(&crafted.finish_with(manifest.as_bytes()));
    assert!(
        matches!(err, ArchiveError::Manifest(ManifestError::FutureVersion(2))),
        "{err}"
    );
    assert!(err.to_string().contains("newer Herd"));

    // A newer format's new members do not hide its version.
    let mut crafted = Crafted::valid();
    crafted.listed_file("thumbnails/x", b"new in v2");
    let manifest = String::from_utf8(crafted.manifest_json())
        .unwrap()
        .replace("\"format_version\": 1,", "\"format_version\": 2,");
    assert!(matches!(
        refuse(&crafted.finish_with(manifest.as_bytes())),
        ArchiveError::Manifest(ManifestError::FutureVersion(2))
    ));
}

#[test]
fn env_of_another_instance_is_refused() {
    let mut crafted = Crafted::new();
    crafted.listed_file("database.dump", b"PGDMP");
    crafted.listed_file(
        "env.production",
        b"LOCAL_DOMAIN=other.social\nSECRET_KEY_BASE=x\n",
    );
    crafted.listed_file("RESTORE.md", b"#");
    let err = refuse(&crafted.finish());
    assert!(err.to_string().contains("other.social"), "{err}");
}

#[test]
fn huge_declared_size_is_refused_before_reading() {
    let mut crafted = Crafted::valid();
    // 10 TB declared, no content behind it.
    crafted.raw(b"system/huge.bin", tar::EntryType::Regular, 10 << 40, b"");
    let bytes = crafted.tar.into_inner().unwrap();
    let err = refuse(&bytes);
    assert!(
        matches!(&err, ArchiveError::Limit(LimitError::FileTooLarge { path, size, .. }) if path == "system/huge.bin" && *size == 10 << 40),
        "{err}"
    );
}

#[test]
fn oversized_env_and_totals_and_counts_are_refused() {
    let mut crafted = Crafted::new();
    crafted.listed_file("env.production", &vec![b'#'; 65 * 1024]);
    assert!(matches!(
        refuse(&crafted.finish()),
        ArchiveError::Limit(LimitError::SmallFileTooLarge { .. })
    ));

    let small = Limits {
        max_total_bytes: 40,
        max_file_bytes: 30,
        max_files: 4,
        max_ratio: 100,
    };
    let mut crafted = Crafted::new();
    crafted.listed_file("database.dump", &[0; 25]);
    crafted.listed_file("system/a", &[0; 25]);
    assert!(matches!(
        read_bytes(&crafted.finish(), small).unwrap_err(),
        ArchiveError::Limit(LimitError::TotalTooLarge { limit: 40 })
    ));
    let mut crafted = Crafted::new();
    for name in ["system/a", "system/b", "system/c", "system/d", "system/e"] {
        crafted.listed_file(name, b"");
    }
    assert!(matches!(
        read_bytes(&crafted.finish(), small).unwrap_err(),
        ArchiveError::Limit(LimitError::TooManyFiles { limit: 4 })
    ));
}

#[test]
fn zstd_bomb_is_stopped_early() {
    const ZEROS: u64 = 64 << 20;
    let mut encoder = zstd::Encoder::new(Vec::new(), 19).unwrap();
    {
        let mut tar = tar::Builder::new(&mut encoder);
        let mut header = tar::Header::new_gnu();
        header.set_path("database.dump").unwrap();
        header.set_size(ZEROS);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, io::repeat(0).take(ZEROS)).unwrap();
        tar.finish().unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 64 * 1024, "the bomb is {} bytes", bomb.len());

    let limits = Limits {
        max_ratio: 100,
        ..Limits::default()
    };
    let err = read_bytes(&bomb, limits).unwrap_err();
    let ArchiveError::Limit(LimitError::Ratio {
        decompressed,
        limit: 100,
        ..
    }) = err
    else {
        panic!("{err}")
    };
    // Stopped just past the grace amount, far from the 64 MiB declared.
    assert!(
        decompressed > RATIO_GRACE_BYTES && decompressed < 2 * RATIO_GRACE_BYTES,
        "{decompressed}"
    );
}

#[test]
fn gzip_is_named() {
    let gzip = [&[0x1f, 0x8b, 0x08, 0x00][..], &Crafted::valid().finish()].concat();
    let err = refuse(&gzip);
    assert!(matches!(err, ArchiveError::Gzip), "{err}");
    assert!(err.to_string().contains("gzip"), "{err}");
}

#[test]
fn truncated_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive");
    let written = write_archive(&path, &WriteOptions::default());
    let whole = fs::read(&path).unwrap();
    // The two zero blocks closing a tar carry nothing; any cut before them loses content.
    let content_end = whole.len() - 1024;
    for cut in [
        1,
        100,
        512,
        700,
        200_000,
        content_end - 600,
        content_end - 512,
        content_end - 1,
    ] {
        let err = refuse(&whole[..cut]);
        assert!(
            matches!(
                err,
                ArchiveError::Truncated(_)
                    | ArchiveError::TruncatedHeader
                    | ArchiveError::NoManifest
            ),
            "cut at {cut}: {err}"
        );
    }
    assert!(
        matches!(refuse(&whole[..200_000]), ArchiveError::Truncated(p) if p == "database.dump")
    );
    assert!(matches!(
        refuse(&whole[..100]),
        ArchiveError::TruncatedHeader
    ));
    // Cut exactly before the manifest's header: every member before it is whole.
    let manifest_len = written.to_json().len();
    let manifest_header = content_end - 512 - manifest_len.div_ceil(512) * 512;
    assert!(matches!(
        refuse(&whole[..manifest_header]),
        ArchiveError::NoManifest
    ));
}

#[test]
fn truncated_compressed_and_encrypted_archives_are_refused() {
    let identity = Identity::generate();
    let compressed = WriteOptions {
        zstd_level: Some(3),
        ..WriteOptions::default()
    };
    let encrypted = WriteOptions {
        recipient: Some(identity.to_public()),
        ..WriteOptions::default()
    };
    type Expected = fn(&ArchiveError) -> bool;
    let cases: [(WriteOptions, Expected); 2] = [
        (compressed, |e| matches!(e, ArchiveError::Truncated(_))),
        // age authenticates every chunk and marks the last one, so a cut
        // is an authentication failure like any alteration.
        (encrypted, |e| matches!(e, ArchiveError::Unauthenticated(_))),
    ];
    for (options, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive");
        write_archive(&path, &options);
        let whole = fs::read(&path).unwrap();
        for cut in [whole.len() / 2, whole.len() - 20] {
            let cut_path: PathBuf = dir.path().join("cut");
            fs::write(&cut_path, &whole[..cut]).unwrap();
            let err = verify(&cut_path, Some(&identity)).unwrap_err();
            assert!(expected(&err), "cut at {cut}: {err}");
        }
    }
}

#[test]
fn verify_with_applies_the_given_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive");
    write_archive(&path, &WriteOptions::default());
    let err = verify_with(
        &path,
        ReadOptions {
            identity: None,
            limits: Limits {
                max_file_bytes: 1 << 20,
                ..Limits::default()
            },
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, ArchiveError::Limit(LimitError::FileTooLarge { .. })),
        "{err}"
    );
}

#[test]
fn pax_and_long_name_headers_name_members() {
    let mut crafted = Crafted::valid();
    let long = format!("system/{}/a.png", "x".repeat(150));
    crafted
        .tar
        .append_pax_extensions([("path", long.as_bytes()), ("mtime", b"1.5".as_slice())])
        .unwrap();
    crafted.file("system/short-name-ignored", b"png");
    crafted.list(&long, b"png");
    read_bytes(&crafted.finish(), Limits::default()).unwrap();

    let mut crafted = Crafted::valid();
    crafted
        .tar
        .append_pax_extensions([("path", b"../escape".as_slice())])
        .unwrap();
    crafted.file("system/innocent", b"x");
    assert!(matches!(
        refuse(&crafted.finish()),
        ArchiveError::Path {
            error: PathError::ParentSegment(_),
            ..
        }
    ));
}

#[test]
fn oversized_or_contradicting_extension_headers_are_refused() {
    // A long name of 10 MB would be read whole by a naive reader.
    let mut crafted = Crafted::valid();
    crafted.raw(
        b"././@LongLink",
        tar::EntryType::GNULongName,
        10 << 20,
        &vec![b'a'; 10 << 20],
    );
    crafted.file("system/x", b"x");
    assert!(matches!(
        refuse(&crafted.finish()),
        ArchiveError::ExtensionTooLarge {
            kind: "GNU long name",
            ..
        }
    ));

    let mut crafted = Crafted::valid();
    crafted
        .tar
        .append_pax_extensions([("size", b"999".as_slice())])
        .unwrap();
    crafted.file("system/x", b"x");
    assert!(matches!(
        refuse(&crafted.finish()),
        ArchiveError::ExtensionHeader(_)
    ));

    let mut crafted = Crafted::valid();
    crafted.raw(
        b"././@LongLink",
        tar::EntryType::GNULongName,
        9,
        b"system/a\0",
    );
    crafted.raw(
        b"././@LongLink",
        tar::EntryType::GNULongName,
        9,
        b"system/b\0",
    );
    crafted.file("system/x", b"x");
    assert!(matches!(
        refuse(&crafted.finish()),
        ArchiveError::ExtensionHeader(_)
    ));
}
