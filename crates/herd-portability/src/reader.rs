//! Reading and verifying an archive in one pass.
//!
//! Everything that can be judged from a tar header (type, path, declared
//! size, count) is judged before the member's content is read, and the
//! decompression ratio is checked as bytes come out of zstd, so hostile
//! input costs little. What needs the manifest (digests, listed and unlisted
//! files) is judged at the end, since the manifest comes last.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use herd_core::archive::{
    EnvFile, Limits, MAX_PATH_BYTES, Manifest, MemberKind, PathError, check_directory_path,
    check_member_path,
};

use crate::digest::{Hashing, sha256, to_hex};
use crate::error::{ArchiveError, Mismatch};
use crate::layers::{self, Source};

#[derive(Clone, Copy, Default)]
pub struct ReadOptions<'a> {
    /// Decrypts an age-encrypted archive; an encrypted archive without it
    /// is refused with [`ArchiveError::IdentityRequired`].
    pub identity: Option<&'a age::x25519::Identity>,
    pub limits: Limits,
}

/// An archive that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedArchive {
    pub manifest: Manifest,
    /// `env.production` as it is in the archive; `EnvFile::filter` tells
    /// which keys an import carries over.
    pub env: EnvFile,
    pub encrypted: bool,
    pub compressed: bool,
    /// Regular files, the manifest included.
    pub files: u64,
    pub directories: u64,
    /// Bytes of content, the manifest included.
    pub content_bytes: u64,
}

/// A member as it streams past. Its content is unverified until
/// [`read_archive`] returns `Ok`: a consumer stages what it reads and
/// commits only then.
pub struct Member<'r> {
    path: &'r str,
    kind: MemberKind,
    size: u64,
    content: &'r mut dyn Read,
}

impl Member<'_> {
    pub fn path(&self) -> &str {
        self.path
    }

    pub fn kind(&self) -> MemberKind {
        self.kind
    }

    /// The size the tar header declares, within the limits.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for Member<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.content.read(buf)
    }
}

/// Checks the archive at `path` with the default limits.
pub fn verify(
    path: &Path,
    identity: Option<&age::x25519::Identity>,
) -> Result<VerifiedArchive, ArchiveError> {
    verify_with(
        path,
        ReadOptions {
            identity,
            limits: Limits::default(),
        },
    )
}

pub fn verify_with(path: &Path, options: ReadOptions<'_>) -> Result<VerifiedArchive, ArchiveError> {
    read_archive(File::open(path)?, options, |_| Ok(()))
}

/// Reads the whole archive once, handing every member except the manifest
/// to `visit` (which may read any part of it; the rest is skipped), and
/// checks everything format v1 requires. The first structural fault stops
/// the read; differences from the manifest are all reported together.
pub fn read_archive<R: Read>(
    input: R,
    options: ReadOptions<'_>,
    mut visit: impl FnMut(&mut Member<'_>) -> io::Result<()>,
) -> Result<VerifiedArchive, ArchiveError> {
    let mut source = layers::open(input, options.identity, options.limits)?;
    let ended = Rc::new(Cell::new(false));
    let stream = NoticeEnd {
        inner: std::mem::replace(&mut source.tar, Box::new(io::empty())),
        ended: ended.clone(),
    };
    let classify = |error: io::Error, path: Option<&str>| -> ArchiveError {
        if let Some(limit) = source.ratio_error() {
            limit.into()
        } else if source.decryption_failed() {
            ArchiveError::Unauthenticated(error)
        } else if ended.get() || error.kind() == io::ErrorKind::UnexpectedEof {
            path.map_or(ArchiveError::TruncatedHeader, |p| {
                ArchiveError::Truncated(p.to_owned())
            })
        } else {
            ArchiveError::Io(error)
        }
    };

    let limits = options.limits;
    let mut scan = Scan::default();
    let mut pending = Extensions::default();
    let mut archive = tar::Archive::new(stream);
    // Raw entries: the tar crate would read long-name and pax headers whole
    // into memory whatever their declared size; read here, they are bounded.
    let entries = archive.entries().map_err(|e| classify(e, None))?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|e| classify(e, None))?;
        let entry_type = entry.header().entry_type();
        if entry_type.is_gnu_longname() || entry_type.is_pax_local_extensions() {
            pending.read(&mut entry, entry_type.is_gnu_longname(), &classify)?;
            continue;
        }
        scan.entries += 1;
        limits.check_count(scan.entries)?;
        let described = std::mem::take(&mut pending);
        let path = match described.path {
            Some(path) => path,
            None => String::from_utf8(entry.path_bytes().into_owned())
                .map_err(|_| ArchiveError::NotUtf8Path)?,
        };
        let size = entry.size();
        if described.size.is_some_and(|pax| pax != size) {
            return Err(ArchiveError::ExtensionHeader(
                "a pax size that differs from the tar header's",
            ));
        }
        limits.check_member(&path, size, scan.content_bytes)?;
        scan.content_bytes += size;
        if scan.manifest.is_some() {
            return Err(ArchiveError::AfterManifest(path));
        }
        match entry_type {
            tar::EntryType::Regular => {}
            tar::EntryType::Directory => {
                check_directory_path(&path).map_err(|error| ArchiveError::Path {
                    path: path.clone(),
                    error,
                })?;
                scan.directories += 1;
                continue;
            }
            other => {
                return Err(ArchiveError::EntryType {
                    path,
                    kind: entry_type_name(other),
                });
            }
        }
        if !scan.paths.insert(path.clone()) {
            return Err(ArchiveError::Duplicate(path));
        }
        let kind = match check_member_path(&path) {
            Ok(kind) => kind,
            // A newer format may add members; skipping them until the
            // manifest is read lets its version be named instead.
            Err(PathError::UnknownEntry(_)) => {
                let skipped =
                    io::copy(&mut entry, &mut io::sink()).map_err(|e| classify(e, Some(&path)))?;
                if skipped != size {
                    return Err(ArchiveError::Truncated(path));
                }
                scan.unknown.get_or_insert(path);
                continue;
            }
            Err(error) => return Err(ArchiveError::Path { path, error }),
        };
        match kind {
            MemberKind::Manifest | MemberKind::Env => {
                limits.check_small_file(kind, &path, size)?;
                // Grown as bytes arrive, not by the declared size.
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut bytes)
                    .map_err(|e| classify(e, Some(&path)))?;
                if bytes.len() as u64 != size {
                    return Err(ArchiveError::Truncated(path));
                }
                if kind == MemberKind::Manifest {
                    scan.manifest = Some(bytes);
                } else {
                    let mut member = Member {
                        path: &path,
                        kind,
                        size,
                        content: &mut bytes.as_slice(),
                    };
                    visit(&mut member).map_err(|error| visitor_error(&source, &path, error))?;
                    scan.digests.insert(path, (size, sha256(&bytes)));
                    scan.env = Some(bytes);
                }
            }
            _ => {
                let mut hashing = Hashing::new(&mut entry);
                let mut member = Member {
                    path: &path,
                    kind,
                    size,
                    content: &mut hashing,
                };
                visit(&mut member).map_err(|error| visitor_error(&source, &path, error))?;
                io::copy(&mut hashing, &mut io::sink()).map_err(|e| classify(e, Some(&path)))?;
                if hashing.count() != size {
                    return Err(ArchiveError::Truncated(path));
                }
                let (_, count, digest) = hashing.into_parts();
                scan.digests.insert(path, (count, digest));
            }
        }
    }
    if pending.long_name_seen || pending.pax_seen {
        return Err(ArchiveError::TruncatedHeader);
    }
    scan.conclude(source.encrypted, source.compressed)
}

/// A GNU long name or pax header waiting for the member it describes.
#[derive(Default)]
struct Extensions {
    path: Option<String>,
    size: Option<u64>,
    long_name_seen: bool,
    pax_seen: bool,
}

/// Pax records beyond a path and a size (times, owners, xattrs) are small;
/// anything larger is not an archive of format v1.
const MAX_PAX_BYTES: u64 = 64 * 1024;

impl Extensions {
    fn read(
        &mut self,
        entry: &mut impl Read,
        long_name: bool,
        classify: &impl Fn(io::Error, Option<&str>) -> ArchiveError,
    ) -> Result<(), ArchiveError> {
        let (kind, limit) = if long_name {
            ("GNU long name", MAX_PATH_BYTES as u64 + 1)
        } else {
            ("pax header", MAX_PAX_BYTES)
        };
        let mut bytes = Vec::new();
        entry
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| classify(e, None))?;
        if bytes.len() as u64 > limit {
            return Err(ArchiveError::ExtensionTooLarge { kind, limit });
        }
        let seen = if long_name {
            &mut self.long_name_seen
        } else {
            &mut self.pax_seen
        };
        if std::mem::replace(seen, true) {
            return Err(ArchiveError::ExtensionHeader(
                "two extension headers of one kind before one member",
            ));
        }
        if long_name {
            let name = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
            self.path =
                Some(String::from_utf8(name.to_vec()).map_err(|_| ArchiveError::NotUtf8Path)?);
            return Ok(());
        }
        for record in tar::PaxExtensions::new(&bytes) {
            let record =
                record.map_err(|_| ArchiveError::ExtensionHeader("a malformed pax record"))?;
            match record.key_bytes() {
                b"path" => {
                    let path = record.value().map_err(|_| ArchiveError::NotUtf8Path)?;
                    self.path = Some(path.to_owned());
                }
                b"size" => {
                    let size = record.value().ok().and_then(|v| v.parse().ok()).ok_or(
                        ArchiveError::ExtensionHeader("a pax size that is not a number"),
                    )?;
                    self.size = Some(size);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What one pass collected.
#[derive(Default)]
struct Scan {
    entries: u64,
    directories: u64,
    content_bytes: u64,
    paths: HashSet<String>,
    /// Size and SHA-256 of every member but the manifest.
    digests: HashMap<String, (u64, [u8; 32])>,
    manifest: Option<Vec<u8>>,
    env: Option<Vec<u8>>,
    unknown: Option<String>,
}

impl Scan {
    fn conclude(
        mut self,
        encrypted: bool,
        compressed: bool,
    ) -> Result<VerifiedArchive, ArchiveError> {
        let manifest = Manifest::from_json(&self.manifest.ok_or(ArchiveError::NoManifest)?)?;
        if let Some(path) = self.unknown {
            return Err(ArchiveError::Path {
                error: PathError::UnknownEntry(path.clone()),
                path,
            });
        }
        let mut mismatches = Vec::new();
        for listed in &manifest.files {
            let Some((size, digest)) = self.digests.remove(&listed.path) else {
                mismatches.push(Mismatch::Missing(listed.path.clone()));
                continue;
            };
            let actual = to_hex(&digest);
            if size != listed.size {
                mismatches.push(Mismatch::Size {
                    path: listed.path.clone(),
                    listed: listed.size,
                    actual: size,
                });
            } else if actual != listed.sha256 {
                mismatches.push(Mismatch::Checksum {
                    path: listed.path.clone(),
                    listed: listed.sha256.clone(),
                    actual,
                });
            }
        }
        let mut unlisted: Vec<String> = self.digests.into_keys().collect();
        unlisted.sort();
        mismatches.extend(unlisted.into_iter().map(Mismatch::Unlisted));
        if !mismatches.is_empty() {
            return Err(ArchiveError::Mismatch(mismatches));
        }
        // Present, since the manifest must list it and nothing is missing.
        let env_bytes = self.env.unwrap_or_default();
        let env =
            EnvFile::parse(std::str::from_utf8(&env_bytes).map_err(|_| ArchiveError::EnvNotUtf8)?)?;
        env.check_against(&manifest.description.local_domain)?;
        Ok(VerifiedArchive {
            manifest,
            env,
            encrypted,
            compressed,
            files: self.paths.len() as u64,
            directories: self.directories,
            content_bytes: self.content_bytes,
        })
    }
}

fn visitor_error(source: &Source<'_>, path: &str, error: io::Error) -> ArchiveError {
    match source.ratio_error() {
        Some(limit) => limit.into(),
        None => ArchiveError::Visitor {
            path: path.to_owned(),
            error,
        },
    }
}

fn entry_type_name(entry_type: tar::EntryType) -> &'static str {
    match entry_type {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::Continuous => "contiguous file",
        tar::EntryType::GNUSparse => "sparse file",
        tar::EntryType::XGlobalHeader => "pax global header",
        tar::EntryType::GNULongLink => "GNU long link name",
        _ => "member of an unknown type",
    }
}

/// Remembers that the stream below tar ended, which tells a cut-off archive
/// from other read errors.
struct NoticeEnd<R> {
    inner: R,
    ended: Rc<Cell<bool>>,
}

impl<R: Read> Read for NoticeEnd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended.set(true);
        }
        Ok(n)
    }
}
