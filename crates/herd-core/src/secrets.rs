//! The secrets a Mastodon server is born with.
//!
//! They are generated once, when the instance is ordered, and never rotated:
//! rotating them logs every user out, breaks two-factor authentication, push
//! subscriptions and encrypted columns. The randomness is passed in, so the
//! generation itself is pure and testable.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;

pub const SECRET_KEY_BASE: &str = "SECRET_KEY_BASE";
pub const VAPID_PRIVATE_KEY: &str = "VAPID_PRIVATE_KEY";
pub const VAPID_PUBLIC_KEY: &str = "VAPID_PUBLIC_KEY";
pub const AR_DETERMINISTIC_KEY: &str = "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY";
pub const AR_KEY_DERIVATION_SALT: &str = "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT";
pub const AR_PRIMARY_KEY: &str = "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY";
pub const DB_PASS: &str = "DB_PASS";
pub const REDIS_PASSWORD: &str = "REDIS_PASSWORD";
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Everything secret an instance needs, from `random`, a source of uniformly
/// random bytes (the operating system's in production).
pub fn generate(random: &mut dyn FnMut(&mut [u8])) -> BTreeMap<String, String> {
    let mut secrets = BTreeMap::new();
    secrets.insert(SECRET_KEY_BASE.to_owned(), hex(random, 64));
    secrets.insert(DB_PASS.to_owned(), hex(random, 32));
    secrets.insert(REDIS_PASSWORD.to_owned(), hex(random, 32));
    let (access_key_id, secret_access_key) = s3_access_key(random);
    secrets.insert(AWS_ACCESS_KEY_ID.to_owned(), access_key_id);
    secrets.insert(AWS_SECRET_ACCESS_KEY.to_owned(), secret_access_key);
    for key in [AR_DETERMINISTIC_KEY, AR_KEY_DERIVATION_SALT, AR_PRIMARY_KEY] {
        secrets.insert(key.to_owned(), alphanumeric(random, 32));
    }
    let (private, public) = vapid_keys(random);
    secrets.insert(VAPID_PRIVATE_KEY.to_owned(), private);
    secrets.insert(VAPID_PUBLIC_KEY.to_owned(), public);
    secrets
}

/// An S3 access key id and secret. Garage accepts imported keys of this
/// shape, so a key can be created idempotently from the stored value instead
/// of being minted by the store.
pub fn s3_access_key(random: &mut dyn FnMut(&mut [u8])) -> (String, String) {
    (format!("GK{}", hex(random, 12)), hex(random, 32))
}

/// `bytes` random bytes as lowercase hex.
fn hex(random: &mut dyn FnMut(&mut [u8]), bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    random(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Like `rails db:encryption:init`: letters and digits, without modulo bias.
fn alphanumeric(random: &mut dyn FnMut(&mut [u8]), length: usize) -> String {
    let mut out = String::with_capacity(length);
    let mut byte = [0u8; 1];
    while out.len() < length {
        random(&mut byte);
        // 248 is the largest multiple of 62 below 256.
        if byte[0] < 248 {
            out.push(ALPHANUMERIC[usize::from(byte[0]) % ALPHANUMERIC.len()] as char);
        }
    }
    out
}

/// A Web Push (VAPID) key pair on P-256, encoded as Mastodon's
/// `rake mastodon:webpush:generate_vapid_key` does: URL-safe base64 of the
/// private scalar and of the uncompressed public point.
fn vapid_keys(random: &mut dyn FnMut(&mut [u8])) -> (String, String) {
    let mut scalar = [0u8; 32];
    loop {
        random(&mut scalar);
        // Fails only for zero or a value above the group order: draw again.
        if let Ok(secret) = p256::SecretKey::from_slice(&scalar) {
            let public = secret.public_key().to_encoded_point(false);
            return (
                URL_SAFE_NO_PAD.encode(scalar),
                URL_SAFE_NO_PAD.encode(public.as_bytes()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stand-in for the OS generator.
    fn counter() -> impl FnMut(&mut [u8]) {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        move |buffer: &mut [u8]| {
            for byte in buffer.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
        }
    }

    #[test]
    fn generates_every_secret_mastodon_needs() {
        let secrets = generate(&mut counter());
        for key in [
            SECRET_KEY_BASE,
            VAPID_PRIVATE_KEY,
            VAPID_PUBLIC_KEY,
            AR_DETERMINISTIC_KEY,
            AR_KEY_DERIVATION_SALT,
            AR_PRIMARY_KEY,
            DB_PASS,
            REDIS_PASSWORD,
            AWS_ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY,
        ] {
            assert!(
                secrets.get(key).is_some_and(|v| !v.is_empty()),
                "{key} missing"
            );
        }
        assert_eq!(secrets[SECRET_KEY_BASE].len(), 128);
        assert_eq!(secrets[AR_PRIMARY_KEY].len(), 32);
        assert!(
            secrets[AR_PRIMARY_KEY]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn s3_key_has_the_shape_garage_imports() {
        let secrets = generate(&mut counter());
        let id = &secrets[AWS_ACCESS_KEY_ID];
        assert!(
            id.starts_with("GK")
                && id.len() == 26
                && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
        );
        assert_eq!(secrets[AWS_SECRET_ACCESS_KEY].len(), 64);
    }

    #[test]
    fn vapid_public_key_belongs_to_the_private_key() {
        let secrets = generate(&mut counter());
        let private = URL_SAFE_NO_PAD.decode(&secrets[VAPID_PRIVATE_KEY]).unwrap();
        let public = URL_SAFE_NO_PAD.decode(&secrets[VAPID_PUBLIC_KEY]).unwrap();
        assert_eq!(public.len(), 65);
        assert_eq!(public[0], 4, "uncompressed point");
        let derived = p256::SecretKey::from_slice(&private)
            .unwrap()
            .public_key()
            .to_encoded_point(false);
        assert_eq!(derived.as_bytes(), public.as_slice());
    }

    #[test]
    fn different_randomness_gives_different_secrets() {
        let a = generate(&mut counter());
        let mut flipped = counter();
        let b = generate(&mut |buffer: &mut [u8]| {
            flipped(buffer);
            for byte in buffer.iter_mut() {
                *byte ^= 0xff;
            }
        });
        assert!(a.iter().all(|(key, value)| b[key] != *value));
    }
}
