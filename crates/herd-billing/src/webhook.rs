//! Stripe webhook signatures.
//!
//! Stripe signs `"{timestamp}.{payload}"` with HMAC-SHA256 under the endpoint's
//! secret and sends `Stripe-Signature: t=<timestamp>,v1=<hex>[,v1=<hex>...]`.
//! A request is genuine when one `v1` matches under one of the secrets Herd
//! accepts (several during a rotation) and its timestamp is recent, which
//! bounds how long a captured request can be replayed.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Stripe's own default: five minutes either way.
pub const TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the signature's timestamp is {0} seconds away from now, beyond the tolerance")]
    Stale(i64),
    #[error("no signature matches any accepted secret")]
    Mismatch,
}

/// Checks `header` over `payload` against every secret in `secrets`, at `now`
/// (Unix seconds). Comparisons take the same time whatever the bytes.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[String],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
            // Other schemes (v0 test signatures) are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = (now - timestamp).abs();
    if skew > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale(skew));
    }
    let genuine = secrets.iter().any(|secret| {
        let expected = sign_raw(payload, timestamp, secret);
        signatures
            .iter()
            .any(|candidate| bool::from(candidate.as_slice().ct_eq(&expected)))
    });
    if genuine {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header Stripe would send for `payload` at `timestamp`: for tests and
/// for operators replaying an event by hand.
pub fn sign(payload: &[u8], timestamp: i64, secret: &str) -> String {
    let signature: String = sign_raw(payload, timestamp, secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={signature}")
}

fn sign_raw(payload: &[u8], timestamp: i64, secret: &str) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;
    const PAYLOAD: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn accepts_a_genuine_signature() {
        let header = sign(PAYLOAD, NOW, "whsec_one");
        assert_eq!(
            verify(PAYLOAD, Some(&header), &secrets(&["whsec_one"]), NOW + 10),
            Ok(())
        );
    }

    #[test]
    fn accepts_any_secret_during_a_rotation() {
        let header = sign(PAYLOAD, NOW, "whsec_old");
        assert_eq!(
            verify(
                PAYLOAD,
                Some(&header),
                &secrets(&["whsec_new", "whsec_old"]),
                NOW
            ),
            Ok(())
        );
        // Stripe signs with both secrets during a rotation: either v1 may match.
        let old_signature = sign(PAYLOAD, NOW, "whsec_old")
            .split_once(",v1=")
            .unwrap()
            .1
            .to_owned();
        let both = format!("{},v1={old_signature}", sign(PAYLOAD, NOW, "whsec_new"));
        assert_eq!(
            verify(PAYLOAD, Some(&both), &secrets(&["whsec_old"]), NOW),
            Ok(())
        );
    }

    #[test]
    fn refuses_forgeries() {
        let header = sign(PAYLOAD, NOW, "whsec_attacker");
        assert_eq!(
            verify(PAYLOAD, Some(&header), &secrets(&["whsec_one"]), NOW),
            Err(SignatureError::Mismatch)
        );
        let header = sign(PAYLOAD, NOW, "whsec_one");
        let tampered = br#"{"id":"evt_1","type":"invoice.paid","x":1}"#;
        assert_eq!(
            verify(tampered, Some(&header), &secrets(&["whsec_one"]), NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_stale_and_future_timestamps() {
        let header = sign(PAYLOAD, NOW, "whsec_one");
        assert_eq!(
            verify(PAYLOAD, Some(&header), &secrets(&["whsec_one"]), NOW + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(PAYLOAD, Some(&header), &secrets(&["whsec_one"]), NOW - 400),
            Err(SignatureError::Stale(400))
        );
    }

    #[test]
    fn refuses_malformed_headers() {
        let one = secrets(&["whsec_one"]);
        assert_eq!(
            verify(PAYLOAD, None, &one, NOW),
            Err(SignatureError::Missing)
        );
        for header in [
            "",
            "garbage",
            "t=abc,v1=00",
            "v1=00ff",
            "t=1790000000",
            "t=1790000000,v1=zz",
            "t=1790000000,v1=abc",
        ] {
            assert_eq!(
                verify(PAYLOAD, Some(header), &one, NOW),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }
}
