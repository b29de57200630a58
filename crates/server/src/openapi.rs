//! The OpenAPI 3 document: generated from the handlers' annotations and the
//! request and response types, collected as the router is built, so that
//! every route is in it.

use serde_json::{json, Value};
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

/// The document as JSON text, each event stream described event by event
/// ([`describe_event_streams`]).
pub fn to_json(openapi: &utoipa::openapi::OpenApi) -> String {
    let json = serde_json::to_value(openapi).and_then(|mut doc| {
        describe_event_streams(&mut doc);
        serde_json::to_string_pretty(&doc)
    });
    json.unwrap_or_else(|e| {
        format!(r#"{{"error": "the OpenAPI document did not serialise: {e}"}}"#)
    })
}

/// Where a response object holds the schema of a streamed answer
/// (`text/event-stream`, `/` escaped as JSON pointers escape it).
const EVENT_STREAM_SCHEMA: &str = "/content/text~1event-stream/schema";

/// Rewrites the schema of every `text/event-stream` response, written in
/// the annotations as the payload of one event, into the shape of one
/// server-sent event (as OpenAPI 3.2's `itemSchema` and tools reading
/// 3.1 take it): `data` is that payload as JSON text, an error body when
/// the answer fails mid-stream, or `[DONE]` at the end. utoipa has no
/// `contentSchema`, hence the JSON.
pub fn describe_event_streams(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for response in responses.values_mut() {
            if let Some(schema) = response.pointer_mut(EVENT_STREAM_SCHEMA) {
                *schema = event_schema(schema.take());
            }
        }
    }
}

/// One server-sent event whose `data` is `payload` (or an error, or `[DONE]`).
fn event_schema(payload: Value) -> Value {
    json!({
        "type": "object",
        "description": "One server-sent event: `data` is a chunk as JSON, an error body if the answer fails mid-stream, or `[DONE]` last",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"type": "string", "enum": ["[DONE]"]},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "anyOf": [payload, {"$ref": "#/components/schemas/ErrorBody"}]
                        }
                    }
                ]
            }
        }
    })
}
