//! Every failure the API reports, in OpenAI's shape, with its status code.
//!
//! This is the only place that maps errors to HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prophetkv_engine::EngineError;
use prophetkv_store::StoreError;
use serde_json::json;

/// An API error: status, OpenAI error type, message and the offending parameter.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON or a field of the wrong type.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The field, when known.
        param: Option<String>,
    },
    /// 401: missing or unknown API key.
    #[error("invalid or missing API key")]
    Unauthorized,
    /// 404: unknown document, model or route.
    #[error("{0}")]
    NotFound(String),
    /// 413: the body is larger than the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// 422: well-formed but unusable (context too long, ratio out of range).
    #[error("{message}")]
    Unprocessable {
        /// What is wrong.
        message: String,
        /// The field, when known.
        param: Option<String>,
    },
    /// 429: the queue is full.
    #[error("{0}")]
    Overloaded(String),
    /// 503: not ready or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an internal failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 about `param`.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    /// A 422 about `param`.
    pub fn unprocessable(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::Unprocessable {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<&str>, Option<&'static str>) {
        match self {
            Self::BadRequest { param, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                param.as_deref(),
                None,
            ),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                None,
                Some("invalid_api_key"),
            ),
            Self::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                Some("not_found"),
            ),
            Self::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                None,
                Some("body_too_large"),
            ),
            Self::Unprocessable { param, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                param.as_deref(),
                None,
            ),
            Self::Overloaded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                Some("queue_full"),
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                Some("unavailable"),
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                None,
            ),
        }
    }

    /// The JSON body, also used inside SSE streams.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, param, code) = self.parts();
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, ..) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::QueueFull { .. } => Self::Overloaded(e.to_string()),
            EngineError::Unavailable => Self::Unavailable(e.to_string()),
            EngineError::Invalid { field, .. } => Self::unprocessable(e.to_string(), Some(field)),
            EngineError::UnknownDocument(_) => Self::NotFound(e.to_string()),
            EngineError::ContextOverflow { .. } => {
                Self::unprocessable(e.to_string(), Some("max_tokens"))
            }
            EngineError::Internal(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { .. } => Self::NotFound(e.to_string()),
            StoreError::Invalid { field, .. } => Self::unprocessable(e.to_string(), Some(field)),
            _ => Self::Internal(e.to_string()),
        }
    }
}
