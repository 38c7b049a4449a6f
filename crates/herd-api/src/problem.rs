//! RFC 9457 problem details, the one error shape every Herd endpoint answers with.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use herd_db::DbError;
use serde::Serialize;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An HTTP error. `code` is stable and meant for programs; `title` and
/// `detail` are for people and may change wording.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; ends in `code`.
    #[serde(rename = "type")]
    #[schema(example = "https://herd.dev/problems/not_found")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable error code.
    #[schema(value_type = String, example = "not_found")]
    pub code: &'static str,
    /// Members some problems add, e.g. `field` for a rejected request member.
    // Boxed: a problem is the error of every fallible call, so it stays small.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub extensions: Option<Box<serde_json::Value>>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind: format!("https://herd.dev/problems/{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            extensions: None,
        }
    }

    /// Adds machine-readable members beside the standard ones.
    pub fn with_extensions(mut self, extensions: serde_json::Value) -> Self {
        self.extensions = Some(Box::new(extensions));
        self
    }

    /// Missing and hidden objects answer the same, so an id never tells
    /// whether someone else's object exists.
    pub fn not_found() -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            "no such resource",
        )
    }

    /// A failure the caller cannot fix. The cause goes to the log, never into
    /// the answer, so internals do not leak.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "the request failed on the server; it has been logged",
        )
    }

    pub fn database_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "database unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "Database unavailable",
            "the database is unavailable; retry later",
        )
    }
}

impl From<DbError> for Problem {
    fn from(err: DbError) -> Self {
        match &err {
            DbError::Connect(_) | DbError::Timeout(_) | DbError::SchemaPending(_) => {
                Problem::database_unavailable(&err)
            }
            DbError::Query(diesel::result::Error::NotFound) => Problem::not_found(),
            DbError::DomainTaken(domain) => Problem::new(
                StatusCode::CONFLICT,
                "domain_unavailable",
                "Domain unavailable",
                format!("the domain {domain} is already hosted"),
            ),
            DbError::Transition { source, .. } => Problem::new(
                StatusCode::CONFLICT,
                "invalid_state",
                "Not possible in the instance's state",
                source.to_string(),
            ),
            DbError::ConcurrentChange(_) => Problem::new(
                StatusCode::CONFLICT,
                "concurrent_change",
                "Changed concurrently",
                "the instance changed while the request ran; retry",
            ),
            DbError::RoleMismatch { .. } => Problem::new(
                StatusCode::CONFLICT,
                "role_mismatch",
                "Role mismatch",
                err.to_string(),
            ),
            DbError::Query(_)
            | DbError::Migration(_)
            | DbError::LeaseLost { .. }
            | DbError::TransactionRequired(_)
            | DbError::Sealing(_)
            | DbError::Corrupt { .. } => Problem::internal(&err),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.code, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type(CONTENT_TYPE);
        // Every 401 must say how to authenticate, and Herd knows one way.
        if self.status == StatusCode::UNAUTHORIZED.as_u16() {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="herd""#));
        }
        response.json(self)
    }
}

impl From<diesel::result::Error> for Problem {
    fn from(err: diesel::result::Error) -> Self {
        DbError::from(err).into()
    }
}
