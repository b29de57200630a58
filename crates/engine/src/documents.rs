//! [`Documents`]: a tenant's registered documents, as the API manages them.
//!
//! Registration tokenizes and checks each document with the same limits as
//! inline documents in a request (and refuses one no request could hold),
//! stores it, and queues its cache for the
//! worker's idle time. Every call blocks on the registry (and on Redis when
//! deleting): call from a thread that may block.

use std::sync::Arc;

use prophetkv_model::TextTokenizer;
use prophetkv_store::{DocumentRecord, DocumentStore, NewDocument};

use crate::handle::EngineHandle;
use crate::validate::{
    check_document_id, check_document_text, check_list_limit, no_tokens, Limits, MAX_REGISTRATIONS,
};
use crate::{EngineError, Result};

/// Where a registered document's cache stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentStatus {
    /// Waiting for the worker's idle time (or its first use).
    Pending,
    /// Computed and stored.
    Ready,
    /// Computing it failed, for this reason; the first request that uses it
    /// tries again.
    Failed(String),
}

/// Registering, listing, reading and deleting documents.
#[derive(Clone)]
pub struct Documents {
    engine: EngineHandle,
    store: Arc<DocumentStore>,
    tokenizer: TextTokenizer,
    limits: Limits,
}

impl Documents {
    pub(crate) fn new(
        engine: EngineHandle,
        store: Arc<DocumentStore>,
        tokenizer: TextTokenizer,
        limits: Limits,
    ) -> Self {
        Self {
            engine,
            store,
            tokenizer,
            limits,
        }
    }

    /// Registers `documents` for `tenant` (all are checked, the tenant's
    /// quota included, before any is stored) and queues their caches; the
    /// records come back in order.
    pub fn register(
        &self,
        tenant: &str,
        documents: Vec<NewDocument>,
    ) -> Result<Vec<DocumentRecord>> {
        if documents.is_empty() || documents.len() > MAX_REGISTRATIONS {
            return Err(EngineError::invalid(
                "documents",
                format!(
                    "register 1 to {MAX_REGISTRATIONS} documents at a time, got {}",
                    documents.len()
                ),
            ));
        }
        let mut checked = Vec::with_capacity(documents.len());
        for (index, doc) in documents.into_iter().enumerate() {
            check_document_text(index, &doc.text)?;
            if let Some(id) = &doc.id {
                check_document_id(index, id)?;
            }
            let ids = self.tokenizer.encode(&doc.text)?;
            if ids.is_empty() {
                return Err(no_tokens(index));
            }
            self.limits.check_document_length(index, ids.len())?;
            checked.push((doc, ids));
        }
        self.engine.precompute_room(checked.len())?;
        // One quota decision for the whole call: all or none.
        let records = self.store.register_all(tenant, checked)?;
        for record in records.iter().filter(|r| !r.ready) {
            self.engine.precompute(tenant, &record.id);
        }
        Ok(records)
    }

    /// One page of `tenant`'s documents in id order: at most `limit` (see
    /// [`check_list_limit`]) after the id `after`, and whether more follow.
    pub fn page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<DocumentRecord>, bool)> {
        let limit = check_list_limit(limit)?;
        // One record past the page says whether more follow.
        let mut page = self.store.list_after(tenant, after, limit + 1)?;
        let has_more = page.len() > limit;
        page.truncate(limit);
        Ok((page, has_more))
    }

    /// The record of `id`.
    pub fn get(&self, tenant: &str, id: &str) -> Result<DocumentRecord> {
        Ok(self.store.get(tenant, id)?)
    }

    /// Whether `record`'s cache is ready, waiting, or failed (and why).
    pub fn status(&self, tenant: &str, record: &DocumentRecord) -> DocumentStatus {
        if record.ready {
            DocumentStatus::Ready
        } else {
            self.engine.precompute_status(tenant, &record.id)
        }
    }

    /// Deletes `id` with its caches in every tier.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<DocumentRecord> {
        Ok(self.store.delete(tenant, id)?)
    }
}
