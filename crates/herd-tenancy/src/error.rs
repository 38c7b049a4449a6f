use thiserror::Error;

#[derive(Debug, Error)]
pub enum TenancyError {
    #[error("invalid endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("{service} request failed: {source}")]
    Transport {
        service: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{service} answered {status} to {operation}: {body}")]
    Rejected {
        service: &'static str,
        operation: String,
        status: u16,
        body: String,
    },
    #[error("{service} answered {operation} with a body that could not be read: {message}")]
    Decode {
        service: &'static str,
        operation: String,
        message: String,
    },
}
