//! Reading and verifying an archive in one pass.
//!
//! Everything that can be judged from a tar header (type, path, declared
//! size, count) is judged before the member's content is read, and the
//! decompression ratio is checked as bytes come out of zstd, so hostile
//! input costs little. What needs the manifest (digests, listed and unlisted
//! files) is judged at the end, since the manifest comes last.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use herd_core::archive::{
    EnvFile, Limits, Manifest, MemberKind, PathError, check_directory_path, check_member_path,
};

use crate::digest::{Hashing, sha256, to_hex};
use crate::error::{ArchiveError, Mismatch};
use crate::layers;
use crate::members::{Members, Tally, TarMember, TarStream};

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
    let source = layers::open(input, options.identity, options.limits)?;
    let (stream, mut archive) = TarStream::open(source);
    let limits = options.limits;
    let mut scan = Scan::default();
    let mut members = Members::new(&mut archive, &stream, limits, Tally::default())?;
    while let Some(member) = members.next()? {
        let TarMember {
            path,
            size,
            directory,
            mut entry,
        } = member;
        if scan.manifest.is_some() {
            return Err(ArchiveError::AfterManifest(path));
        }
        if directory {
            check_directory_path(&path).map_err(|error| ArchiveError::Path {
                path: path.clone(),
                error,
            })?;
            scan.directories += 1;
            continue;
        }
        if !scan.paths.insert(path.clone()) {
            return Err(ArchiveError::Duplicate(path));
        }
        let kind = match check_member_path(&path) {
            Ok(kind) => kind,
            // A newer format may add members; skipping them until the
            // manifest is read lets its version be named instead.
            Err(PathError::UnknownEntry(_)) => {
                let skipped = io::copy(&mut entry, &mut io::sink())
                    .map_err(|e| stream.classify(e, Some(&path)))?;
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
                    .map_err(|e| stream.classify(e, Some(&path)))?;
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
                    visit(&mut member).map_err(|error| visitor_error(&stream, &path, error))?;
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
                visit(&mut member).map_err(|error| visitor_error(&stream, &path, error))?;
                io::copy(&mut hashing, &mut io::sink())
                    .map_err(|e| stream.classify(e, Some(&path)))?;
                if hashing.count() != size {
                    return Err(ArchiveError::Truncated(path));
                }
                let (_, count, digest) = hashing.into_parts();
                scan.digests.insert(path, (count, digest));
            }
        }
    }
    let source = stream.source();
    scan.conclude(source.encrypted, source.compressed, members.tally().bytes)
}

/// What one pass collected.
#[derive(Default)]
struct Scan {
    directories: u64,
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
        content_bytes: u64,
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
            content_bytes,
        })
    }
}

fn visitor_error(stream: &TarStream<'_>, path: &str, error: io::Error) -> ArchiveError {
    match stream.source().ratio_error() {
        Some(limit) => limit.into(),
        None => ArchiveError::Visitor {
            path: path.to_owned(),
            error,
        },
    }
}
