//! The members of an untrusted tar stream, each judged from its header
//! before its content is read: the checks an archive and a plain backup's
//! media tar share.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use herd_core::archive::{LimitError, Limits, MAX_PATH_BYTES};

use crate::error::ArchiveError;
use crate::layers::Source;

/// The tar stream below `tar::Archive`, with what is needed to name the
/// cause of a failed read.
pub(crate) struct TarStream<'a> {
    /// Its `tar` has been handed to the `tar::Archive`.
    source: Source<'a>,
    ended: Rc<Cell<bool>>,
}

pub(crate) type TarArchive<'a> = tar::Archive<NoticeEnd<Box<dyn Read + 'a>>>;
pub(crate) type TarEntry<'s, 'a> = tar::Entry<'s, NoticeEnd<Box<dyn Read + 'a>>>;

impl<'a> TarStream<'a> {
    pub(crate) fn open(mut source: Source<'a>) -> (Self, TarArchive<'a>) {
        let ended = Rc::new(Cell::new(false));
        let tar = NoticeEnd {
            inner: std::mem::replace(&mut source.tar, Box::new(io::empty())),
            ended: ended.clone(),
        };
        (TarStream { source, ended }, tar::Archive::new(tar))
    }

    pub(crate) fn source(&self) -> &Source<'a> {
        &self.source
    }

    /// Whether the bytes below tar ran out. After the last member this
    /// means the tar lacks its end-of-archive blocks, which tar reads
    /// without reaching the end of the stream.
    pub(crate) fn ended(&self) -> bool {
        self.ended.get()
    }

    /// Names the cause of a failed read: the ratio limit, a stream that
    /// does not authenticate, or one cut short (inside `path` if given).
    pub(crate) fn classify(&self, error: io::Error, path: Option<&str>) -> ArchiveError {
        if let Some(limit) = self.source.ratio_error() {
            limit.into()
        } else if self.source.decryption_failed() {
            ArchiveError::Unauthenticated(error)
        } else if self.ended() || error.kind() == io::ErrorKind::UnexpectedEof {
            path.map_or(ArchiveError::TruncatedHeader, |p| {
                ArchiveError::Truncated(p.to_owned())
            })
        } else {
            ArchiveError::Io(error)
        }
    }
}

/// Members and their declared bytes, counted against the limits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) members: u64,
    pub(crate) bytes: u64,
}

impl Tally {
    /// Counts one more member of `size` bytes, refusing it beyond the limits.
    pub(crate) fn add(&mut self, limits: &Limits, path: &str, size: u64) -> Result<(), LimitError> {
        self.members += 1;
        limits.check_count(self.members)?;
        limits.check_member(path, size, self.bytes)?;
        self.bytes += size;
        Ok(())
    }
}

/// A regular file or directory whose header passed: its path is not yet
/// checked, since what it must be depends on the input.
pub(crate) struct TarMember<'s, 'a> {
    pub(crate) path: String,
    /// Declared by the header, within the limits.
    pub(crate) size: u64,
    pub(crate) directory: bool,
    pub(crate) entry: TarEntry<'s, 'a>,
}

pub(crate) struct Members<'s, 'a> {
    entries: tar::Entries<'s, NoticeEnd<Box<dyn Read + 'a>>>,
    stream: &'s TarStream<'a>,
    limits: Limits,
    pending: Extensions,
    tally: Tally,
}

impl<'s, 'a> Members<'s, 'a> {
    /// Walks `archive`, counting on from `tally`.
    pub(crate) fn new(
        archive: &'s mut TarArchive<'a>,
        stream: &'s TarStream<'a>,
        limits: Limits,
        tally: Tally,
    ) -> Result<Self, ArchiveError> {
        // Raw entries: the tar crate would read long-name and pax headers
        // whole into memory whatever their declared size; read here, they
        // are bounded.
        let entries = archive
            .entries()
            .map_err(|e| stream.classify(e, None))?
            .raw(true);
        Ok(Members {
            entries,
            stream,
            limits,
            pending: Extensions::default(),
            tally,
        })
    }

    pub(crate) fn tally(&self) -> Tally {
        self.tally
    }

    /// The next member, refused if it is neither a regular file nor a
    /// directory or goes beyond the limits.
    pub(crate) fn next(&mut self) -> Result<Option<TarMember<'s, 'a>>, ArchiveError> {
        for entry in self.entries.by_ref() {
            let mut entry = entry.map_err(|e| self.stream.classify(e, None))?;
            let entry_type = entry.header().entry_type();
            if entry_type.is_gnu_longname() || entry_type.is_pax_local_extensions() {
                self.pending
                    .read(&mut entry, entry_type.is_gnu_longname(), self.stream)?;
                continue;
            }
            let described = std::mem::take(&mut self.pending);
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
            self.tally.add(&self.limits, &path, size)?;
            let directory = match entry_type {
                tar::EntryType::Regular => false,
                tar::EntryType::Directory => true,
                other => {
                    return Err(ArchiveError::EntryType {
                        path,
                        kind: entry_type_name(other),
                    });
                }
            };
            return Ok(Some(TarMember {
                path,
                size,
                directory,
                entry,
            }));
        }
        if self.pending.long_name_seen || self.pending.pax_seen {
            return Err(ArchiveError::TruncatedHeader);
        }
        Ok(None)
    }
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
        stream: &TarStream<'_>,
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
            .map_err(|e| stream.classify(e, None))?;
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
pub(crate) struct NoticeEnd<R> {
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
