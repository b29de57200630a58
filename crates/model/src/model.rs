//! [`Model`]: the weights plus the position-explicit primitives.
//!
//! Every primitive is a use of one loop, [`Model::forward_rows`]: some rows
//! (token, position, slot) go through all layers against a sequence's
//! [`Kv`], writing their keys and values into it. Prefill is "all rows,
//! appended"; a recompute is "these rows, overwritten"; decode is "one row,
//! appended" for many sequences at once.

use std::collections::HashSet;
use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::config::ModelConfig;
use crate::kv::{Kv, RowWrite};
use crate::layers::attention::{AttnPlan, HeadShape, Kernels, Observe};
use crate::layers::block::{Block, CallContext, SeqRows};
use crate::layers::embedding::Embedding;
use crate::layers::linear::{Linear, PassKind};
use crate::layers::norm::RmsNorm;
use crate::layers::rope::Rope;
use crate::{ModelError, Result};

/// Which representation of the weights the matmuls use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightPath {
    /// Block-quantized weights for matrix-vector steps (decode, the output
    /// projection), their f32 form for GEMMs (prefill, recompute); float
    /// files get a Q8_0 copy for the former. The library's default: prompt
    /// rows match [`WeightPath::F32`] exactly.
    #[default]
    Mixed,
    /// [`WeightPath::Mixed`] with the GEMMs' copy rounded to bf16, multiplied
    /// with f32 sums by the AVX-512 BF16 kernel on CPUs that have it (half
    /// the memory, twice the products per instruction); elsewhere `Mixed`.
    /// The server's and the command line's default.
    #[serde(rename = "mixed-bf16")]
    MixedBf16,
    /// Block-quantized GGUF weights as stored (dense files stay dense).
    Quantized,
    /// Everything dequantized to f32: the exactness reference.
    F32,
}

impl WeightPath {
    /// Whether the path keeps a quantized copy for steps and a dense one for GEMMs.
    pub fn is_mixed(self) -> bool {
        matches!(self, Self::Mixed | Self::MixedBf16)
    }
}

/// The rows to run through [`Model::forward_rows`].
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Token id of each row.
    pub tokens: Vec<u32>,
    /// Position of each row (drives RoPE and the mask).
    pub positions: Vec<u32>,
    /// Slot of each row in the [`Kv`]: existing slots (`< kv.len()`) are
    /// overwritten; after them, new slots `kv.len(), kv.len() + 1, ..` are appended.
    pub slots: Vec<usize>,
}

impl Rows {
    /// Rows appended after the `start` slots of a cache, at the given positions.
    pub fn append(tokens: &[u32], positions: &[u32], start: usize) -> Self {
        Self {
            tokens: tokens.to_vec(),
            positions: positions.to_vec(),
            slots: (start..start + tokens.len()).collect(),
        }
    }
}

/// One pass of rows through a range of layers: the general form of
/// [`Model::forward_rows`].
#[derive(Debug, Clone)]
pub struct Forward<'a> {
    /// The rows.
    pub rows: &'a Rows,
    /// Hidden states `(rows, hidden)` entering layer `layers.start`; `None`
    /// starts from the rows' token embeddings (then `layers.start` must be 0).
    pub input: Option<&'a Tensor>,
    /// Layers to run; the rows' K/V are written in these layers only.
    pub layers: Range<usize>,
    /// Attention statistics to return.
    pub observe: Observe,
    /// Key slots the rows may attend to; `None`: every slot. The rows' own
    /// slots must be inside.
    pub attend: Option<Range<usize>>,
}

impl<'a> Forward<'a> {
    /// All layers, from the embeddings, attending to every slot, observing nothing.
    pub fn new(rows: &'a Rows, num_layers: usize) -> Self {
        Self {
            rows,
            input: None,
            layers: 0..num_layers,
            observe: Observe::None,
            attend: None,
        }
    }
}

/// What [`Model::forward_rows`] returns.
#[derive(Debug)]
pub struct RowsOutput {
    /// Final-layer hidden states of the rows (before the final norm), `(rows, hidden)`.
    pub hidden: Tensor,
    /// Per layer, head-averaged attention probabilities of each row over the
    /// observed key slots, `(rows, observed)`; present when a range was given.
    pub attention: Option<Vec<Tensor>>,
}

/// A loaded model: config, weights and the forward-pass primitives.
#[derive(Debug)]
pub struct Model {
    pub(crate) config: ModelConfig,
    pub(crate) device: Device,
    /// Element type of activations, dense weights and the KV.
    pub(crate) dtype: DType,
    pub(crate) weight_path: WeightPath,
    /// `(vocab, hidden)` embedding table.
    pub(crate) embed: Embedding,
    pub(crate) blocks: Vec<Block>,
    pub(crate) final_norm: RmsNorm,
    pub(crate) lm_head: Linear,
    /// The output projection multiplies the embedding table's own storage
    /// (so it is not counted twice).
    pub(crate) lm_head_tied: bool,
    /// One RoPE per layer kind; `kind_windows[i]` is kind i's sliding window.
    pub(crate) ropes: Vec<Rope>,
    pub(crate) kind_windows: Vec<Option<usize>>,
    /// Per layer, the index of its kind.
    pub(crate) layer_kinds: Vec<usize>,
}

impl Model {
    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device every tensor lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Element type of activations, dense weights and the KV (f32 on the CPU).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The weight representation in use.
    pub fn weight_path(&self) -> WeightPath {
        self.weight_path
    }

    /// Bytes the weights occupy in memory, every kept copy counted.
    pub fn resident_bytes(&self) -> usize {
        let blocks: usize = self.blocks.iter().map(Block::resident_bytes).sum();
        self.embed.resident_bytes()
            + blocks
            + self.final_norm.resident_bytes()
            + if self.lm_head_tied {
                0
            } else {
                self.lm_head.resident_bytes()
            }
    }

    /// An empty cache for one sequence.
    pub fn new_kv(&self) -> Result<Kv> {
        let c = &self.config;
        Kv::empty(
            c.num_layers(),
            c.num_kv_heads,
            c.head_dim,
            self.dtype,
            &self.device,
        )
    }

    /// Ordinary prefill of `tokens` at explicit `positions`; returns the cache
    /// and the final hidden state of the last row, `(1, hidden)`.
    pub fn prefill(&self, tokens: &[u32], positions: &[u32]) -> Result<(Kv, Tensor)> {
        if tokens.is_empty() {
            return Err(ModelError::input("prefill needs at least one token"));
        }
        let mut kv = self.new_kv()?;
        let out = self.forward_rows(&mut kv, &Rows::append(tokens, positions, 0), None)?;
        let last = out.hidden.narrow(0, tokens.len() - 1, 1)?;
        Ok((kv, last))
    }

    /// Runs `rows` through every layer against `kv` (position-causal mask plus
    /// each layer's sliding window), writing their keys and values into `kv`.
    /// With `observe`, also returns per-layer attention mass over those slots.
    pub fn forward_rows(
        &self,
        kv: &mut Kv,
        rows: &Rows,
        observe: Option<Range<usize>>,
    ) -> Result<RowsOutput> {
        let mut pass = Forward::new(rows, self.blocks.len());
        if let Some(range) = observe {
            pass.observe = Observe::Attention(range);
        }
        self.forward(kv, &pass)
    }

    /// Runs one [`Forward`] pass against `kv`.
    pub fn forward(&self, kv: &mut Kv, pass: &Forward<'_>) -> Result<RowsOutput> {
        let rows = pass.rows;
        self.validate_rows(kv, rows)?;
        let n = rows.tokens.len();
        let total = kv.len() + rows.slots.iter().filter(|&&s| s >= kv.len()).count();
        let attend = pass.attend.clone().unwrap_or(0..total);
        self.validate_pass(pass, n, total, &attend)?;
        let write = RowWrite::new(&rows.slots, kv.len(), &self.device)?;
        for (&slot, &pos) in rows.slots.iter().zip(&rows.positions) {
            if slot < kv.positions.len() {
                kv.positions[slot] = pos;
            } else {
                kv.positions.push(pos);
            }
        }
        let whole = pass.observe.attended().is_some();
        let plans = self.plans(&rows.positions, &kv.positions, attend, whole)?;
        let angles = self.angles(&rows.positions)?;
        let mut x = match pass.input {
            Some(h) => h.clone(),
            None => self.embed(&rows.tokens)?,
        };
        let mut seqs = [SeqRows {
            rows: 0..n,
            kv,
            write,
            positions: rows.positions.clone(),
            plans,
        }];
        let ctx = CallContext {
            ropes: &self.ropes,
            angles: &angles,
            windows: &self.kind_windows,
            observe: &pass.observe,
            kind: PassKind::Prompt,
        };
        let observing = pass.observe != Observe::None;
        let mut attention = observing.then(|| Vec::with_capacity(pass.layers.len()));
        for layer in pass.layers.clone() {
            let (next, observed) = self.blocks[layer].forward(layer, &x, &mut seqs, &ctx)?;
            x = next;
            if let (Some(all), Some(o)) = (attention.as_mut(), observed) {
                all.push(o);
            }
        }
        Ok(RowsOutput {
            hidden: x,
            attention,
        })
    }

    /// Keys (rotated, `(rows, kv_heads, head_dim)`) that `layer` would compute
    /// for hidden states `hidden` entering it at `positions`; nothing is written.
    pub fn layer_keys(&self, layer: usize, hidden: &Tensor, positions: &[u32]) -> Result<Tensor> {
        let block = self.blocks.get(layer).ok_or_else(|| {
            ModelError::input(format!(
                "layer {layer} out of range: the model has {} layers",
                self.blocks.len()
            ))
        })?;
        let k_raw = block.keys(hidden)?;
        let rope = &self.ropes[block.kind];
        rope.apply(&k_raw, &rope.angles(positions)?)
    }

    /// Decodes one token for each sequence as one batch: token `b` is appended
    /// to `seqs[b]` at its next position. Returns `(batch, vocab)` logits.
    pub fn decode(&self, seqs: &mut [&mut Kv], tokens: &[u32]) -> Result<Tensor> {
        if seqs.len() != tokens.len() || tokens.is_empty() {
            return Err(ModelError::input(format!(
                "decode needs one token per sequence, got {} tokens for {} sequences",
                tokens.len(),
                seqs.len()
            )));
        }
        self.check_tokens(tokens)?;
        let mut positions = Vec::with_capacity(tokens.len());
        let mut batch = Vec::with_capacity(tokens.len());
        for (b, kv) in seqs.iter_mut().enumerate() {
            let pos = kv.next_position();
            self.check_position(pos)?;
            positions.push(pos);
            let write = RowWrite::new(&[kv.len()], kv.len(), &self.device)?;
            kv.positions.push(pos);
            let plans = self.plans(&[pos], &kv.positions, 0..kv.positions.len(), false)?;
            batch.push(SeqRows {
                rows: b..b + 1,
                kv,
                write,
                positions: vec![pos],
                plans,
            });
        }
        let angles = self.angles(&positions)?;
        let ctx = CallContext {
            ropes: &self.ropes,
            angles: &angles,
            windows: &self.kind_windows,
            observe: &Observe::None,
            kind: PassKind::Step,
        };
        let mut x = self.embed(tokens)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward(layer, &x, &mut batch, &ctx)?.0;
        }
        self.logits(&x)
    }

    /// Logits `(rows, vocab)` of final-layer hidden states `(rows, hidden)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = self.final_norm.forward(hidden)?;
        // Both paths read logits of a row or two the same way: the output
        // projection is the largest matrix, kept quantized.
        let logits = self
            .lm_head
            .forward(&h, PassKind::Step)?
            .to_dtype(DType::F32)?;
        Ok(match self.config.final_logit_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// Rotates pre-RoPE keys `(rows, kv_heads, head_dim)` of `layer` to `positions`.
    pub fn rope_k(&self, layer: usize, k_raw: &Tensor, positions: &[u32]) -> Result<Tensor> {
        let kind = *self.layer_kinds.get(layer).ok_or_else(|| {
            ModelError::input(format!(
                "layer {layer} out of range: the model has {} layers",
                self.blocks.len()
            ))
        })?;
        if k_raw.dim(0)? != positions.len() {
            return Err(ModelError::input(format!(
                "rope_k: {} key rows but {} positions",
                k_raw.dim(0)?,
                positions.len()
            )));
        }
        let rope = &self.ropes[kind];
        rope.apply(k_raw, &rope.angles(positions)?)
    }

    /// Builds a cache from per-layer pre-RoPE keys and values `(rows, kv_heads,
    /// head_dim)` placed at `positions`, rotating the keys there.
    pub fn kv_from_raw(&self, positions: Vec<u32>, layers: Vec<(Tensor, Tensor)>) -> Result<Kv> {
        if layers.len() != self.blocks.len() {
            return Err(ModelError::input(format!(
                "kv_from_raw: {} layers given, the model has {}",
                layers.len(),
                self.blocks.len()
            )));
        }
        let angles = self.angles(&positions)?;
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(l, (k_raw, v))| {
                let (k_raw, v) = (k_raw.to_dtype(self.dtype)?, v.to_dtype(self.dtype)?);
                let kind = self.layer_kinds[l];
                let k = self.ropes[kind].apply(&k_raw, &angles[kind])?;
                Ok((k_raw, k, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Kv::from_layers(positions, layers)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let x = self.embed.lookup(tokens, &self.device)?;
        Ok(match self.config.embed_scale {
            Some(s) => (x * s)?,
            None => x,
        })
    }

    fn angles(&self, positions: &[u32]) -> Result<Vec<crate::layers::rope::RopeAngles>> {
        self.ropes.iter().map(|r| r.angles(positions)).collect()
    }

    fn plans(
        &self,
        query: &[u32],
        keys: &[u32],
        allowed: Range<usize>,
        whole: bool,
    ) -> Result<Vec<AttnPlan>> {
        self.kind_windows
            .iter()
            .map(|&w| {
                AttnPlan::new(
                    query,
                    keys,
                    allowed.clone(),
                    w,
                    whole,
                    HeadShape {
                        group: self.config.num_heads / self.config.num_kv_heads,
                        head_dim: self.config.head_dim,
                    },
                    (self.dtype, &self.device),
                    Kernels::Fastest,
                )
            })
            .collect()
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(t) => Err(ModelError::input(format!(
                "token id {t} out of range for a vocabulary of {vocab}"
            ))),
            None => Ok(()),
        }
    }

    fn check_position(&self, pos: u32) -> Result<()> {
        let max = self.config.max_position;
        if pos as usize >= max {
            return Err(ModelError::ContextOverflow {
                len: pos as usize + 1,
                max,
            });
        }
        Ok(())
    }

    fn validate_rows(&self, kv: &Kv, rows: &Rows) -> Result<()> {
        let n = rows.tokens.len();
        if n == 0 {
            return Err(ModelError::input("forward_rows needs at least one row"));
        }
        if rows.positions.len() != n || rows.slots.len() != n {
            return Err(ModelError::input(format!(
                "rows disagree in length: {} tokens, {} positions, {} slots",
                n,
                rows.positions.len(),
                rows.slots.len()
            )));
        }
        self.check_tokens(&rows.tokens)?;
        if let Some(&p) = rows.positions.iter().max() {
            self.check_position(p)?;
        }
        let len = kv.len();
        let split = rows.slots.iter().position(|&s| s >= len).unwrap_or(n);
        let mut seen = HashSet::with_capacity(split);
        if let Some(&dup) = rows.slots[..split].iter().find(|&&s| !seen.insert(s)) {
            return Err(ModelError::input(format!("slot {dup} given twice")));
        }
        for (i, &slot) in rows.slots[split..].iter().enumerate() {
            if slot != len + i {
                return Err(ModelError::input(format!(
                    "slot {slot} is neither an existing slot (< {len}) nor the next append ({})",
                    len + i
                )));
            }
        }
        Ok(())
    }

    fn validate_pass(
        &self,
        pass: &Forward<'_>,
        n: usize,
        total: usize,
        attend: &Range<usize>,
    ) -> Result<()> {
        let layers = &pass.layers;
        if layers.start >= layers.end || layers.end > self.blocks.len() {
            return Err(ModelError::input(format!(
                "layer range {layers:?} invalid for a model of {} layers",
                self.blocks.len()
            )));
        }
        match pass.input {
            None if layers.start != 0 => {
                return Err(ModelError::input(
                    "a pass starting after layer 0 needs input hidden states",
                ))
            }
            Some(h) if h.dims() != [n, self.config.hidden_size] => {
                return Err(ModelError::input(format!(
                    "input hidden states have shape {:?}, expected [{n}, {}]",
                    h.dims(),
                    self.config.hidden_size
                )))
            }
            _ => {}
        }
        let within = |r: &Range<usize>, outer: &Range<usize>| {
            r.start <= r.end && r.start >= outer.start && r.end <= outer.end
        };
        if !within(attend, &(0..total)) {
            return Err(ModelError::input(format!(
                "attend range {attend:?} outside the {total} slots"
            )));
        }
        if let Some(&s) = pass.rows.slots.iter().find(|s| !attend.contains(s)) {
            return Err(ModelError::input(format!(
                "row slot {s} lies outside the attend range {attend:?}"
            )));
        }
        match &pass.observe {
            Observe::Attention(r) | Observe::Flow(r) if !within(r, attend) => {
                Err(ModelError::input(format!(
                    "observed key range {r:?} outside the attended slots {attend:?}"
                )))
            }
            Observe::Scores(r) if !within(r, &(0..total)) => Err(ModelError::input(format!(
                "scored key range {r:?} outside the {total} slots"
            ))),
            _ => Ok(()),
        }
    }
}
