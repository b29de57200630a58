//! `/v1/documents`: register, list, read and delete a tenant's documents.
//! A registered document's KV is computed by the engine when it is idle
//! (`ready` turns true), or on first use, whichever comes first.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use prophetkv_store::{DocumentRecord, NewDocument};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::state::AppState;

/// One document to register.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    /// Id (derived from the text when absent).
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// The text.
    pub text: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Value,
}

/// One document, a list, or `{"documents": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RegisterBody {
    /// A single document.
    One(DocumentBody),
    /// Several, as a bare list.
    Many(Vec<DocumentBody>),
    /// Several, wrapped.
    Wrapped {
        /// The documents.
        documents: Vec<DocumentBody>,
    },
}

fn summary(r: &DocumentRecord) -> Value {
    json!({"id": r.id, "object": "document", "name": r.name, "tokens": r.tokens, "created": r.created, "metadata": r.metadata, "ready": r.ready})
}

/// `POST /v1/documents`: 201 with the ids and token counts.
pub async fn register(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let docs = match body {
        RegisterBody::One(d) => vec![d],
        RegisterBody::Many(v) | RegisterBody::Wrapped { documents: v } => v,
    };
    if docs.is_empty() || docs.len() > 256 {
        return Err(ApiError::unprocessable(
            format!("register 1 to 256 documents at a time, got {}", docs.len()),
            Some("documents"),
        ));
    }
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.into_iter().enumerate() {
        let ids = state
            .tokenizer
            .encode(&d.text)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if ids.is_empty() {
            return Err(ApiError::unprocessable(
                format!("document {i} is empty"),
                Some("text"),
            ));
        }
        let name = d.name.or_else(|| d.id.clone()).unwrap_or_default();
        let doc = NewDocument {
            id: d.id,
            name,
            text: d.text,
            metadata: d.metadata,
        };
        let store = state.store.clone();
        let owner = tenant.0.clone();
        let record = tokio::task::spawn_blocking(move || store.register(&owner, doc, ids))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        if !record.ready {
            state.engine.precompute(&tenant.0, &record.id);
        }
        out.push(summary(&record));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"object": "list", "data": out})),
    )
        .into_response())
}

/// `GET /v1/documents`.
pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
) -> Result<Json<Value>, ApiError> {
    let records = state.store.list(&tenant.0)?;
    Ok(Json(
        json!({"object": "list", "data": records.iter().map(summary).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/documents/{id}`: the record with its text.
pub async fn get(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.store.get(&tenant.0, &id)?;
    let mut body = summary(&record);
    body["text"] = json!(record.text);
    Ok(Json(body))
}

/// `DELETE /v1/documents/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.store.delete(&tenant.0, &id)?;
    Ok(Json(
        json!({"id": record.id, "object": "document", "deleted": true}),
    ))
}
