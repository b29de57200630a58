//! Computing a document's KV once, to be reused at any offset.
//!
//! A document is prefilled as `[anchor] + document` (the anchor is BOS plus
//! the deployment's instruction prefix), and only the document's rows are
//! kept: pre-RoPE keys and values per layer, at local positions
//! `anchor.len()..anchor.len() + len`. So the document attended to exactly
//! what it would see at the start of a real prompt, and a single-document
//! request without recomputation equals a full prefill.
//!
//! The anchor's own rows are a [`DocCache`] too, computed with an empty anchor.

use prophetkv_model::{DocCache, Rows};

use crate::backbone::Backbone;
use crate::{Result, ReuseError};

/// Prefills `anchor + tokens` and keeps the rows of `tokens`.
pub fn compute_doc_cache(
    model: &impl Backbone,
    anchor: &[u32],
    tokens: &[u32],
) -> Result<DocCache> {
    if tokens.is_empty() {
        return Err(ReuseError::EmptyDocument { index: 0 });
    }
    let ids: Vec<u32> = anchor.iter().chain(tokens).copied().collect();
    if ids.len() > model.max_position() {
        return Err(ReuseError::ContextOverflow {
            len: ids.len(),
            max: model.max_position(),
        });
    }
    let positions: Vec<u32> = (0..ids.len() as u32).collect();
    let mut kv = model.new_kv()?;
    let pass_rows = Rows::append(&ids, &positions, 0);
    let pass = prophetkv_model::Forward::new(&pass_rows, model.num_layers());
    model.forward(&mut kv, &pass)?;
    let (start, len) = (anchor.len(), tokens.len());
    let layers = (0..model.num_layers())
        .map(|l| {
            let k = kv.k_raw(l)?.narrow(0, start, len)?.copy()?;
            let v = kv.v(l)?.narrow(0, start, len)?.copy()?;
            Ok((k, v))
        })
        .collect::<Result<_>>()?;
    Ok(DocCache::from_parts(
        anchor.to_vec(),
        tokens.to_vec(),
        layers,
    )?)
}

/// The cached half of a request: the anchor and the documents after it.
#[derive(Debug, Clone)]
pub struct CachedDocuments {
    /// BOS + instruction prefix.
    pub anchor: DocCache,
    /// Documents in request order, each cached after the anchor.
    pub documents: Vec<DocCache>,
}

impl CachedDocuments {
    /// Caches `anchor` and each document (token ids) after it.
    pub fn compute(model: &impl Backbone, anchor: &[u32], documents: &[Vec<u32>]) -> Result<Self> {
        let mut cached = Vec::with_capacity(documents.len());
        for (index, ids) in documents.iter().enumerate() {
            if ids.is_empty() {
                return Err(ReuseError::EmptyDocument { index });
            }
            cached.push(compute_doc_cache(model, anchor, ids)?);
        }
        Ok(Self {
            anchor: compute_doc_cache(model, &[], anchor)?,
            documents: cached,
        })
    }

    /// The documents as request pieces, in order, with nothing between them.
    pub fn pieces(&self) -> Vec<crate::Piece<'_>> {
        self.documents.iter().map(crate::Piece::Document).collect()
    }
}
