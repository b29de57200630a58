//! One transformer block over rows that may belong to several sequences.
//!
//! The projections and the MLP run on all rows at once; attention runs per
//! sequence against that sequence's [`LayerKv`], after the rows' new keys and
//! values are written into it (so recomputed rows see each other's new K/V).

use std::ops::Range;

use candle_core::Tensor;

use super::attention::{attend, AttnPlan, Observe, ObserveCtx};
use super::linear::{Linear, PassKind};
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::rope::{Rope, RopeAngles};
use crate::kv::{Kv, RowWrite};
use crate::Result;

/// The attention sub-layer's weights.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) scale: f64,
}

/// A full block: (pre-norm, attention, post-norm?) then (pre-norm, MLP, post-norm?).
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) attn_norm: RmsNorm,
    pub(crate) attn: Attention,
    pub(crate) post_attn_norm: Option<RmsNorm>,
    pub(crate) mlp_norm: RmsNorm,
    pub(crate) mlp: Mlp,
    pub(crate) post_mlp_norm: Option<RmsNorm>,
    /// Index of this layer's kind (window + RoPE) in the model's kind table.
    pub(crate) kind: usize,
}

/// The rows of one sequence within a call.
pub(crate) struct SeqRows<'a> {
    /// Rows of the call's hidden state that belong to this sequence.
    pub(crate) rows: Range<usize>,
    /// The sequence's cache; rows are written as `write` says.
    pub(crate) kv: &'a mut Kv,
    /// Where each row goes in the cache (overwrites first, then appends in
    /// order), planned once for every layer.
    pub(crate) write: RowWrite,
    /// Position of each row.
    pub(crate) positions: Vec<u32>,
    /// Attention plan per layer kind.
    pub(crate) plans: Vec<AttnPlan>,
}

/// Per-call inputs shared by every block.
pub(crate) struct CallContext<'a> {
    /// RoPE per layer kind.
    pub(crate) ropes: &'a [Rope],
    /// Angles of every row of the call, per layer kind.
    pub(crate) angles: &'a [RopeAngles],
    /// Sliding window per layer kind.
    pub(crate) windows: &'a [Option<usize>],
    /// What attention statistics to return (single-sequence calls).
    pub(crate) observe: &'a Observe,
    /// Prompt rows or a decode step (picks the weights' copy).
    pub(crate) kind: PassKind,
}

impl Block {
    /// Bytes of every weight of the block.
    pub(crate) fn resident_bytes(&self) -> usize {
        let a = &self.attn;
        let norms = [
            Some(&self.attn_norm),
            a.q_norm.as_ref(),
            a.k_norm.as_ref(),
            self.post_attn_norm.as_ref(),
            Some(&self.mlp_norm),
            self.post_mlp_norm.as_ref(),
        ];
        let linears = [
            &a.q,
            &a.k,
            &a.v,
            &a.o,
            &self.mlp.gate,
            &self.mlp.up,
            &self.mlp.down,
        ];
        norms
            .iter()
            .flatten()
            .map(|n| n.resident_bytes())
            .sum::<usize>()
            + linears.iter().map(|l| l.resident_bytes()).sum::<usize>()
    }

    /// Pre-RoPE keys `(rows, kv_heads, head_dim)` of hidden states entering this block.
    pub(crate) fn keys(&self, x: &Tensor) -> Result<Tensor> {
        let a = &self.attn;
        let n = x.dim(0)?;
        let h = self.attn_norm.forward(x)?;
        let k =
            a.k.forward(&h, PassKind::Prompt)?
                .reshape((n, a.num_kv_heads, a.head_dim))?;
        match &a.k_norm {
            Some(norm) => norm.forward(&k),
            None => Ok(k),
        }
    }

    /// Runs `x` `(rows, hidden)` through the block as layer `layer`; returns the
    /// new hidden state and, if observed, `(rows, observed keys)` attention mass.
    pub(crate) fn forward(
        &self,
        layer: usize,
        x: &Tensor,
        seqs: &mut [SeqRows<'_>],
        ctx: &CallContext<'_>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let a = &self.attn;
        let n = x.dim(0)?;
        let h = self.attn_norm.forward(x)?;
        let kind = ctx.kind;
        let mut q =
            a.q.forward(&h, kind)?
                .reshape((n, a.num_heads, a.head_dim))?;
        let mut k =
            a.k.forward(&h, kind)?
                .reshape((n, a.num_kv_heads, a.head_dim))?;
        let v =
            a.v.forward(&h, kind)?
                .reshape((n, a.num_kv_heads, a.head_dim))?;
        if let Some(norm) = &a.q_norm {
            q = norm.forward(&q)?;
        }
        if let Some(norm) = &a.k_norm {
            k = norm.forward(&k)?;
        }
        let rope = &ctx.ropes[self.kind];
        let angles = &ctx.angles[self.kind];
        let q = (rope.apply(&q, angles)? * a.scale)?;
        let k_rot = rope.apply(&k, angles)?;

        let mut outs = Vec::with_capacity(seqs.len());
        let mut observed = None;
        for seq in seqs.iter_mut() {
            let (start, len) = (seq.rows.start, seq.rows.len());
            let cache = &mut seq.kv.layers[layer];
            cache.write(
                &seq.write,
                &k.narrow(0, start, len)?,
                &k_rot.narrow(0, start, len)?,
                &v.narrow(0, start, len)?,
            )?;
            let observe = ObserveCtx {
                what: ctx.observe,
                query_pos: &seq.positions,
                key_pos: &seq.kv.positions,
                window: ctx.windows[self.kind],
            };
            let result = attend(
                &q.narrow(0, start, len)?,
                &cache.k.view()?,
                &cache.v.view()?,
                &seq.plans[self.kind],
                &observe,
            )?;
            outs.push(result.out);
            observed = observed.or(result.observed);
        }
        let attn_out = if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(&outs, 0)?
        };
        let mut attn_out = a.o.forward(&attn_out, kind)?;
        if let Some(norm) = &self.post_attn_norm {
            attn_out = norm.forward(&attn_out)?;
        }
        let x = (x + attn_out)?;
        let mut mlp_out = self.mlp.forward(&self.mlp_norm.forward(&x)?, kind)?;
        if let Some(norm) = &self.post_mlp_norm {
            mlp_out = norm.forward(&mlp_out)?;
        }
        Ok(((x + mlp_out)?, observed))
    }
}
