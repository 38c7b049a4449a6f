//! Bearer-token authentication.
//!
//! Tokens never reach a log line: the header is read here and handed to the
//! database layer, which compares hashes only.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;

use crate::{ApiState, Problem};

/// The authenticated caller. Extracting it answers 401 for a missing or dead token.
#[derive(Debug, Clone, Copy)]
pub struct Principal(pub herd_db::accounts::Principal);

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.0.role == herd_db::accounts::Role::Operator
    }

    /// Refuses anybody but an operator with `403 operators_only`, the one
    /// answer of every operators-only endpoint. An endpoint about one
    /// instance looks the instance up in the caller's scope first, so a
    /// customer asking about another tenant's instance gets `404` and learns
    /// nothing of its id.
    pub fn require_operator(&self) -> Result<(), Problem> {
        if self.is_operator() {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "operators_only",
            "Operators only",
            "only operators do this",
        ))
    }
}

fn unauthenticated(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authentication required",
        detail,
    )
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

impl FromRequest for Principal {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        Box::pin(async move {
            let Some(token) = token else {
                return Err(unauthenticated(
                    "send an API token as `Authorization: Bearer <token>`",
                ));
            };
            let state = state.ok_or_else(|| Problem::internal(&"ApiState is not registered"))?;
            let mut conn = state.connection().await?;
            match herd_db::accounts::authenticate(&mut conn, &token).await? {
                Some(principal) => Ok(Principal(principal)),
                None => Err(unauthenticated("the token is invalid, expired or revoked")),
            }
        })
    }
}
