//! Credentials at rest: sealed with Herd's secret key before they reach the
//! database, so a copy of the database alone reveals none of them.
//!
//! A sealed value is `version (1) | key id (4) | nonce (24) | ciphertext+tag`.
//! XChaCha20-Poly1305's 192-bit nonces are safe to draw at random for every
//! value. The associated data binds a value to the row it was sealed for, so a
//! sealed value copied into another row does not open.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use thiserror::Error;

const FORMAT_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealingError {
    #[error("a secret key must be 32 bytes in unpadded base64url; this one is not")]
    InvalidKey,
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value was sealed with a key Herd does not have (key id {0})")]
    UnknownKey(String),
    #[error("the sealed value does not open: it was altered or belongs to another record")]
    Forged,
    #[error("the system's random number generator failed")]
    Random,
}

/// One 256-bit key and its id, the first bytes of its SHA-256.
#[derive(Clone)]
struct SealingKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    fn parse(encoded: &str) -> Result<Self, SealingError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| SealingError::InvalidKey)?;
        if bytes.len() != 32 {
            return Err(SealingError::InvalidKey);
        }
        let digest = Sha256::digest(&bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let cipher =
            XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealingError::InvalidKey)?;
        Ok(SealingKey { id, cipher })
    }
}

/// Seals with the current key; opens with it or any retired key, so keys can
/// be rotated without re-sealing everything at once.
#[derive(Clone)]
pub struct Sealer {
    current: SealingKey,
    retired: Vec<SealingKey>,
}

// Key material never reaches a log line.
impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("retired_keys", &self.retired.len())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(current: &str, retired: &[String]) -> Result<Self, SealingError> {
        Ok(Sealer {
            current: SealingKey::parse(current)?,
            retired: retired
                .iter()
                .map(|k| SealingKey::parse(k))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A fresh random key in the form `new` accepts.
    pub fn generate_key() -> Result<String, SealingError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| SealingError::Random)?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Seals `plaintext` for the record named by `context` (e.g. `instance_secrets:<id>`).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, SealingError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealingError::Random)?;
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealingError::Malformed)?;
        let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        sealed.push(FORMAT_VERSION);
        sealed.extend_from_slice(&self.current.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SealingError> {
        if sealed.len() < HEADER_LEN || sealed[0] != FORMAT_VERSION {
            return Err(SealingError::Malformed);
        }
        let key_id = &sealed[1..1 + KEY_ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|key| key.id == key_id)
            .ok_or_else(|| SealingError::UnknownKey(hex(key_id)))?;
        let nonce: [u8; NONCE_LEN] = sealed[1 + KEY_ID_LEN..HEADER_LEN]
            .try_into()
            .map_err(|_| SealingError::Malformed)?;
        key.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealingError::Forged)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&Sealer::generate_key().unwrap(), &[]).unwrap()
    }

    #[test]
    fn round_trips_and_never_repeats_a_ciphertext() {
        let sealer = sealer();
        let a = sealer
            .seal(b"SECRET_KEY_BASE=abc", "instance_secrets:1")
            .unwrap();
        let b = sealer
            .seal(b"SECRET_KEY_BASE=abc", "instance_secrets:1")
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            sealer.open(&a, "instance_secrets:1").unwrap(),
            b"SECRET_KEY_BASE=abc"
        );
        assert!(!a.windows(6).any(|w| w == b"SECRET"));
    }

    #[test]
    fn a_value_does_not_open_for_another_record() {
        let sealer = sealer();
        let sealed = sealer.seal(b"password", "database_servers:1").unwrap();
        assert_eq!(
            sealer.open(&sealed, "database_servers:2"),
            Err(SealingError::Forged)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let sealer = sealer();
        let mut sealed = sealer.seal(b"password", "x").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(sealer.open(&sealed, "x"), Err(SealingError::Forged));
        assert_eq!(
            sealer.open(&sealed[..10], "x"),
            Err(SealingError::Malformed)
        );
    }

    #[test]
    fn retired_keys_still_open_after_rotation() {
        let old_key = Sealer::generate_key().unwrap();
        let old = Sealer::new(&old_key, &[]).unwrap();
        let sealed = old.seal(b"kubeconfig", "clusters:1").unwrap();

        let rotated = Sealer::new(&Sealer::generate_key().unwrap(), &[old_key]).unwrap();
        assert_eq!(rotated.open(&sealed, "clusters:1").unwrap(), b"kubeconfig");

        let forgot = sealer();
        assert!(matches!(
            forgot.open(&sealed, "clusters:1"),
            Err(SealingError::UnknownKey(_))
        ));
    }

    #[test]
    fn refuses_malformed_keys() {
        assert_eq!(
            Sealer::new("short", &[]).unwrap_err(),
            SealingError::InvalidKey
        );
        assert_eq!(
            Sealer::new("!!!", &[]).unwrap_err(),
            SealingError::InvalidKey
        );
    }
}
