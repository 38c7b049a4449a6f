//! A plain Mastodon backup, as Mastodon's admin documentation describes it
//! and other hosts hand it over, turned into an archive of format v1, so
//! that importing has one path whatever the source.
//!
//! The media tar is as untrusted as an archive and is read with the same
//! checks, member by member; each file streams from it into the writer
//! with its declared size, so memory does not grow with the bytes.

use std::io::{self, Read, Write};

use herd_core::archive::{
    DATABASE_PATH, Description, ENV_PATH, EnvFile, Limits, Manifest, MemberKind, PathError,
    SYSTEM_DIR, check_directory_path,
};

use crate::error::ArchiveError;
use crate::layers;
use crate::members::{Members, Tally, TarMember, TarStream};
use crate::writer::{ArchiveWriter, WriteOptions};

/// What every `pg_dump -Fc` file starts with.
const PG_DUMP_MAGIC: &[u8] = b"PGDMP";

/// The three parts of a plain backup.
pub struct PlainBackup<D: Read, S: Read> {
    /// The database, `pg_dump -Fc`.
    pub dump: D,
    pub dump_size: u64,
    /// The `public/system` tree as a tar, plain or zstd-compressed; `None`
    /// for a server without local media.
    pub system_tar: Option<S>,
    /// `.env.production`.
    pub env: EnvFile,
}

/// Writes `backup` to `output` as an archive described by `description`.
///
/// The env file must be of `description.local_domain` and the dump must be
/// in custom format; the media tar obeys the rules an archive does
/// (regular files and directories only, safe paths, `limits`), its paths
/// read relative to `public/system`, `system` or the media root itself.
/// The env file is carried whole: importing drops the old host's
/// connection settings from it, as from any archive, and reports them.
pub fn pack_plain_backup<W: Write, D: Read, S: Read>(
    output: W,
    options: &WriteOptions,
    limits: Limits,
    backup: PlainBackup<D, S>,
    description: Description,
) -> Result<(Manifest, W), ArchiveError> {
    backup.env.check_against(&description.local_domain)?;
    let env = backup.env.render();
    limits.check_small_file(MemberKind::Env, ENV_PATH, env.len() as u64)?;
    let mut tally = Tally::default();
    tally.add(&limits, DATABASE_PATH, backup.dump_size)?;
    tally.add(&limits, ENV_PATH, env.len() as u64)?;

    let mut dump = backup.dump;
    let mut magic = Vec::with_capacity(PG_DUMP_MAGIC.len());
    (&mut dump)
        .take(PG_DUMP_MAGIC.len() as u64)
        .read_to_end(&mut magic)?;
    if magic != PG_DUMP_MAGIC {
        return Err(ArchiveError::NotCustomDump);
    }

    let mut writer = ArchiveWriter::new(output, options)?;
    writer.add_file(
        DATABASE_PATH,
        backup.dump_size,
        magic.as_slice().chain(dump),
    )?;
    writer.add_bytes(ENV_PATH, env.as_bytes())?;
    if let Some(system_tar) = backup.system_tar {
        add_media(&mut writer, system_tar, limits, tally)?;
    }
    writer.finish(description)
}

fn add_media<W: Write>(
    writer: &mut ArchiveWriter<W>,
    system_tar: impl Read,
    limits: Limits,
    tally: Tally,
) -> Result<(), ArchiveError> {
    let (stream, mut archive) = TarStream::open(layers::open_unencrypted(system_tar, limits)?);
    let mut members = Members::new(&mut archive, &stream, limits, tally)?;
    while let Some(member) = members.next()? {
        let TarMember {
            path: tar_path,
            size,
            directory,
            mut entry,
        } = member;
        let path = media_path(&tar_path).map_err(|error| ArchiveError::Path {
            path: tar_path.clone(),
            error,
        })?;
        if directory {
            // Checked although not written (the writer writes files
            // only), so a hostile tar is refused whatever it holds. The
            // top directory comes out as `system/`, which passes.
            check_directory_path(&path).map_err(|error| ArchiveError::Path {
                path: tar_path,
                error,
            })?;
            continue;
        }
        writer
            .add_file(&path, size, &mut entry)
            .map_err(|error| media_error(&stream, &tar_path, error))?;
    }
    if stream.ended() {
        return Err(ArchiveError::NoTarEnd);
    }
    Ok(())
}

/// Where a member of the media tar goes: below `system/`, whether the tar
/// was made of `public/system`, of `system` or inside it (`./accounts/...`).
fn media_path(tar_path: &str) -> Result<String, PathError> {
    let path = tar_path.strip_prefix("./").unwrap_or(tar_path);
    // Below `system/` a leading `/` would read as an empty segment; it is
    // named for what it is.
    if path.starts_with('/') {
        return Err(PathError::Absolute(tar_path.to_owned()));
    }
    let rest = ["public/system/", "system/"]
        .into_iter()
        .find_map(|root| path.strip_prefix(root))
        .unwrap_or(path);
    Ok(format!("{SYSTEM_DIR}/{rest}"))
}

/// Names the tar member at fault and the cause: the writer knows only the
/// archive path and sees a cut-off tar as a short or failed read.
fn media_error(stream: &TarStream<'_>, tar_path: &str, error: ArchiveError) -> ArchiveError {
    match error {
        ArchiveError::Path { error, .. } => ArchiveError::Path {
            path: tar_path.to_owned(),
            error,
        },
        ArchiveError::Io(error) => stream.classify(error, Some(tar_path)),
        ArchiveError::SourceSize { .. } => {
            stream.classify(io::ErrorKind::UnexpectedEof.into(), Some(tar_path))
        }
        other => other,
    }
}
