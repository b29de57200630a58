//! Document caches for a request: from the store's tiers, or computed with
//! the model on a miss and handed to the store. The one place a document's
//! KV is computed; the store itself never runs the model.

use std::sync::Arc;

use prophetkv_model::DocCache;
use prophetkv_reuse::{compute_doc_cache_behind, Backbone};
use prophetkv_store::{DocumentStore, Tier};

use crate::Result;

/// The store, plus computing what it misses.
#[derive(Clone)]
pub struct DocumentCaches {
    store: Arc<DocumentStore>,
}

impl DocumentCaches {
    /// Caches kept in `store`.
    pub fn new(store: Arc<DocumentStore>) -> Self {
        Self { store }
    }

    /// The cache of registered document `id` of `tenant`, and where it came
    /// from; the document is marked ready once its cache is stored.
    pub fn registered(
        &self,
        model: &impl Backbone,
        tenant: &str,
        id: &str,
    ) -> Result<(Arc<DocCache>, Tier)> {
        let (record, ids) = self.store.document(tenant, id)?;
        let found = self.of_ids(model, tenant, &ids)?;
        self.store.mark_ready(&record, &ids)?;
        Ok(found)
    }

    /// The cache of a document's token ids (inline documents are
    /// content-addressed, so the same text is computed once per tenant).
    pub fn of_ids(
        &self,
        model: &impl Backbone,
        tenant: &str,
        ids: &[u32],
    ) -> Result<(Arc<DocCache>, Tier)> {
        if let Some(hit) = self.store.lookup(tenant, ids)? {
            return Ok(hit);
        }
        let (anchor, preamble) = (self.store.anchor(), self.store.preamble());
        let cache = compute_doc_cache_behind(model, anchor, preamble, ids, &[])?;
        Ok((self.store.insert(tenant, ids, cache)?, Tier::Computed))
    }
}
