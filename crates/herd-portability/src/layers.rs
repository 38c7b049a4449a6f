//! The container around the tar stream: optional zstd inside optional age.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::iter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use herd_core::archive::{LimitError, Limits};

use crate::error::ArchiveError;

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const AGE_MAGIC: &[u8] = b"age-encryption.org/";
const AGE_ARMOR_MAGIC: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// Parses an `age1...` recipient.
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, ArchiveError> {
    text.trim()
        .parse()
        .map_err(|_| ArchiveError::Recipient(text.trim().to_owned()))
}

/// Reads the first X25519 identity (`AGE-SECRET-KEY-1...`) of an age
/// identity file; comments and blank lines are allowed, as `age-keygen`
/// writes them.
pub fn parse_identity_file(text: &str) -> Result<age::x25519::Identity, ArchiveError> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| line.parse().ok())
        .ok_or(ArchiveError::NoIdentity)
}

pub(crate) enum Encrypt<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Encrypt<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encrypt::Plain(w) => Ok(w),
            Encrypt::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Encrypt<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encrypt::Plain(w) => w.write(buf),
            Encrypt::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encrypt::Plain(w) => w.flush(),
            Encrypt::Age(w) => w.flush(),
        }
    }
}

pub(crate) enum Compress<W: Write> {
    Plain(W),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Compress<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Compress::Plain(w) => Ok(w),
            Compress::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Compress<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compress::Plain(w) => w.write(buf),
            Compress::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compress::Plain(w) => w.flush(),
            Compress::Zstd(w) => w.flush(),
        }
    }
}

pub(crate) type Sink<W> = Compress<Encrypt<W>>;

pub(crate) fn sink<W: Write>(
    output: W,
    zstd_level: Option<i32>,
    recipient: Option<&age::x25519::Recipient>,
) -> Result<Sink<W>, ArchiveError> {
    let encrypted = match recipient {
        None => Encrypt::Plain(output),
        Some(recipient) => Encrypt::Age(
            age::Encryptor::with_recipients(iter::once(recipient as &dyn age::Recipient))?
                .wrap_output(output)?,
        ),
    };
    Ok(match zstd_level {
        None => Compress::Plain(encrypted),
        Some(level) => Compress::Zstd(zstd::Encoder::new(encrypted, level)?),
    })
}

/// Completes the zstd frame and the age stream; without this the output is
/// truncated and refused by any reader.
pub(crate) fn finish_sink<W: Write>(sink: Sink<W>) -> io::Result<W> {
    let mut output = sink.finish()?.finish()?;
    output.flush()?;
    Ok(output)
}

/// The tar stream of an archive, with what was peeled off to reach it.
pub(crate) struct Source<'a> {
    pub(crate) tar: Box<dyn Read + 'a>,
    pub(crate) encrypted: bool,
    pub(crate) compressed: bool,
    state: Arc<StreamState>,
}

impl Source<'_> {
    /// The ratio violation that made a read fail, if that is what happened.
    pub(crate) fn ratio_error(&self) -> Option<LimitError> {
        self.state.ratio.get().cloned()
    }

    /// Whether a read failed because the encrypted stream did not
    /// authenticate: age cannot tell a cut-off stream from an altered one.
    pub(crate) fn decryption_failed(&self) -> bool {
        self.state.decryption_failed.load(Ordering::Relaxed)
    }
}

/// What the layers below tar learn while bytes pass, for naming the cause
/// of a failed read above them.
#[derive(Default)]
struct StreamState {
    compressed: AtomicU64,
    ratio: OnceLock<LimitError>,
    decryption_failed: AtomicBool,
}

/// Notes that the age layer failed.
struct Decrypted<R> {
    inner: R,
    state: Arc<StreamState>,
}

impl<R: Read> Read for Decrypted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| {
            self.state.decryption_failed.store(true, Ordering::Relaxed);
        })
    }
}

/// Counts the compressed bytes the decompressor consumes.
struct CountCompressed<R> {
    inner: R,
    state: Arc<StreamState>,
}

impl<R: Read> Read for CountCompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.state.compressed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Fails the read as soon as the bytes out of the decompressor exceed the
/// ratio limit, so a bomb costs at most the limit times what was read.
struct RatioGuard<R> {
    inner: R,
    state: Arc<StreamState>,
    decompressed: u64,
    limits: Limits,
}

impl<R: Read> Read for RatioGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.decompressed += n as u64;
        let compressed = self.state.compressed.load(Ordering::Relaxed);
        if let Err(error) = self.limits.check_ratio(compressed, self.decompressed) {
            let error = self.state.ratio.get_or_init(|| error);
            return Err(io::Error::other(error.clone()));
        }
        Ok(n)
    }
}

fn starts_with(reader: &mut impl BufRead, magic: &[u8]) -> io::Result<bool> {
    Ok(reader.fill_buf()?.starts_with(magic))
}

/// Peels the container by its magic bytes: age (binary or armored), then
/// zstd, leaving the tar stream.
pub(crate) fn open<'a, R: Read + 'a>(
    input: R,
    identity: Option<&age::x25519::Identity>,
    limits: Limits,
) -> Result<Source<'a>, ArchiveError> {
    let mut input = BufReader::new(input);
    let encrypted =
        starts_with(&mut input, AGE_MAGIC)? || starts_with(&mut input, AGE_ARMOR_MAGIC)?;
    let state = Arc::new(StreamState::default());
    let plain: Box<dyn Read + 'a> = if encrypted {
        let identity = identity.ok_or(ArchiveError::IdentityRequired)?;
        let decryptor = age::Decryptor::new(age::armor::ArmoredReader::new(input))?;
        Box::new(Decrypted {
            inner: decryptor.decrypt(iter::once(identity as &dyn age::Identity))?,
            state: state.clone(),
        })
    } else {
        Box::new(input)
    };
    decompress(plain, encrypted, state, limits)
}

/// Peels zstd, if present, off a tar that is never encrypted: the media
/// tar of a plain backup.
pub(crate) fn open_unencrypted<'a, R: Read + 'a>(
    input: R,
    limits: Limits,
) -> Result<Source<'a>, ArchiveError> {
    decompress(Box::new(input), false, Arc::default(), limits)
}

fn decompress<'a>(
    input: Box<dyn Read + 'a>,
    encrypted: bool,
    state: Arc<StreamState>,
    limits: Limits,
) -> Result<Source<'a>, ArchiveError> {
    let mut plain = BufReader::new(input);
    // gzip is what `tar -z` makes, so it is named rather than left to fail
    // as a malformed tar header.
    if starts_with(&mut plain, GZIP_MAGIC)? {
        return Err(ArchiveError::Gzip);
    }
    let compressed = starts_with(&mut plain, ZSTD_MAGIC)?;
    let tar: Box<dyn Read + 'a> = if compressed {
        let decoder = zstd::Decoder::new(CountCompressed {
            inner: plain,
            state: state.clone(),
        })?;
        Box::new(RatioGuard {
            inner: decoder,
            state: state.clone(),
            decompressed: 0,
            limits,
        })
    } else {
        Box::new(plain)
    };
    Ok(Source {
        tar,
        encrypted,
        compressed,
        state,
    })
}
