//! What a request recomputed and why, token by token: the context's text
//! pieces with their segment, Stage I's score and whether (and in which
//! layers) Stage II recomputed them, plus each document's share of the
//! budget. Built only for requests that ask (`explain`), from what the reuse
//! run already knows.

use prophetkv_model::TextTokenizer;
use prophetkv_reuse::{ReuseOutput, StrategyKind};
use serde::Serialize;

/// Most context tokens an explained request may have (the payload grows
/// with them).
pub const MAX_EXPLAINED_TOKENS: usize = 16_384;

/// Where a context token belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// BOS and the instruction (cached once, exact).
    Anchor,
    /// Text computed for this request (the conversation before the documents).
    Fresh,
    /// A document's cached text.
    Document,
    /// The question (always computed).
    Query,
}

/// In which layers Stage II computed a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Recomputed {
    /// Served from its cache in every layer.
    None,
    /// Computed in every layer.
    AllLayers,
    /// Computed in layer 0 only (CacheBlend's selection pass), cached above.
    LayerZero,
}

/// One context token.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExplainedToken {
    /// Its text (a partial character replaced).
    pub text: String,
    /// Its segment.
    pub segment: SegmentKind,
    /// Its document's place in the request (documents only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// Stage I's fused score (rows a scoring strategy could choose).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Whether Stage II computed it.
    pub recomputed: Recomputed,
}

/// A document's part of the context and of the budget.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentShare {
    /// Its place in the request.
    pub index: usize,
    /// Its tokens.
    pub tokens: usize,
    /// Its tokens a strategy could choose (none for an exact first document).
    pub eligible: usize,
    /// Its tokens recomputed in every layer.
    pub recomputed: usize,
    /// Its share of all recomputed document tokens (0 when none were).
    pub budget_share: f64,
}

/// A request's explanation.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Explanation {
    /// Every context token, in order.
    pub tokens: Vec<ExplainedToken>,
    /// Every document, in order.
    pub documents: Vec<DocumentShare>,
    /// Rows run through each layer, over all passes.
    pub rows_per_layer: Vec<usize>,
}

/// The explanation of `out` (a run of `strategy`).
pub(crate) fn explain(
    tokenizer: &TextTokenizer,
    out: &ReuseOutput,
    strategy: StrategyKind,
) -> Explanation {
    let layout = &out.layout;
    let mut tokens: Vec<ExplainedToken> = layout
        .tokens
        .iter()
        .map(|&id| ExplainedToken {
            text: String::from_utf8_lossy(&tokenizer.token_bytes(id)).into_owned(),
            segment: SegmentKind::Anchor,
            document: None,
            score: None,
            recomputed: Recomputed::None,
        })
        .collect();
    let full = strategy == StrategyKind::Full;
    for &slot in &layout.fresh {
        tokens[slot].segment = SegmentKind::Fresh;
        tokens[slot].recomputed = Recomputed::AllLayers;
    }
    for slot in layout.query.clone() {
        tokens[slot].segment = SegmentKind::Query;
        tokens[slot].recomputed = Recomputed::AllLayers;
    }
    if full {
        for slot in layout.anchor.clone() {
            tokens[slot].recomputed = Recomputed::AllLayers;
        }
    }
    for (index, slots) in layout.documents.iter().enumerate() {
        for slot in slots.clone() {
            tokens[slot].segment = SegmentKind::Document;
            tokens[slot].document = Some(index);
            tokens[slot].recomputed = if full {
                Recomputed::AllLayers
            } else {
                Recomputed::None
            };
        }
    }
    if let Some(scores) = &out.scores {
        for (&slot, &score) in layout.eligible.iter().zip(scores) {
            tokens[slot].score = Some(score);
            if strategy == StrategyKind::CacheBlend {
                tokens[slot].recomputed = Recomputed::LayerZero;
            }
        }
    }
    for positions in &out.stats.selected_positions {
        for &slot in positions {
            tokens[slot as usize].recomputed = Recomputed::AllLayers;
        }
    }
    let total: usize = out.stats.selected_positions.iter().map(Vec::len).sum();
    let documents = layout
        .documents
        .iter()
        .enumerate()
        .map(|(index, slots)| {
            let recomputed = out.stats.selected_positions.get(index).map_or(0, Vec::len);
            DocumentShare {
                index,
                tokens: slots.len(),
                eligible: layout.eligible.iter().filter(|s| slots.contains(s)).count(),
                recomputed,
                budget_share: if total == 0 {
                    0.0
                } else {
                    recomputed as f64 / total as f64
                },
            }
        })
        .collect();
    Explanation {
        tokens,
        documents,
        rows_per_layer: out.stats.rows_per_layer.clone(),
    }
}
