//! The OpenAPI 3 document: generated from the handlers' annotations and the
//! request and response types, collected as the router is built, so that
//! every route is in it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts; paths and schemas come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "prophetkv",
        description = "OpenAI-compatible RAG serving with per-document KV caches and query-driven selective recomputation (ProphetKV). Documents go in the request body's `documents`, the reuse strategy in `kv_reuse`; responses carry a `prophetkv` object.",
    ),
    tags(
        (name = "generation", description = "OpenAI-compatible completions and chat"),
        (name = "documents", description = "Registered documents and their caches"),
        (name = "models", description = "The served model"),
        (name = "tokens", description = "The served model's tokenizer"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// Declares the bearer API key the `/v1` routes take when keys are
/// configured (and none when they are not, hence the empty alternative).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
}

/// The document as JSON text.
pub fn to_json(openapi: &utoipa::openapi::OpenApi) -> String {
    openapi.to_pretty_json().unwrap_or_else(|e| {
        format!(r#"{{"error": "the OpenAPI document did not serialise: {e}"}}"#)
    })
}
