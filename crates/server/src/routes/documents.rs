//! `/v1/documents`: register, list, read and delete a tenant's documents.
//! A registered document's KV is computed by the engine when it is idle
//! (`ready` turns true), or on first use, whichever comes first. The
//! registry (and Redis) block, so every call runs on a blocking thread.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use prophetkv_engine::{DocumentRecord, DocumentStatus, Documents, NewDocument};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::examples;
use crate::json::ApiJson;
use crate::params::{ApiPath, ApiQuery};
use crate::responses::{DeletedDocument, Document, DocumentList};
use crate::state::AppState;

/// One document to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    /// Id (derived from the text when absent).
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// The text.
    pub text: String,
    /// Free-form metadata: any JSON value, returned as given.
    #[serde(default)]
    pub metadata: Value,
}

/// One document, a list, or `{"documents": [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "a document ({\"text\": ...}), a list of documents, or {\"documents\": [...]}"
)]
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

/// The document a `/v1/documents/{id}` route is about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DocumentPath {
    /// The document's id.
    pub id: String,
}

/// Each record with where its cache stands.
fn with_status(
    docs: &Documents,
    tenant: &str,
    records: Vec<DocumentRecord>,
) -> Vec<(DocumentRecord, DocumentStatus)> {
    records
        .into_iter()
        .map(|r| {
            let status = docs.status(tenant, &r);
            (r, status)
        })
        .collect()
}

/// Runs `op` on the documents API on a blocking thread.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    op: impl FnOnce(Documents) -> prophetkv_engine::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let documents = state.engine.documents();
    tokio::task::spawn_blocking(move || op(documents))
        .await
        .map_err(|e| ApiError::Internal(format!("document task: {e}")))?
        .map_err(ApiError::from)
}

/// Registers documents: 201 with their ids and token counts.
#[utoipa::path(
    post,
    path = "/v1/documents",
    tag = "documents",
    request_body(content = RegisterBody, examples(
        ("one" = (summary = "One document", value = json!(examples::register_one()))),
        ("many" = (summary = "Several", value = json!(examples::register_many()))),
    )),
    responses(
        (status = 201, description = "Registered (or already registered with the same text)", body = DocumentList),
        (status = "4XX", description = "Refused, naming the field", body = ErrorBody),
        (status = "5XX", description = "Failed inside the server, or the store is out of reach (503)", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let docs = match body {
        RegisterBody::One(d) => vec![d],
        RegisterBody::Many(v) | RegisterBody::Wrapped { documents: v } => v,
    };
    let docs: Vec<NewDocument> = docs
        .into_iter()
        .map(|d| NewDocument {
            name: d.name.or_else(|| d.id.clone()).unwrap_or_default(),
            id: d.id,
            text: d.text,
            metadata: d.metadata,
        })
        .collect();
    let records = blocking(&state, move |docs_api| {
        let records = docs_api.register(&tenant.0, docs)?;
        Ok(with_status(&docs_api, &tenant.0, records))
    })
    .await?;
    let data = records
        .into_iter()
        .map(|(r, status)| Document::of(r, status, false))
        .collect();
    let list = DocumentList {
        object: "list",
        data,
        first_id: None,
        last_id: None,
        has_more: None,
    };
    Ok((StatusCode::CREATED, Json(list)).into_response())
}

/// Which page of a document list (OpenAI's cursor pagination).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Documents per page, 1 to 100 (default 20).
    pub limit: Option<usize>,
    /// The id after which the page starts (the previous page's `last_id`).
    pub after: Option<String>,
}

/// The tenant's documents, in id order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/documents",
    tag = "documents",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the tenant's documents", body = DocumentList),
        (status = "4XX", description = "Refused, naming the field", body = ErrorBody),
        (status = "5XX", description = "Failed inside the server, or the store is out of reach (503)", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DocumentList>, ApiError> {
    let (records, has_more) = blocking(&state, move |docs| {
        let (records, has_more) = docs.page(&tenant.0, query.after.as_deref(), query.limit)?;
        Ok((with_status(&docs, &tenant.0, records), has_more))
    })
    .await?;
    let data: Vec<Document> = records
        .into_iter()
        .map(|(r, status)| Document::of(r, status, false))
        .collect();
    Ok(Json(DocumentList {
        object: "list",
        first_id: data.first().map(|d| d.id.clone()),
        last_id: data.last().map(|d| d.id.clone()),
        has_more: Some(has_more),
        data,
    }))
}

/// One document, with its text.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}",
    tag = "documents",
    params(DocumentPath),
    responses(
        (status = 200, description = "The document", body = Document),
        (status = "4XX", description = "No such document in this tenant (404), or refused, naming the field", body = ErrorBody),
        (status = "5XX", description = "Failed inside the server, or the store is out of reach (503)", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(DocumentPath { id }): ApiPath<DocumentPath>,
) -> Result<Json<Document>, ApiError> {
    let (record, status) = blocking(&state, move |docs| {
        let record = docs.get(&tenant.0, &id)?;
        let status = docs.status(&tenant.0, &record);
        Ok((record, status))
    })
    .await?;
    Ok(Json(Document::of(record, status, true)))
}

/// Deletes a document and its caches in every tier.
#[utoipa::path(
    delete,
    path = "/v1/documents/{id}",
    tag = "documents",
    params(DocumentPath),
    responses(
        (status = 200, description = "Deleted", body = DeletedDocument),
        (status = "4XX", description = "No such document in this tenant (404), or refused, naming the field", body = ErrorBody),
        (status = "5XX", description = "Failed inside the server, or the store is out of reach (503)", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    ApiPath(DocumentPath { id }): ApiPath<DocumentPath>,
) -> Result<Json<DeletedDocument>, ApiError> {
    let record = blocking(&state, move |docs| docs.delete(&tenant.0, &id)).await?;
    Ok(Json(DeletedDocument {
        id: record.id,
        object: "document",
        deleted: true,
    }))
}
