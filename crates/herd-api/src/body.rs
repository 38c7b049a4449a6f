//! Request bodies and headers that ask for more than actix's own extractors give.

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Problem;

/// The largest JSON body accepted; an order is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body with the SHA-256 of its bytes as sent, which is what an
/// idempotency key's retries are compared by.
pub struct HashedJson<T> {
    pub value: T,
    pub sha256: Vec<u8>,
}

fn malformed(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "malformed_request",
        "Malformed request",
        detail,
    )
}

fn body_problem(err: actix_web::Error) -> Problem {
    match err.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request body too large",
            format!("the body may be at most {MAX_BODY_BYTES} bytes"),
        ),
        _ => malformed(format!("the body could not be read: {err}")),
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for HashedJson<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(body_problem)?;
            let value = serde_json::from_slice(&bytes)
                .map_err(|err| malformed(format!("the body is not the expected JSON: {err}")))?;
            Ok(HashedJson {
                value,
                sha256: Sha256::digest(&bytes).to_vec(),
            })
        })
    }
}

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
const MAX_KEY_LENGTH: usize = 255;

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(value) = req.headers().get(IDEMPOTENCY_HEADER) else {
            return std::future::ready(Ok(IdempotencyKey(None)));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| {
                (1..=MAX_KEY_LENGTH).contains(&key.len())
                    && key.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(|key| IdempotencyKey(Some(key.to_owned())))
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_idempotency_key",
                    "Invalid idempotency key",
                    format!("{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"),
                )
                .with_extensions(json!({ "header": IDEMPOTENCY_HEADER }))
            });
        std::future::ready(key)
    }
}
