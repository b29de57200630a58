//! Bearer API keys. Each key is a tenant: its documents are its own.
//!
//! Keys are compared in constant time, against every configured key, so
//! timing reveals neither a key nor how many characters matched.

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
        let mut found = None;
        for key in keys {
            if bool::from(key.as_bytes().ct_eq(given.as_bytes())) {
                found = Some(key);
            }
        }
        tenant_of(found.ok_or(ApiError::Unauthorized)?)
    };
    req.extensions_mut().insert(Tenant(tenant));
    Ok(next.run(req).await)
}
