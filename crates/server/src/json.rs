//! A JSON body extractor whose rejections use the API's error format.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// `Json<T>` that answers 400 (bad JSON or field), 408 (the body stopped
/// arriving, see [`crate::ServeOptions::body_read_timeout`]), 413 (too large)
/// or 415 in our format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::BytesRejection(_)
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    ApiError::TooLarge(state.config.max_body_bytes)
                }
                _ if body_timed_out(&rejection) => ApiError::RequestTimeout,
                _ => ApiError::bad_request(plain_message(&rejection.body_text()), None),
            }),
        }
    }
}

/// Whether reading the body failed because the body read timeout passed
/// (the timeout's error is somewhere in the rejection's source chain).
fn body_timed_out(rejection: &JsonRejection) -> bool {
    let mut source = std::error::Error::source(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Rust's names for JSON's types, as serde's messages spell them.
const TYPE_NAMES: [(&str, &str); 12] = [
    ("u8", "a non-negative integer"),
    ("u16", "a non-negative integer"),
    ("u32", "a non-negative integer"),
    ("u64", "a non-negative integer"),
    ("usize", "a non-negative integer"),
    ("i8", "an integer"),
    ("i16", "an integer"),
    ("i32", "an integer"),
    ("i64", "an integer"),
    ("f32", "a number"),
    ("f64", "a number"),
    ("isize", "an integer"),
];

/// A deserialisation message in JSON's words: `expected u64` becomes
/// `expected a non-negative integer`, `expected struct Foo` becomes
/// `expected an object`, so that no Rust type name reaches a client.
pub fn plain_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("expected ") {
        let (head, tail) = rest.split_at(at + "expected ".len());
        out.push_str(head);
        let word_end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let word = &tail[..word_end];
        if let Some((_, plain)) = TYPE_NAMES.iter().find(|(rust, _)| *rust == word) {
            out.push_str(plain);
            rest = &tail[word_end..];
        } else if word == "struct" || word == "enum" {
            // "struct Name" / "enum Name": the name goes too.
            let after = tail[word_end..].trim_start();
            let name_end = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            out.push_str(if word == "struct" {
                "an object"
            } else {
                "one of the allowed values"
            });
            rest = &after[name_end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_type_names_become_json_words() {
        assert_eq!(
            plain_message("max_tokens: invalid type: string \"ten\", expected u64 at line 1"),
            "max_tokens: invalid type: string \"ten\", expected a non-negative integer at line 1"
        );
        assert_eq!(
            plain_message("invalid type: string \"x\", expected struct ChatRequest"),
            "invalid type: string \"x\", expected an object"
        );
        assert_eq!(
            plain_message("expected f32, expected a string or a list of strings"),
            "expected a number, expected a string or a list of strings"
        );
        assert_eq!(plain_message("expected `,` or `}`"), "expected `,` or `}`");
    }
}
