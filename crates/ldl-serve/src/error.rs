//! The server's errors: why it could not start, and the JSON error of a refused request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting under which the server could not work.
    #[error("{0}")]
    Options(String),
    /// The address could not be listened on.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The host and port asked for.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Starting the runtime or a thread, or serving, failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The inference thread ended with a panic.
    #[error("the inference thread stopped with a panic")]
    InferencePanic,
}

/// The server's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// A refused request: its status and a message naming the problem, sent as
/// `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong, and when it helps, how to fix it.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 422: the request is well formed, but its content cannot be used.
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}
