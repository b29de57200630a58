//! Every failure the API reports, in OpenAI's shape, with its status code.
//!
//! This is the only place that maps errors to HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prophetkv_engine::{EngineError, ModelError, ReuseError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// An API error: status, OpenAI error type, message and the offending parameter.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, a field of the wrong type or value, a feature
    /// not served, a prompt longer than the context.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The field, when known.
        param: Option<String>,
        /// OpenAI's machine-readable code, when there is one.
        code: Option<&'static str>,
    },
    /// 401: missing or unknown API key.
    #[error("invalid or missing API key")]
    Unauthorized,
    /// 404: unknown document, model or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
    /// 408: the client stopped sending the request body (no data within
    /// the body read timeout).
    #[error("the request body stopped arriving: no data within the server's body read timeout")]
    RequestTimeout,
    /// 413: the body is larger than the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// 422: a document that can never be used (longer than the context).
    #[error("{message}")]
    Unprocessable {
        /// What is wrong.
        message: String,
        /// The field, when known.
        param: Option<String>,
    },
    /// 429: the queue is full (retry after a second).
    #[error("{0}")]
    Overloaded(String),
    /// 429 `insufficient_quota` (OpenAI's quota error): the tenant's storage
    /// quota is used up. Retrying does not help, deleting documents does, so
    /// no `Retry-After`.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 503: not ready, shutting down, or a dependency (Redis) is down.
    #[error("{0}")]
    Unavailable(String),
    /// 507: the data disk is full; nothing of the request was kept.
    #[error("{0}")]
    InsufficientStorage(String),
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
            code: None,
        }
    }

    /// A 400 for a prompt that does not fit the context (OpenAI's code).
    pub fn context_length_exceeded(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: Some("messages".into()),
            code: Some("context_length_exceeded"),
        }
    }

    /// A 404 for a model this server does not serve.
    pub fn unknown_model(given: &str, served: &str) -> Self {
        Self::NotFound(format!(
            "model {given:?} not found (this server serves {served:?})"
        ))
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
            Self::BadRequest { param, code, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                param.as_deref(),
                *code,
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
            Self::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                None,
                Some("timeout"),
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
            Self::QuotaExceeded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                Some("unavailable"),
            ),
            Self::InsufficientStorage(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "server_error",
                None,
                Some("insufficient_storage"),
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
    pub fn body(&self) -> ErrorBody {
        let (_, kind, param, code) = self.parts();
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param: param.map(str::to_string),
                code,
            },
        }
    }
}

impl ApiError {
    /// The JSON body as text (inside SSE streams).
    pub fn body_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_else(|_| {
            r#"{"error":{"message":"unserialisable error","type":"server_error","param":null,"code":null}}"#.to_string()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, ..) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, Json(self.body())).into_response();
        if matches!(self, Self::Overloaded(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match &e {
            EngineError::QueueFull { .. } | EngineError::PrecomputeQueueFull { .. } => {
                Self::Overloaded(message)
            }
            EngineError::Unavailable => Self::Unavailable(message),
            EngineError::Invalid { field, .. } => Self::bad_request(message, Some(field)),
            EngineError::DocumentTooLong { field, .. } => Self::unprocessable(message, Some(field)),
            EngineError::UnknownDocument(_) => Self::NotFound(message),
            EngineError::ContextOverflow { .. } => Self::context_length_exceeded(message),
            EngineError::Store(inner) => store_error(inner, message),
            EngineError::Reuse(inner) => reuse_error(inner, message),
            EngineError::Model(inner) => model_error(inner, message),
            EngineError::Worker(_) => Self::Internal(message),
        }
    }
}

/// A store failure: the client's fault only when it named a bad value;
/// Redis out of reach is a 503 (retry), anything else a 500 naming the store.
fn store_error(e: &StoreError, message: String) -> ApiError {
    match e {
        StoreError::NotFound { .. } => ApiError::NotFound(message),
        StoreError::Invalid { field, .. } => ApiError::bad_request(message, Some(field)),
        StoreError::Redis(_) => ApiError::Unavailable(message),
        StoreError::QuotaExceeded { .. } => ApiError::QuotaExceeded(message),
        StoreError::DiskFull { .. } => ApiError::InsufficientStorage(message),
        _ => ApiError::Internal(message),
    }
}

/// A reuse failure: options and prompts it refuses are the client's, the
/// rest is ours.
fn reuse_error(e: &ReuseError, message: String) -> ApiError {
    match e {
        ReuseError::Ratio(_) => ApiError::bad_request(message, Some("kv_reuse.recompute_ratio")),
        ReuseError::UnknownStrategy(_) => ApiError::bad_request(message, Some("kv_reuse.strategy")),
        ReuseError::Option { .. } => ApiError::bad_request(message, Some("kv_reuse")),
        ReuseError::ContextOverflow { .. } => ApiError::context_length_exceeded(message),
        ReuseError::EmptyDocument { .. } | ReuseError::AnchorMismatch { .. } => {
            ApiError::bad_request(message, Some("documents"))
        }
        ReuseError::EmptyQuery => ApiError::bad_request(message, Some("prompt")),
        ReuseError::Model(inner) => model_error(inner, message),
        ReuseError::Candle(_) => ApiError::Internal(message),
    }
}

fn model_error(e: &ModelError, message: String) -> ApiError {
    match e {
        ModelError::ContextOverflow { .. } => ApiError::context_length_exceeded(message),
        _ => ApiError::Internal(message),
    }
}

/// OpenAI's error body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, in OpenAI's fields.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Human-readable, naming the field, the limit and the value given.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `insufficient_quota` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The offending field, when known.
    pub param: Option<String>,
    /// A machine-readable code, when there is one.
    pub code: Option<&'static str>,
}
