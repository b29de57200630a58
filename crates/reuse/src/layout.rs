//! The assembled context: which slot holds which row, and which rows may be recomputed.
//!
//! Slots are positions: the prompt is laid out contiguously from 0 as
//! `anchor | piece 1 | piece 2 | ... | query`, where a piece is a cached
//! document or a fresh segment (separators, user text between documents).
//! Cached rows keep their K/V (re-rotated to their slot); fresh rows and the
//! query are placeholders until computed.

use std::ops::Range;

use candle_core::{Device, Tensor};
use prophetkv_model::Kv;

use crate::backbone::Backbone;
use crate::{Result, ReuseError};
use prophetkv_model::DocCache;

/// One segment of a request between the anchor and the question.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// A document whose KV was computed on its own.
    Document(&'a DocCache),
    /// Tokens computed for this request only.
    Fresh(&'a [u32]),
}

/// Where every row of an assembled request lives.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Token id of every slot.
    pub tokens: Vec<u32>,
    /// Slots of the anchor prefix (exact, never recomputed).
    pub anchor: Range<usize>,
    /// Slots of each document, in request order.
    pub documents: Vec<Range<usize>>,
    /// Slots of fresh segments.
    pub fresh: Vec<usize>,
    /// Slots of the question (always the last rows).
    pub query: Range<usize>,
    /// Document slots a strategy may choose to recompute.
    pub eligible: Vec<usize>,
}

impl Layout {
    /// Lays out `anchor + pieces + query`. With `first_doc_eligible` false, a
    /// document directly after the anchor is not eligible: its cache is exact.
    pub fn new(
        anchor: &DocCache,
        pieces: &[Piece<'_>],
        query: &[u32],
        first_doc_eligible: bool,
    ) -> Result<Self> {
        if query.is_empty() {
            return Err(ReuseError::EmptyQuery);
        }
        let mut tokens = anchor.tokens().to_vec();
        let anchor_slots = 0..tokens.len();
        let mut documents = Vec::new();
        let mut fresh = Vec::new();
        let mut eligible = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let start = tokens.len();
            match piece {
                Piece::Document(doc) => {
                    if doc.is_empty() {
                        return Err(ReuseError::EmptyDocument {
                            index: documents.len(),
                        });
                    }
                    if doc.anchor() != anchor.tokens() {
                        return Err(ReuseError::AnchorMismatch {
                            index: documents.len(),
                        });
                    }
                    tokens.extend_from_slice(doc.tokens());
                    let slots = start..tokens.len();
                    let exact = i == 0 && !first_doc_eligible;
                    if !exact {
                        eligible.extend(slots.clone());
                    }
                    documents.push(slots);
                }
                Piece::Fresh(ids) => {
                    tokens.extend_from_slice(ids);
                    fresh.extend(start..tokens.len());
                }
            }
        }
        let start = tokens.len();
        tokens.extend_from_slice(query);
        Ok(Self {
            query: start..tokens.len(),
            tokens,
            anchor: anchor_slots,
            documents,
            fresh,
            eligible,
        })
    }

    /// Number of slots (prompt tokens).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True for an empty layout (never produced by [`Layout::new`]).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Rows cached from documents (eligible or not).
    pub fn document_rows(&self) -> usize {
        self.documents.iter().map(|d| d.len()).sum()
    }
}

/// Builds the request's cache: anchor and documents from their caches, keys
/// re-rotated to their slots; fresh and query slots zero until computed.
pub fn assemble(
    model: &impl Backbone,
    layout: &Layout,
    anchor: &DocCache,
    pieces: &[Piece<'_>],
    device: &Device,
) -> Result<Kv> {
    let num_layers = model.num_layers();
    let mut layers = Vec::with_capacity(num_layers);
    for l in 0..num_layers {
        let (k_anchor, v_anchor) = &anchor.layers()[l];
        let (_, kv_heads, head_dim) = k_anchor.dims3()?;
        let zeros = |n: usize| Tensor::zeros((n, kv_heads, head_dim), k_anchor.dtype(), device);
        let mut ks = vec![k_anchor.clone()];
        let mut vs = vec![v_anchor.clone()];
        for piece in pieces {
            match piece {
                Piece::Document(doc) => {
                    let (k, v) = &doc.layers()[l];
                    ks.push(k.clone());
                    vs.push(v.clone());
                }
                Piece::Fresh(ids) if !ids.is_empty() => {
                    ks.push(zeros(ids.len())?);
                    vs.push(zeros(ids.len())?);
                }
                Piece::Fresh(_) => {}
            }
        }
        ks.push(zeros(layout.query.len())?);
        vs.push(zeros(layout.query.len())?);
        layers.push((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?));
    }
    let positions = (0..layout.len() as u32).collect();
    Ok(model.kv_from_raw(positions, layers)?)
}
