//! Query-string and path extractors whose rejections use the API's error
//! format (axum's own answer in plain text, which the OpenAPI document
//! does not declare and clients cannot parse as an error).

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::json::plain_message;

/// `Query<T>` that answers a malformed query string with a 400 naming the
/// parameter (`limit: invalid digit found in string`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(rejection) => Err(ApiError::bad_request(
                format!(
                    "invalid query string: {}",
                    plain_message(&rejection.body_text())
                        .trim_start_matches("Failed to deserialize query string: ")
                ),
                None,
            )),
        }
    }
}

/// `Path<T>` that answers a path it cannot read (a segment that is not
/// UTF-8 once percent-decoded) with a 400; a route without the parameter
/// is our bug, a 500.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError::Internal(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::bad_request(
                format!("invalid path: {}", plain_message(&rejection.body_text())),
                None,
            )),
        }
    }
}
