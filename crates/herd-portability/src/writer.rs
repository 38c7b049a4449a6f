//! Writing an archive in one pass.
//!
//! `manifest.json` is written last. Its digests are known only once every
//! byte has passed, and a manifest written first would need a second pass
//! over the media (twice the S3 reads) or a seek back, which neither a
//! compressed, an encrypted nor an uploaded stream allows. Last also makes
//! truncation safe: an archive cut anywhere lacks its manifest and is
//! refused as a whole.

use std::collections::HashSet;
use std::io::{Read, Write};

use herd_core::archive::{
    Description, FileEntry, MANIFEST_PATH, Manifest, MemberKind, RESTORE_PATH, check_member_path,
};

use crate::digest::{Hashing, to_hex};
use crate::error::ArchiveError;
use crate::layers::{Sink, finish_sink, sink};
use crate::restore::render_restore;

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// zstd level (1 to 22; 3 is zstd's default); `None` writes plain tar.
    pub zstd_level: Option<i32>,
    /// Encrypts the archive to this recipient; `None` leaves it readable
    /// by anyone who holds it, secrets included.
    pub recipient: Option<age::x25519::Recipient>,
    /// Modification time of every member, seconds since 1970: one time for
    /// the whole archive, so that the same content gives the same bytes.
    pub mtime: u64,
}

/// Writes one archive. After an error the output is not an archive (it has
/// no manifest) and the writer refuses further calls.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<Sink<W>>,
    files: Vec<FileEntry>,
    paths: HashSet<String>,
    mtime: u64,
    failed: bool,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(output: W, options: &WriteOptions) -> Result<Self, ArchiveError> {
        let sink = sink(output, options.zstd_level, options.recipient.as_ref())?;
        Ok(ArchiveWriter {
            tar: tar::Builder::new(sink),
            files: Vec::new(),
            paths: HashSet::new(),
            mtime: options.mtime,
            failed: false,
        })
    }

    /// Streams `size` bytes from `content` into the member `path`, hashing
    /// them on the way. A source giving fewer or more bytes than `size` is
    /// an error (the object changed while being exported).
    pub fn add_file(
        &mut self,
        path: &str,
        size: u64,
        content: impl Read,
    ) -> Result<&FileEntry, ArchiveError> {
        if self.failed {
            return Err(ArchiveError::WriterFailed);
        }
        match check_member_path(path) {
            Ok(MemberKind::Manifest | MemberKind::Restore) => {
                return Err(ArchiveError::Reserved(path.to_owned()));
            }
            Ok(_) => {}
            Err(error) => {
                return Err(ArchiveError::Path {
                    path: path.to_owned(),
                    error,
                });
            }
        }
        if self.paths.contains(path) {
            return Err(ArchiveError::Duplicate(path.to_owned()));
        }
        // From here on a failure leaves a partial member in the output.
        self.failed = true;
        let entry = self.append(path, size, content)?;
        self.paths.insert(entry.path.clone());
        self.files.push(entry);
        self.failed = false;
        Ok(self.files.last().expect("just pushed"))
    }

    pub fn add_bytes(&mut self, path: &str, content: &[u8]) -> Result<&FileEntry, ArchiveError> {
        self.add_file(path, content.len() as u64, content)
    }

    fn append(
        &mut self,
        path: &str,
        size: u64,
        content: impl Read,
    ) -> Result<FileEntry, ArchiveError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        let mut hashing = Hashing::new(content.take(size));
        self.tar.append_data(&mut header, path, &mut hashing)?;
        let (rest, count, digest) = hashing.into_parts();
        let longer = rest.into_inner().read(&mut [0u8])? > 0;
        if count != size || longer {
            return Err(ArchiveError::SourceSize {
                path: path.to_owned(),
                declared: size,
                actual: if longer {
                    "more".to_owned()
                } else {
                    count.to_string()
                },
            });
        }
        Ok(FileEntry {
            path: path.to_owned(),
            size,
            sha256: to_hex(&digest),
        })
    }

    /// The files written so far, in order.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Writes `RESTORE.md` and then `manifest.json`, completes the tar,
    /// zstd and age streams and hands back the output. The manifest is
    /// validated first, so a writer never produces an archive its own
    /// reader refuses (missing dump or env file, a bad time).
    pub fn finish(mut self, description: Description) -> Result<(Manifest, W), ArchiveError> {
        if self.failed {
            return Err(ArchiveError::WriterFailed);
        }
        let restore = render_restore(&description);
        self.failed = true;
        let entry = self.append(RESTORE_PATH, restore.len() as u64, restore.as_bytes())?;
        self.files.push(entry);
        let manifest = Manifest::new(description, std::mem::take(&mut self.files));
        manifest.validate()?;
        let json = manifest.to_json();
        self.append(MANIFEST_PATH, json.len() as u64, json.as_slice())?;
        let output = finish_sink(self.tar.into_inner()?)?;
        Ok((manifest, output))
    }
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("files", &self.files.len())
            .field("failed", &self.failed)
            .finish()
    }
}

/// Encrypts a finished archive to `recipient`, as the writer would have:
/// a caller that must verify an archive before it leaves can write it
/// unencrypted, verify it, and encrypt it after.
pub fn encrypt<W: Write>(
    input: &mut dyn Read,
    output: W,
    recipient: &age::x25519::Recipient,
) -> Result<W, ArchiveError> {
    let mut sink = sink(output, None, Some(recipient))?;
    std::io::copy(input, &mut sink)?;
    Ok(finish_sink(sink)?)
}
