//! Bearer API keys. Each key is a tenant: its documents are its own.
//!
//! Keys are compared in constant time, against every configured key, so
//! timing reveals neither a key, nor how many characters matched, nor its
//! length: what is compared are blake3 digests (32 bytes whatever the key),
//! since comparing the raw bytes would return early on a length mismatch.
//! Keys are never logged: a tenant is named by a hash of its key.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// The tenant a request acts for.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// The tenant of an API key: a hash, so keys never appear in storage or logs.
pub fn tenant_of(key: &str) -> String {
    format!("key-{}", &blake3::hash(key.as_bytes()).to_hex()[..16])
}

/// The configured key equal to `given`, comparing fixed-size digests in
/// constant time against every key (no early exit, whatever the lengths).
pub fn matching_key<'a>(keys: &'a [String], given: &str) -> Option<&'a String> {
    let given = blake3::hash(given.as_bytes());
    let mut found = None;
    for key in keys {
        let digest = blake3::hash(key.as_bytes());
        if bool::from(digest.as_bytes().ct_eq(given.as_bytes())) {
            found = Some(key);
        }
    }
    found
}

/// With keys configured, requires `Authorization: Bearer <key>`; without, every
/// request is the `default` tenant.
pub async fn require_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let keys = &state.config.api_keys;
    let tenant = if keys.is_empty() {
        "default".to_string()
    } else {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        tenant_of(matching_key(keys, given).ok_or(ApiError::Unauthorized)?)
    };
    req.extensions_mut().insert(Tenant(tenant));
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exact_key_matches_whatever_its_length() {
        let keys = vec!["sk-alpha".to_string(), "sk-beta-longer".to_string()];
        assert_eq!(matching_key(&keys, "sk-alpha"), Some(&keys[0]));
        assert_eq!(matching_key(&keys, "sk-beta-longer"), Some(&keys[1]));
        for wrong in [
            "",
            "sk-alph",
            "sk-alpha ",
            "sk-alphb",
            "sk-beta",
            "SK-ALPHA",
        ] {
            assert_eq!(matching_key(&keys, wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn a_tenant_name_does_not_contain_its_key() {
        let tenant = tenant_of("sk-secret-123");
        assert!(tenant.starts_with("key-") && !tenant.contains("secret"));
        assert_ne!(tenant, tenant_of("sk-secret-124"));
    }
}
