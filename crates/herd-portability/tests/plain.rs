//! Plain Mastodon backups converted into archives, and hostile media tars,
//! each refused with its own error.

use std::io::Read;

use herd_core::archive::{EnvError, EnvFile, LimitError, Limits, Manifest, PathError};
use herd_portability::{
    ArchiveError, PlainBackup, ReadOptions, WriteOptions, pack_plain_backup, read_archive, verify,
};

mod common;
use common::{ENV, append_raw, description, sha256_hex};

const DUMP: &[u8] = b"PGDMP\x01\x0e\x00\x04\x08\x01\x01 and the rest of a custom-format dump";

/// An env file as another host has it: connection settings included.
fn env() -> EnvFile {
    EnvFile::parse(&format!(
        "{ENV}DB_HOST=db.old-host.internal\nDB_PASS=hunter2\n"
    ))
    .unwrap()
}

/// The media of the good backup, by path below `public/system`; one path
/// is too long for a plain tar header.
fn media() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "accounts/avatars/109/876/543/original/a.png".to_owned(),
            b"avatar".to_vec(),
        ),
        (
            format!(
                "media_attachments/files/{}/original/{}.jpg",
                "123/".repeat(30).trim_end_matches('/'),
                "long".repeat(20)
            ),
            vec![7; 70_000],
        ),
        ("site_uploads/empty.txt".to_owned(), Vec::new()),
    ]
}

/// The media tar as `tar -cf system.tar <root>` writes it: the directories,
/// then the files, each path below `root`.
fn media_tar(root: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["", "accounts/", "accounts/avatars/"] {
        append_named(
            &mut tar,
            &format!("{root}{dir}"),
            tar::EntryType::Directory,
            b"",
        );
    }
    for (path, bytes) in media() {
        append_named(
            &mut tar,
            &format!("{root}{path}"),
            tar::EntryType::Regular,
            &bytes,
        );
    }
    tar.into_inner().unwrap()
}

/// Appends a member as GNU tar does: a path as given (the tar crate would
/// drop a leading `./`), in a long-name header first from 100 bytes on.
fn append_named(tar: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8]) {
    let path = path.as_bytes();
    if path.len() >= 100 {
        let name = [path, b"\0"].concat();
        let size = name.len() as u64;
        append_raw(
            tar,
            b"././@LongLink",
            tar::EntryType::GNULongName,
            size,
            &name,
        );
    }
    let short = &path[..path.len().min(100)];
    append_raw(tar, short, kind, data.len() as u64, data);
}

fn pack(
    dump: &[u8],
    system_tar: Option<&[u8]>,
    env: EnvFile,
    limits: Limits,
) -> Result<(Manifest, Vec<u8>), ArchiveError> {
    pack_plain_backup(
        Vec::new(),
        &WriteOptions::default(),
        limits,
        PlainBackup {
            dump,
            dump_size: dump.len() as u64,
            system_tar,
            env,
        },
        description(),
    )
}

fn pack_media(system_tar: &[u8]) -> Result<(Manifest, Vec<u8>), ArchiveError> {
    pack(DUMP, Some(system_tar), env(), Limits::default())
}

/// A media tar of one crafted member, then a file that would pass.
fn hostile_tar(path: &[u8], entry_type: tar::EntryType, size: u64) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    append_raw(&mut tar, path, entry_type, size, b"");
    append_raw(
        &mut tar,
        b"accounts/a.png",
        tar::EntryType::Regular,
        1,
        b"x",
    );
    tar.into_inner().unwrap()
}

fn archive_paths(manifest: &Manifest) -> Vec<&str> {
    manifest.files.iter().map(|f| f.path.as_str()).collect()
}

#[test]
fn good_backup_packs_into_an_archive_that_verifies() {
    let (manifest, bytes) = pack_media(&media_tar("public/system/")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.tar");
    std::fs::write(&path, &bytes).unwrap();
    let verified = verify(&path, None).unwrap();
    assert_eq!(verified.manifest, manifest);
    assert_eq!(verified.directories, 0, "directories are not written");
    assert_eq!(verified.env, env());

    let mut seen = Vec::new();
    read_archive(
        bytes.as_slice(),
        ReadOptions {
            identity: None,
            limits: Limits::default(),
        },
        |member| {
            let mut content = Vec::new();
            member.read_to_end(&mut content)?;
            seen.push((member.path().to_owned(), sha256_hex(&content)));
            Ok(())
        },
    )
    .unwrap();
    let mut expected = vec![
        ("database.dump".to_owned(), sha256_hex(DUMP)),
        (
            "env.production".to_owned(),
            sha256_hex(env().render().as_bytes()),
        ),
    ];
    expected.extend(
        media()
            .into_iter()
            .map(|(path, bytes)| (format!("system/{path}"), sha256_hex(&bytes))),
    );
    assert_eq!(seen[..expected.len()], expected);
    assert_eq!(seen.last().unwrap().0, "RESTORE.md");
    let listed: Vec<(String, String)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect();
    assert_eq!(listed, seen);
}

#[test]
fn the_three_layouts_of_a_media_tar_give_the_same_archive_paths() {
    let (from_public, _) = pack_media(&media_tar("public/system/")).unwrap();
    let (from_system, _) = pack_media(&media_tar("system/")).unwrap();
    let (from_inside, _) = pack_media(&media_tar("./")).unwrap();
    assert_eq!(from_public.files, from_system.files);
    assert_eq!(from_public.files, from_inside.files);
    assert!(
        archive_paths(&from_inside).contains(&"system/accounts/avatars/109/876/543/original/a.png")
    );
}

#[test]
fn backup_without_media_packs() {
    let (manifest, _) = pack(DUMP, None, env(), Limits::default()).unwrap();
    assert_eq!(
        archive_paths(&manifest),
        ["database.dump", "env.production", "RESTORE.md"]
    );
}

#[test]
fn zstd_media_tar_is_read_and_gzip_is_named() {
    let tar = media_tar("public/system/");
    let compressed = zstd::encode_all(tar.as_slice(), 3).unwrap();
    let (manifest, _) = pack_media(&compressed).unwrap();
    assert_eq!(manifest, pack_media(&tar).unwrap().0);

    let gzip = [&[0x1f, 0x8b, 0x08, 0x00][..], &tar].concat();
    assert!(matches!(pack_media(&gzip), Err(ArchiveError::Gzip)));
}

#[test]
fn dump_not_in_custom_format_is_refused() {
    for dump in [&b"--\n-- PostgreSQL database dump\n--\n"[..], b"PGD"] {
        let err = pack(dump, None, env(), Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::NotCustomDump), "{err}");
        assert!(err.to_string().contains("pg_dump -Fc"), "{err}");
    }
}

#[test]
fn env_of_another_domain_is_refused() {
    let other = EnvFile::parse("LOCAL_DOMAIN=other.social\nSECRET_KEY_BASE=x\n").unwrap();
    let err = pack(DUMP, None, other, Limits::default()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Env(EnvError::DomainMismatch { found, .. }) if found == "other.social"),
        "{err}"
    );
}

#[test]
fn links_devices_and_fifos_in_the_media_tar_are_refused() {
    for (entry_type, kind) in [
        (tar::EntryType::Symlink, "symbolic link"),
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
    ] {
        let err = pack_media(&hostile_tar(b"accounts/x", entry_type, 0)).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::EntryType { path, kind: k } if path == "accounts/x" && *k == kind),
            "{kind}: {err}"
        );
    }
}

#[test]
fn escaping_and_absolute_paths_are_refused() {
    type Expected = fn(&PathError) -> bool;
    let cases: [(&str, Expected); 5] = [
        ("../x", |e| matches!(e, PathError::ParentSegment(_))),
        ("public/system/../../x", |e| {
            matches!(e, PathError::ParentSegment(_))
        }),
        ("/etc/cron.d/x", |e| matches!(e, PathError::Absolute(_))),
        ("./../x", |e| matches!(e, PathError::ParentSegment(_))),
        ("././x", |e| matches!(e, PathError::CurrentSegment(_))),
    ];
    for (tar_path, expected) in cases {
        let tar = hostile_tar(tar_path.as_bytes(), tar::EntryType::Regular, 0);
        let err = pack_media(&tar).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Path { path, error } if path == tar_path && expected(error)),
            "{tar_path}: {err}"
        );
    }
    let tar = hostile_tar(b"../", tar::EntryType::Directory, 0);
    assert!(matches!(
        pack_media(&tar),
        Err(ArchiveError::Path {
            error: PathError::ParentSegment(_),
            ..
        })
    ));
}

#[test]
fn declared_size_above_the_limit_is_refused_before_reading() {
    // 10 TB declared, no content behind it.
    let tar = hostile_tar(b"huge.bin", tar::EntryType::Regular, 10 << 40);
    let err = pack_media(&tar).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Limit(LimitError::FileTooLarge { path, size, .. }) if path == "huge.bin" && *size == 10 << 40),
        "{err}"
    );
}

#[test]
fn totals_and_counts_include_the_dump_and_the_env_file() {
    let few = Limits {
        // The dump, the env file and the media tar's three directories.
        max_files: 5,
        ..Limits::default()
    };
    let err = pack(DUMP, Some(&media_tar("./")), env(), few).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::Limit(LimitError::TooManyFiles { limit: 5 })
        ),
        "{err}"
    );

    let small = Limits {
        max_total_bytes: 70_000,
        ..Limits::default()
    };
    let err = pack(DUMP, Some(&media_tar("./")), env(), small).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::Limit(LimitError::TotalTooLarge { limit: 70_000 })
        ),
        "{err}"
    );
}

#[test]
fn cut_off_media_tar_is_refused() {
    let tar = media_tar("./");
    // Two blocks of zeros end a tar; before them, an empty file's header,
    // before that the content of the long-named file.
    let end = tar.len() - 1024;
    assert!(matches!(
        pack_media(&tar[..end]),
        Err(ArchiveError::NoTarEnd)
    ));
    assert!(matches!(
        pack_media(&tar[..end - 100]),
        Err(ArchiveError::TruncatedHeader)
    ));
    let (long_name, _) = &media()[1];
    let err = pack_media(&tar[..end - 512 - 1000]).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Truncated(path) if *path == format!("./{long_name}")),
        "{err}"
    );
}

#[test]
fn the_same_file_under_two_roots_is_refused() {
    let mut tar = tar::Builder::new(Vec::new());
    append_raw(&mut tar, b"system/a.png", tar::EntryType::Regular, 1, b"x");
    append_raw(&mut tar, b"./a.png", tar::EntryType::Regular, 1, b"y");
    let err = pack_media(&tar.into_inner().unwrap()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Duplicate(path) if path == "system/a.png"),
        "{err}"
    );
}
