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
    compute_doc_cache_keeping(model, anchor, tokens, &[])
}

/// [`compute_doc_cache`], keeping too the rows' hidden states entering each
/// of `hidden_layers` (so a recomputation can start there).
pub fn compute_doc_cache_keeping(
    model: &impl Backbone,
    anchor: &[u32],
    tokens: &[u32],
    hidden_layers: &[usize],
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
    let num_layers = model.num_layers();
    let mut stops: Vec<usize> = hidden_layers.to_vec();
    stops.sort_unstable();
    stops.dedup();
    if let Some(&l) = stops.iter().find(|&&l| l == 0 || l >= num_layers) {
        return Err(ReuseError::Option {
            name: "hidden layers",
            reason: format!("layer {l} has no cached input (1..{num_layers} do)"),
        });
    }
    let positions: Vec<u32> = (0..ids.len() as u32).collect();
    let mut kv = model.new_kv()?;
    let pass_rows = Rows::append(&ids, &positions, 0);
    let (start, len) = (anchor.len(), tokens.len());
    let pass = prophetkv_model::Forward::new(&pass_rows, num_layers);
    model.forward(&mut kv, &pass)?;
    // The kept hidden states come from a second run of the layers below the
    // deepest one kept, over the same rows: it rewrites the same keys and
    // values, and the cache's layers all hold every row from the first.
    let mut kept = Vec::with_capacity(stops.len());
    let mut hidden: Option<candle_core::Tensor> = None;
    let mut from = 0;
    for &end in &stops {
        let mut pass = prophetkv_model::Forward::new(&pass_rows, num_layers);
        pass.layers = from..end;
        pass.input = hidden.as_ref();
        let out = model.forward(&mut kv, &pass)?.hidden;
        kept.push((end, out.narrow(0, start, len)?.copy()?));
        hidden = Some(out);
        from = end;
    }
    let layers = (0..num_layers)
        .map(|l| {
            let k = kv.k_raw(l)?.narrow(0, start, len)?.copy()?;
            let v = kv.v(l)?.narrow(0, start, len)?.copy()?;
            Ok((k, v))
        })
        .collect::<Result<_>>()?;
    let mut cache = DocCache::from_parts(anchor.to_vec(), tokens.to_vec(), layers)?;
    for (layer, h) in kept {
        cache = cache.with_hidden(layer, h)?;
    }
    Ok(cache)
}

/// [`compute_doc_cache_keeping`] with `preamble` between the anchor and the
/// document, the rows filed under `anchor` alone: the document has seen a
/// stand-in for the documents a request puts before it, where a document
/// cached after the anchor alone behaves as if it came first.
pub fn compute_doc_cache_behind(
    model: &impl Backbone,
    anchor: &[u32],
    preamble: &[u32],
    tokens: &[u32],
    hidden_layers: &[usize],
) -> Result<DocCache> {
    let context: Vec<u32> = anchor.iter().chain(preamble).copied().collect();
    let cache = compute_doc_cache_keeping(model, &context, tokens, hidden_layers)?;
    Ok(cache.filed_under(anchor.to_vec()))
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
        Self::compute_keeping(model, anchor, documents, &[])
    }

    /// [`CachedDocuments::compute`], the documents keeping their hidden
    /// states entering each of `hidden_layers`.
    pub fn compute_keeping(
        model: &impl Backbone,
        anchor: &[u32],
        documents: &[Vec<u32>],
        hidden_layers: &[usize],
    ) -> Result<Self> {
        Self::compute_behind(model, anchor, &[], documents, 0, hidden_layers)
    }

    /// [`CachedDocuments::compute_keeping`] with the documents from index
    /// `exact` on cached behind `preamble` ([`compute_doc_cache_behind`]);
    /// the first `exact` stay cached after the anchor alone (with 1, the
    /// document directly after the anchor in the request stays exact). An
    /// empty preamble caches every document after the anchor alone.
    pub fn compute_behind(
        model: &impl Backbone,
        anchor: &[u32],
        preamble: &[u32],
        documents: &[Vec<u32>],
        exact: usize,
        hidden_layers: &[usize],
    ) -> Result<Self> {
        let mut cached = Vec::with_capacity(documents.len());
        for (index, ids) in documents.iter().enumerate() {
            if ids.is_empty() {
                return Err(ReuseError::EmptyDocument { index });
            }
            let behind = if index < exact { &[][..] } else { preamble };
            cached.push(compute_doc_cache_behind(
                model,
                anchor,
                behind,
                ids,
                hidden_layers,
            )?);
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
