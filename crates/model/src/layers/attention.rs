//! Attention of query rows over a sequence's keys, masked by position.
//!
//! A key is visible to a query when `key_pos <= query_pos` and, on a
//! sliding-window layer, `query_pos - key_pos < window`. Masks depend only on
//! positions and the window, so one [`AttnPlan`] is built per layer kind and
//! call and shared by all layers of that kind.
//!
//! When slots are in position order, query rows are processed in chunks and
//! each chunk reads only the key slots it can see, which skips the
//! upper triangle and everything outside a sliding window. Cost per chunk:
//! `O(chunk * visible_keys * heads * head_dim)`.
//!
//! On a GPU, in bf16 or f16, a plan instead names each 64-row tile's key
//! range and one flash-attention launch runs the whole layer, scores kept on
//! chip. Plans that observe attention (which needs the probabilities) and
//! `PROPHETKV_FLASH_ATTENTION=0` keep the chunked path.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::attention_row::attend_one_row;
use crate::kernels::{self, FLASH_HEAD_DIMS, FLASH_TILE_ROWS};
use crate::Result;

/// Query rows per chunk on the CPU. Large enough for efficient GEMMs, small
/// enough that a sliding window skips most keys.
const QUERY_CHUNK: usize = 128;

/// Query rows per chunk on a GPU: kernel launches, not arithmetic, bound a
/// chunk there, so chunks are larger (a chunk's scores of 32 heads over 32k
/// keys are 2 GiB in bf16).
const GPU_QUERY_CHUNK: usize = 1024;

/// Whether one of our GPU kernels is on for `device`: a CUDA build, a GPU,
/// and the environment variable `var` (read once) not `0`, which keeps the
/// path it replaces at hand to compare the two.
fn gpu_kernel_enabled(device: &Device, var: &str, cell: &std::sync::OnceLock<bool>) -> bool {
    cfg!(feature = "cuda") && !device.is_cpu() && switched_on(var, cell)
}

/// Whether the environment variable `var` (read once) is not `0`.
fn switched_on(var: &str, cell: &std::sync::OnceLock<bool>) -> bool {
    *cell.get_or_init(|| std::env::var(var).as_deref() != Ok("0"))
}

static FUSED_SOFTMAX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether attention on `device` takes the GPU's fused masked softmax
/// (`PROPHETKV_FUSED_SOFTMAX=0`: candle's softmax over an additive mask).
fn fused_softmax(device: &Device) -> bool {
    gpu_kernel_enabled(device, "PROPHETKV_FUSED_SOFTMAX", &FUSED_SOFTMAX)
}

/// Whether f32 attention on the CPU takes the CPU's fused masked softmax
/// (the same switch as the GPU's).
fn cpu_fused_softmax(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && dtype == DType::F32 && switched_on("PROPHETKV_FUSED_SOFTMAX", &FUSED_SOFTMAX)
}

#[cfg(feature = "cuda")]
fn fused(scores: &Tensor, q_pos: &Tensor, k_pos: &Tensor, window: Option<usize>) -> Result<Tensor> {
    crate::kernels::masked_softmax(scores, q_pos, k_pos, window)
}

#[cfg(not(feature = "cuda"))]
fn fused(_: &Tensor, _: &Tensor, _: &Tensor, _: Option<usize>) -> Result<Tensor> {
    Err(crate::ModelError::Device(
        "the fused softmax needs a CUDA build".into(),
    ))
}

/// Whether attention on `device` may take the flash-attention kernel: a GPU
/// of compute capability 8.0 or newer (`PROPHETKV_FLASH_ATTENTION=0`: the
/// chunked path).
fn flash_enabled(device: &Device) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    gpu_kernel_enabled(device, "PROPHETKV_FLASH_ATTENTION", &ENABLED) && flash_runs_on(device)
}

#[cfg(feature = "cuda")]
fn flash_runs_on(device: &Device) -> bool {
    crate::kernels::flash_runs_on(device)
}

#[cfg(not(feature = "cuda"))]
fn flash_runs_on(_: &Device) -> bool {
    false
}

#[cfg(feature = "cuda")]
fn flash(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    plan: &FlashPlan,
    window: Option<usize>,
) -> Result<Tensor> {
    crate::kernels::flash_attention(
        q,
        k,
        v,
        &plan.query_pos,
        &plan.key_pos,
        &plan.tiles,
        plan.max_keys,
        plan.max_end,
        window,
    )
}

#[cfg(not(feature = "cuda"))]
fn flash(_: &Tensor, _: &Tensor, _: &Tensor, _: &FlashPlan, _: Option<usize>) -> Result<Tensor> {
    Err(crate::ModelError::Device(
        "flash attention needs a CUDA build".into(),
    ))
}

/// The query heads sharing one KV head, and a head's size: what a plan
/// needs to know of the model beyond positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadShape {
    pub(crate) group: usize,
    pub(crate) head_dim: usize,
}

/// A whole layer's attention as one flash-attention launch: positions and
/// each tile's key range, on the device. (Without a CUDA build no plan is
/// made, and nothing reads them.)
#[derive(Debug)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct FlashPlan {
    query_pos: Tensor,
    key_pos: Tensor,
    /// `[start, end)` key slots per tile of [`FLASH_TILE_ROWS`] rows.
    tiles: Tensor,
    /// The longest of those ranges.
    max_keys: usize,
    /// The largest end of those ranges.
    max_end: usize,
}

/// Key slot ranges, two u32 per tile of [`FLASH_TILE_ROWS`] rows, where rows
/// are `(query i, head g)` pairs `i * group + g`; `range_of` gives the slots
/// a range of queries can see.
fn tile_key_ranges(
    queries: usize,
    group: usize,
    range_of: impl Fn(Range<usize>) -> Range<usize>,
) -> Vec<u32> {
    let rows = queries * group;
    let mut ranges = Vec::with_capacity(2 * rows.div_ceil(FLASH_TILE_ROWS));
    for r0 in (0..rows).step_by(FLASH_TILE_ROWS) {
        let last = (r0 + FLASH_TILE_ROWS).min(rows) - 1;
        let keys = range_of(r0 / group..last / group + 1);
        ranges.push(keys.start as u32);
        ranges.push(keys.end as u32);
    }
    ranges
}

/// The flash kernel's key range for each tile of rows at `query_pos` over
/// the slots `allowed` of `key_pos`: the slots its queries can see when the
/// slots are in position order, else all of `allowed`.
fn flash_tiles(
    query_pos: &[u32],
    key_pos: &[u32],
    allowed: &Range<usize>,
    window: Option<usize>,
    group: usize,
) -> Vec<u32> {
    let keys_in = &key_pos[allowed.clone()];
    let keys_sorted = keys_in.windows(2).all(|w| w[0] <= w[1]);
    tile_key_ranges(query_pos.len(), group, |queries| {
        if !keys_sorted {
            return allowed.clone();
        }
        let local = visible_key_range(&query_pos[queries], keys_in, window);
        allowed.start + local.start..allowed.start + local.end
    })
}

/// Query rows per chunk on `device`.
fn query_chunk(device: &Device) -> usize {
    if device.is_cpu() {
        QUERY_CHUNK
    } else {
        GPU_QUERY_CHUNK
    }
}

/// One block of query rows and the key slots they read.
#[derive(Debug)]
struct ChunkPlan {
    rows: Range<usize>,
    keys: Range<usize>,
    softmax: ChunkSoftmax,
}

/// How a chunk's softmax hides the keys a row cannot see.
#[derive(Debug)]
enum ChunkSoftmax {
    /// candle's softmax: every key in range is visible.
    Plain,
    /// candle's softmax over the scores plus this `(rows, keys)` mask.
    Additive(Tensor),
    /// On a GPU, the fused softmax, masking by the rows' and keys'
    /// positions (u32 on the device) as it reads.
    Positions(Tensor, Tensor),
    /// On the CPU, the fused softmax over the keys (within the chunk's)
    /// each row sees.
    Ranges(Vec<Range<usize>>),
}

/// Which attention kernels a plan may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// The fastest the device and precision allow.
    Fastest,
    /// The chunked path that writes out the scores (the reference the
    /// flash kernel is checked against).
    Chunked,
}

/// How a set of query rows attends over a set of keys, fixed per layer kind.
#[derive(Debug)]
pub(crate) struct AttnPlan {
    chunks: Vec<ChunkPlan>,
    /// Set when the flash-attention kernel runs the layer; `chunks` is
    /// empty then.
    flash: Option<FlashPlan>,
    num_keys: usize,
    window: Option<usize>,
}

impl AttnPlan {
    /// Plans attention of rows at `query_pos` over the key slots `allowed`
    /// (positions `key_pos`, all slots). With `whole` set, one chunk covers
    /// all rows (needed to observe attention over a fixed key range); it
    /// still reads only the keys some row can see. On a GPU in half
    /// precision, plans that do not observe attention take the flash kernel
    /// unless `kernels` asks for the chunked path.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        query_pos: &[u32],
        key_pos: &[u32],
        allowed: Range<usize>,
        window: Option<usize>,
        whole: bool,
        heads: HeadShape,
        (dtype, device): (DType, &Device),
        kernels: Kernels,
    ) -> Result<Self> {
        let flash = kernels == Kernels::Fastest
            && !whole
            && !query_pos.is_empty()
            && flash_enabled(device)
            && matches!(dtype, DType::BF16 | DType::F16)
            && FLASH_HEAD_DIMS.contains(&heads.head_dim);
        if flash {
            let tiles = flash_tiles(query_pos, key_pos, &allowed, window, heads.group);
            let up = |p: &[u32]| Tensor::new(p, device);
            let max_keys = tiles
                .chunks(2)
                .map(|t| t[1].saturating_sub(t[0]) as usize)
                .max()
                .unwrap_or(0);
            let max_end = tiles.chunks(2).map(|t| t[1] as usize).max().unwrap_or(0);
            return Ok(Self {
                chunks: Vec::new(),
                flash: Some(FlashPlan {
                    query_pos: up(query_pos)?,
                    key_pos: up(key_pos)?,
                    tiles: up(&tiles)?,
                    max_keys,
                    max_end,
                }),
                num_keys: key_pos.len(),
                window,
            });
        }
        let keys_in = &key_pos[allowed.clone()];
        let keys_sorted = keys_in.windows(2).all(|w| w[0] <= w[1]);
        let chunk = query_chunk(device);
        let mut chunks = Vec::new();
        for rows in row_chunks(query_pos, window, whole || !keys_sorted, chunk) {
            let local = if !keys_sorted {
                0..keys_in.len()
            } else {
                visible_key_range(&query_pos[rows.clone()], keys_in, window)
            };
            let keys = allowed.start + local.start..allowed.start + local.end;
            let (q, k) = (&query_pos[rows.clone()], &key_pos[keys.clone()]);
            let softmax = if fused_softmax(device) {
                let up = |p: &[u32]| Tensor::new(p, device);
                ChunkSoftmax::Positions(up(q)?, up(k)?)
            } else if keys_sorted && cpu_fused_softmax(device, dtype) {
                // Sorted keys: what one row sees is one range of them.
                let each = q.iter().map(|&p| visible_key_range(&[p], k, window));
                ChunkSoftmax::Ranges(each.collect())
            } else {
                match build_mask(q, k, window, dtype, device)? {
                    Some(mask) => ChunkSoftmax::Additive(mask),
                    None => ChunkSoftmax::Plain,
                }
            };
            chunks.push(ChunkPlan {
                rows,
                keys,
                softmax,
            });
        }
        Ok(Self {
            chunks,
            flash: None,
            num_keys: key_pos.len(),
            window,
        })
    }

    /// The key slots some chunk reads: `start..end` over all chunks.
    fn key_span(&self) -> Range<usize> {
        let start = self.chunks.iter().map(|c| c.keys.start).min().unwrap_or(0);
        let end = self.chunks.iter().map(|c| c.keys.end).max().unwrap_or(0);
        start..end.max(start)
    }
}

/// Slots (in a position-sorted key list) that any of `query_pos` can see.
/// Consecutive row ranges processed together: at most `chunk` rows,
/// and, under a sliding window, rows within `chunk` positions of the
/// chunk's first, so that scattered rows (a recomputed selection) do not make
/// a chunk read keys far outside every row's window. `single`: one chunk.
fn row_chunks(
    query_pos: &[u32],
    window: Option<usize>,
    single: bool,
    chunk: usize,
) -> Vec<Range<usize>> {
    if query_pos.is_empty() {
        return Vec::new();
    }
    if single {
        return std::iter::once(0..query_pos.len()).collect();
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    for (i, &p) in query_pos.iter().enumerate() {
        let full = i - start == chunk;
        let spread = window.is_some() && p.abs_diff(query_pos[start]) as usize >= chunk;
        if i > start && (full || spread) {
            chunks.push(start..i);
            start = i;
        }
    }
    chunks.push(start..query_pos.len());
    chunks
}

fn visible_key_range(query_pos: &[u32], key_pos: &[u32], window: Option<usize>) -> Range<usize> {
    let lo = query_pos.iter().copied().min().unwrap_or(0) as i64;
    let hi = query_pos.iter().copied().max().unwrap_or(0) as i64;
    let first_visible = match window {
        Some(w) => lo - w as i64 + 1,
        None => i64::MIN,
    };
    let start = key_pos.partition_point(|&p| (p as i64) < first_visible);
    let end = key_pos.partition_point(|&p| (p as i64) <= hi);
    start..end.max(start)
}

fn visible(query: u32, key: u32, window: Option<usize>) -> bool {
    key <= query && window.is_none_or(|w| ((query - key) as usize) < w)
}

/// The additive `(queries, keys)` mask of `query_pos` over `key_pos`
/// (0 where visible, -inf elsewhere) in `dtype`; `None` when every key is
/// visible to every query. A GPU builds it from the positions on the device.
pub(crate) fn build_mask(
    query_pos: &[u32],
    key_pos: &[u32],
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    if all_visible(query_pos, key_pos, window) {
        return Ok(None);
    }
    if !device.is_cpu() {
        return device_mask(query_pos, key_pos, window, dtype, device).map(Some);
    }
    let mut mask = Vec::with_capacity(query_pos.len() * key_pos.len());
    for &q in query_pos {
        mask.extend(key_pos.iter().map(|&k| {
            if visible(q, k, window) {
                0f32
            } else {
                f32::NEG_INFINITY
            }
        }));
    }
    let mask = Tensor::from_vec(mask, (query_pos.len(), key_pos.len()), device)?;
    Ok(Some(mask.to_dtype(dtype)?))
}

/// Whether every key is visible to every query: the latest key is no later
/// than the earliest query and, under a window, the earliest key is within
/// the window of the latest query.
fn all_visible(query_pos: &[u32], key_pos: &[u32], window: Option<usize>) -> bool {
    let (Some(&q_lo), Some(&q_hi)) = (query_pos.iter().min(), query_pos.iter().max()) else {
        return true;
    };
    let (Some(&k_lo), Some(&k_hi)) = (key_pos.iter().min(), key_pos.iter().max()) else {
        return true;
    };
    visible(q_lo, k_hi, window) && visible(q_hi, k_lo, window)
}

/// [`build_mask`] on the device: the positions go up (a few KiB), the
/// `(queries, keys)` mask is made there.
fn device_mask(
    query_pos: &[u32],
    key_pos: &[u32],
    window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let (n, r) = (query_pos.len(), key_pos.len());
    let as_f32 = |p: &[u32]| p.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let q = Tensor::from_vec(as_f32(query_pos), (n, 1), device)?;
    let k = Tensor::from_vec(as_f32(key_pos), (1, r), device)?;
    // Positions below 2^24 are exact in f32, and so are their differences.
    let behind = q.broadcast_sub(&k)?;
    let mut seen = behind.ge(0f32)?;
    if let Some(w) = window {
        seen = (seen * behind.lt(w as f32)?)?;
    }
    let zero = Tensor::zeros((), dtype, device)?.broadcast_as((n, r))?;
    let hidden = Tensor::new(f32::NEG_INFINITY, device)?
        .to_dtype(dtype)?
        .broadcast_as((n, r))?;
    Ok(seen.where_cond(&zero, &hidden)?)
}

/// Attention output and, when asked, head-averaged probabilities.
pub(crate) struct AttnOutput {
    /// `(rows, heads * head_dim)`.
    pub(crate) out: Tensor,
    /// `(rows, observed keys)` head-averaged attention probabilities.
    pub(crate) observed: Option<Tensor>,
}

/// What attention statistics a call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observe {
    /// Nothing.
    None,
    /// The attention probabilities the rows actually use, restricted to
    /// these key slots (which must lie inside the slots the rows attend to).
    Attention(Range<usize>),
    /// A softmax of the rows' scores over these key slots alone (position
    /// mask and window applied), whatever the rows attend to.
    Scores(Range<usize>),
    /// What each key adds to the rows' outputs, restricted to these key
    /// slots like `Attention`: its probability times the norm of its value
    /// (per head, then averaged). A key attended to for no content (a
    /// separator or a sink, whose value is small) weighs less than its
    /// probability says.
    Flow(Range<usize>),
}

impl Observe {
    /// The key slots observed through the probabilities the rows use.
    pub(crate) fn attended(&self) -> Option<&Range<usize>> {
        match self {
            Observe::Attention(r) | Observe::Flow(r) => Some(r),
            Observe::None | Observe::Scores(_) => None,
        }
    }
}

/// Scaled dot-product attention of `q` `(rows, heads, head_dim)` (already
/// rotated and scaled) over `k`, `v` `(keys, kv_heads, head_dim)`.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    plan: &AttnPlan,
    observe: &ObserveCtx<'_>,
) -> Result<AttnOutput> {
    let (_, heads, head_dim) = q.dims3()?;
    let (num_keys, kv_heads, _) = k.dims3()?;
    debug_assert_eq!(num_keys, plan.num_keys);
    let group = heads / kv_heads;
    let observing_attention = observe.what.attended().is_some();
    if let Some(flash_plan) = &plan.flash {
        if observing_attention {
            return Err(crate::ModelError::Device(
                "observing attention needs a plan that keeps the probabilities".into(),
            ));
        }
        let out = flash(q, k, v, flash_plan, plan.window)?;
        let observed = match &observe.what {
            Observe::Scores(range) => Some(score_softmax(q, k, range, observe)?),
            _ => None,
        };
        return Ok(AttnOutput { out, observed });
    }
    let mut outs = Vec::with_capacity(plan.chunks.len());
    let mut observed = None;
    let copy = !k.device().is_cpu();
    let (k_heads, v_heads) = (
        ByHead::new(k, plan.key_span(), copy)?,
        ByHead::new(v, plan.key_span(), copy)?,
    );
    for chunk in &plan.chunks {
        let n = chunk.rows.len();
        let r = chunk.keys.len();
        if n == 1 && !matches!(chunk.softmax, ChunkSoftmax::Additive(_)) && !observing_attention {
            let q_row = q
                .narrow(0, chunk.rows.start, 1)?
                .reshape((heads, head_dim))?;
            if let Some(out) = attend_one_row(&q_row, k, v, chunk.keys.clone())? {
                outs.push(out);
                continue;
            }
        }
        // (n, heads, d) -> (kv_heads, group * n, d): the query heads sharing a
        // KV head become rows of one GEMM against that head's keys.
        let qc = q
            .narrow(0, chunk.rows.start, n)?
            .reshape((n, kv_heads, group, head_dim))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((kv_heads, group * n, head_dim))?;
        let (kc, vc) = (k_heads.keys(&chunk.keys)?, v_heads.values(&chunk.keys)?);
        let scores = qc.matmul(&kc)?.reshape((heads, n, r))?;
        let probs = match &chunk.softmax {
            ChunkSoftmax::Ranges(visible) => kernels::masked_softmax_cpu(&scores, visible)?,
            ChunkSoftmax::Positions(q_pos, k_pos) => fused(&scores, q_pos, k_pos, plan.window)?,
            ChunkSoftmax::Additive(mask) => {
                candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)?
            }
            ChunkSoftmax::Plain => candle_nn::ops::softmax_last_dim(&scores)?,
        };
        if let Some(range) = observe.what.attended() {
            // Observing plans have one chunk, which holds every row.
            let mut probs = probs.to_dtype(DType::F32)?;
            if let Observe::Flow(_) = observe.what {
                probs = probs.broadcast_mul(&value_norms(&vc, group)?)?;
            }
            observed = Some(over_range(&probs.mean(0)?, &chunk.keys, range)?);
        }
        let out = probs
            .reshape((kv_heads, group * n, r))?
            .matmul(&vc)?
            // (kv_heads, group, n, d) -> (n, heads * d)
            .reshape((kv_heads, group, n, head_dim))?
            .permute((2, 0, 1, 3))?
            .contiguous()?
            .reshape((n, heads * head_dim))?;
        outs.push(out);
    }
    let out = if outs.len() == 1 {
        outs.remove(0)
    } else {
        Tensor::cat(&outs, 0)?
    };
    if let Observe::Scores(range) = observe.what {
        observed = Some(score_softmax(q, k, range, observe)?);
    }
    Ok(AttnOutput { out, observed })
}

/// Attention of `q` `(n, heads, head_dim)` (rotated and scaled) at
/// `query_pos` over `k`, `v` `(keys, kv_heads, head_dim)` at `key_pos`,
/// masked by position and `window`: through the kernels a forward pass would
/// take on `q`'s device and precision or, with `materialized`, through the
/// chunked path that writes out the scores. `(n, heads * head_dim)`. For the
/// benchmark that checks the GPU's flash kernel against the chunked path.
pub fn attention_by_position(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    query_pos: &[u32],
    key_pos: &[u32],
    window: Option<usize>,
    materialized: bool,
) -> Result<Tensor> {
    let (n, heads, head_dim) = q.dims3()?;
    let (keys, kv_heads, _) = k.dims3()?;
    if query_pos.len() != n || key_pos.len() != keys || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(crate::ModelError::input(format!(
            "attention by position: q {:?}, k {:?}, {} query and {} key positions",
            q.dims(),
            k.dims(),
            query_pos.len(),
            key_pos.len()
        )));
    }
    let shape = HeadShape {
        group: heads / kv_heads,
        head_dim,
    };
    let kernels = if materialized {
        Kernels::Chunked
    } else {
        Kernels::Fastest
    };
    let on = (q.dtype(), q.device());
    let plan = AttnPlan::new(
        query_pos,
        key_pos,
        0..keys,
        window,
        false,
        shape,
        on,
        kernels,
    )?;
    let observe = ObserveCtx {
        what: &Observe::None,
        query_pos,
        key_pos,
        window,
    };
    Ok(attend(q, k, v, &plan, &observe)?.out)
}

/// A cache's keys or values arranged per KV head for the chunks' GEMMs.
///
/// On the CPU they stay strided views of the cache (the GEMM packs what it
/// reads). cuBLAS needs each head's rows contiguous, so on a GPU the slots
/// the plan reads are copied head-major once per call and layer, and every
/// chunk narrows that copy.
struct ByHead {
    /// A `(slots, kv_heads, d)` view of the cache (CPU), or a head-major
    /// copy `(kv_heads, span, d)` of the slots `base..` (GPU).
    t: Tensor,
    base: Option<usize>,
}

impl ByHead {
    /// A view of `t` or, with `copy` (a GPU), a head-major copy of the slots `span`.
    fn new(t: &Tensor, span: Range<usize>, copy: bool) -> Result<Self> {
        if !copy {
            return Ok(Self {
                t: t.clone(),
                base: None,
            });
        }
        let t = t
            .narrow(0, span.start, span.len())?
            .permute((1, 0, 2))?
            .contiguous()?;
        Ok(Self {
            t,
            base: Some(span.start),
        })
    }

    /// Keys `(kv_heads, d, r)` of the slots `slots`.
    fn keys(&self, slots: &Range<usize>) -> Result<Tensor> {
        let r = slots.len();
        Ok(match self.base {
            None => self.t.narrow(0, slots.start, r)?.permute((1, 2, 0))?,
            Some(base) => self.t.narrow(1, slots.start - base, r)?.transpose(1, 2)?,
        })
    }

    /// Values `(kv_heads, r, d)` of the slots `slots`.
    fn values(&self, slots: &Range<usize>) -> Result<Tensor> {
        let r = slots.len();
        Ok(match self.base {
            None => self.t.narrow(0, slots.start, r)?.permute((1, 0, 2))?,
            Some(base) => self.t.narrow(1, slots.start - base, r)?,
        })
    }
}

/// The norm of every key's value `(heads, 1, keys)` from the values
/// `(kv_heads, keys, d)`, repeated over the `group` query heads sharing them.
fn value_norms(values: &Tensor, group: usize) -> Result<Tensor> {
    let (kv_heads, r, _) = values.dims3()?;
    Ok(values
        .to_dtype(DType::F32)?
        .sqr()?
        .sum(2)?
        .sqrt()?
        .reshape((kv_heads, 1, r))?
        .broadcast_as((kv_heads, group, r))?
        .contiguous()?
        .reshape((kv_heads * group, 1, r))?)
}

/// Head-averaged probabilities `mass` `(rows, keys.len())` of the key slots
/// `keys`, laid out over the slots `range`: slots the chunk did not read (no
/// row can see them) get 0.
fn over_range(mass: &Tensor, keys: &Range<usize>, range: &Range<usize>) -> Result<Tensor> {
    let lo = range.start.max(keys.start).min(range.end);
    let hi = range.end.min(keys.end).max(lo);
    let rows = mass.dim(0)?;
    let zeros = |n: usize| Tensor::zeros((rows, n), mass.dtype(), mass.device());
    let mut parts = Vec::with_capacity(3);
    if lo > range.start {
        parts.push(zeros(lo - range.start)?);
    }
    if hi > lo {
        parts.push(mass.narrow(1, lo - keys.start, hi - lo)?);
    }
    if range.end > hi {
        parts.push(zeros(range.end - hi)?);
    }
    Ok(match parts.len() {
        0 => zeros(0)?,
        1 => parts.remove(0),
        _ => Tensor::cat(&parts, 1)?,
    })
}

/// Inputs of an observation beyond the plan: the positions it masks by.
pub(crate) struct ObserveCtx<'a> {
    pub(crate) what: &'a Observe,
    pub(crate) query_pos: &'a [u32],
    pub(crate) key_pos: &'a [u32],
    pub(crate) window: Option<usize>,
}

/// Head-averaged softmax of `q`'s scores over the key slots `range` only.
fn score_softmax(
    q: &Tensor,
    k: &Tensor,
    range: &Range<usize>,
    ctx: &ObserveCtx<'_>,
) -> Result<Tensor> {
    let (n, heads, head_dim) = q.dims3()?;
    let kv_heads = k.dim(1)?;
    let group = heads / kv_heads;
    let r = range.len();
    let qg = q
        .reshape((n, kv_heads, group, head_dim))?
        .permute((1, 2, 0, 3))?
        .contiguous()?
        .reshape((kv_heads, group * n, head_dim))?;
    let kr = ByHead::new(k, range.clone(), !k.device().is_cpu())?.keys(range)?;
    let scores = qg.matmul(&kr)?.reshape((heads, n, r))?;
    let mask = build_mask(
        ctx.query_pos,
        &ctx.key_pos[range.clone()],
        ctx.window,
        scores.dtype(),
        q.device(),
    )?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m)?,
        None => scores,
    };
    // A row that sees none of the range would be all -inf: give it zeros.
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(DType::F32)?;
    let probs = probs.eq(&probs)?.where_cond(&probs, &probs.zeros_like()?)?;
    Ok(probs.mean(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_chunks_partition_the_rows_and_keep_windowed_chunks_narrow() {
        // Every fifth position up to 4,000, like a recomputed 20% selection.
        let scattered: Vec<u32> = (0..4000).step_by(5).collect();
        let contiguous: Vec<u32> = (0..1000).collect();
        for (pos, window) in [
            (&scattered, Some(512)),
            (&scattered, None),
            (&contiguous, Some(512)),
        ] {
            let chunks = row_chunks(pos, window, false, QUERY_CHUNK);
            assert_eq!(chunks[0].start, 0);
            assert_eq!(chunks.last().unwrap().end, pos.len());
            for w in chunks.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            for c in &chunks {
                assert!(!c.is_empty() && c.len() <= QUERY_CHUNK);
                if window.is_some() {
                    assert!((pos[c.end - 1] - pos[c.start]) < QUERY_CHUNK as u32);
                }
            }
        }
        // Contiguous rows keep full chunks; unwindowed scattered rows too.
        assert!(
            row_chunks(&contiguous, Some(512), false, QUERY_CHUNK).len()
                == 1000usize.div_ceil(QUERY_CHUNK)
        );
        assert!(
            row_chunks(&scattered, None, false, QUERY_CHUNK).len()
                == 800usize.div_ceil(QUERY_CHUNK)
        );
        assert!(row_chunks(&[], Some(8), false, QUERY_CHUNK).is_empty());
        let single = row_chunks(&scattered, Some(8), true, QUERY_CHUNK);
        assert!(single.len() == 1 && single[0] == (0..800));
    }

    #[test]
    fn flash_tiles_cover_every_row_and_name_their_queries_key_range() {
        // 10 queries, 4 heads per KV head: 40 rows, one tile of 64.
        assert_eq!(
            tile_key_ranges(10, 4, |q| q.start * 100..q.end * 100),
            vec![0, 1000]
        );
        // 40 queries, 3 heads per KV head: 120 rows in tiles 0..64 (queries
        // 0..=21) and 64..120 (queries 21..=39).
        assert_eq!(
            tile_key_ranges(40, 3, |q| q.start..q.end),
            vec![0, 22, 21, 40]
        );
        assert!(tile_key_ranges(0, 4, |q| q).is_empty());
    }

    #[test]
    fn every_visible_key_lies_in_its_rows_flash_tile_and_none_outside_the_allowed_slots() {
        // Deterministic pseudo-random cases: contiguous and scattered rows,
        // windows or none, GQA groups that do and do not divide a tile,
        // sorted and shuffled keys, a narrowed allowed range.
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for case in 0..60 {
            let keys = 50 + next(400) as usize;
            let mut key_pos: Vec<u32> = (0..keys as u32).collect();
            if case % 5 == 4 {
                key_pos.reverse();
            }
            let queries: Vec<u32> = if case % 2 == 0 {
                let start = next(keys as u64) as u32;
                (start..keys as u32).collect()
            } else {
                (0..keys as u32).filter(|_| next(5) == 0).collect()
            };
            if queries.is_empty() {
                continue;
            }
            let window = (case % 3 == 0).then(|| 1 + next(64) as usize);
            let group = [1, 3, 4, 8][case % 4];
            let allowed = if case % 7 == 6 { 10..keys - 5 } else { 0..keys };
            let tiles = flash_tiles(&queries, &key_pos, &allowed, window, group);
            assert_eq!(
                tiles.len(),
                2 * (queries.len() * group).div_ceil(FLASH_TILE_ROWS)
            );
            for t in tiles.chunks(2) {
                assert!(allowed.start as u32 <= t[0] && t[0] <= t[1] && t[1] <= allowed.end as u32);
            }
            for (i, &q) in queries.iter().enumerate() {
                for g in 0..group {
                    let tile = (i * group + g) / FLASH_TILE_ROWS;
                    let (lo, hi) = (tiles[2 * tile] as usize, tiles[2 * tile + 1] as usize);
                    for j in allowed.clone() {
                        if visible(q, key_pos[j], window) {
                            assert!(lo <= j && j < hi, "case {case}: query {i} key slot {j}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn by_position_attention_matches_a_direct_softmax() {
        let (heads, kv_heads, d) = (4, 2, 8);
        let (q, k, v) = random_qkv(3, 6, heads, kv_heads, d);
        let (query_pos, key_pos) = ([2u32, 4, 5], [0u32, 1, 2, 3, 4, 5]);
        let window = Some(3);
        let out = attention_by_position(&q, &k, &v, &query_pos, &key_pos, window, true)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let (qv, kv, vv) = (
            q.to_vec3::<f32>().unwrap(),
            k.to_vec3::<f32>().unwrap(),
            v.to_vec3::<f32>().unwrap(),
        );
        for (i, &qp) in query_pos.iter().enumerate() {
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let seen: Vec<usize> = (0..6)
                    .filter(|&j| visible(qp, key_pos[j], window))
                    .collect();
                let keys: Vec<&[f32]> = seen.iter().map(|&j| kv[j][kh].as_slice()).collect();
                let p = direct_softmax(&qv[i][h], &keys);
                for c in 0..d {
                    let want: f32 = seen.iter().zip(&p).map(|(&j, pj)| pj * vv[j][kh][c]).sum();
                    assert!((out[i][h * d + c] - want).abs() < 1e-5, "row {i} head {h}");
                }
            }
        }
    }

    /// Random `q` `(rows, heads, d)` and `k`, `v` `(keys, kv_heads, d)`.
    fn random_qkv(
        rows: usize,
        keys: usize,
        heads: usize,
        kv_heads: usize,
        d: usize,
    ) -> (Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (rows, heads, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (keys, kv_heads, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (keys, kv_heads, d), &dev).unwrap();
        (q, k, v)
    }

    /// Softmax of `q`'s dot products with `keys`, computed directly.
    fn direct_softmax(q: &[f32], keys: &[&[f32]]) -> Vec<f32> {
        let scores: Vec<f32> = keys
            .iter()
            .map(|k| q.iter().zip(*k).map(|(a, b)| a * b).sum())
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = w.iter().sum();
        w.iter().map(|x| x / total).collect()
    }

    /// An f32 CPU plan of `query_pos` over every key of `key_pos`.
    fn cpu_plan(
        query_pos: &[u32],
        key_pos: &[u32],
        window: Option<usize>,
        whole: bool,
        group: usize,
        head_dim: usize,
    ) -> AttnPlan {
        let shape = HeadShape { group, head_dim };
        let on = (DType::F32, &Device::Cpu);
        let keys = 0..key_pos.len();
        AttnPlan::new(
            query_pos,
            key_pos,
            keys,
            window,
            whole,
            shape,
            on,
            Kernels::Fastest,
        )
        .unwrap()
    }

    #[test]
    fn observed_flow_is_each_heads_probability_times_its_value_norm() {
        let (heads, kv_heads, d, keys) = (4, 2, 8, 6);
        let (q, k, v) = random_qkv(2, keys, heads, kv_heads, d);
        let (query_pos, key_pos) = ([6u32, 7], [0u32, 1, 2, 3, 4, 5]);
        let plan = cpu_plan(&query_pos, &key_pos, None, true, heads / kv_heads, d);
        let what = Observe::Flow(1..keys);
        let ctx = ObserveCtx {
            what: &what,
            query_pos: &query_pos,
            key_pos: &key_pos,
            window: None,
        };
        let flow = attend(&q, &k, &v, &plan, &ctx)
            .unwrap()
            .observed
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let (qv, kv, vv) = (
            q.to_vec3::<f32>().unwrap(),
            k.to_vec3::<f32>().unwrap(),
            v.to_vec3::<f32>().unwrap(),
        );
        for i in 0..2 {
            let mut want = vec![0f32; keys];
            for (h, qh) in qv[i].iter().enumerate() {
                let kh = h / (heads / kv_heads);
                let ks: Vec<&[f32]> = kv.iter().map(|k| k[kh].as_slice()).collect();
                let p = direct_softmax(qh, &ks);
                for (j, w) in want.iter_mut().enumerate() {
                    let norm = vv[j][kh].iter().map(|x| x * x).sum::<f32>().sqrt();
                    *w += p[j] * norm / heads as f32;
                }
            }
            for (j, (&got, &want)) in flow[i].iter().zip(&want[1..]).enumerate() {
                assert!(
                    (got - want).abs() < 1e-5,
                    "row {i} key {}: {got} vs {want}",
                    j + 1
                );
            }
        }
    }

    #[test]
    fn window_range_covers_exactly_the_visible_keys() {
        let keys: Vec<u32> = (0..100).collect();
        let r = visible_key_range(&[50, 60], &keys, Some(8));
        assert_eq!(r, 43..61);
        let r = visible_key_range(&[50, 60], &keys, None);
        assert_eq!(r, 0..61);
    }

    #[test]
    fn observed_mass_is_laid_out_over_the_range_with_zeros_for_unread_keys() {
        let mass = Tensor::new(&[[0.5f32, 0.25, 0.25], [0.0, 0.5, 0.5]], &Device::Cpu).unwrap();
        // The chunk read slots 5..8; the range is wider on both sides.
        let wide = over_range(&mass, &(5..8), &(3..10)).unwrap();
        assert_eq!(
            wide.to_vec2::<f32>().unwrap(),
            vec![
                vec![0.0, 0.0, 0.5, 0.25, 0.25, 0.0, 0.0],
                vec![0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0]
            ]
        );
        // Narrower than what was read: the range's own columns.
        let narrow = over_range(&mass, &(5..8), &(6..7)).unwrap();
        assert_eq!(
            narrow.to_vec2::<f32>().unwrap(),
            vec![vec![0.25], vec![0.5]]
        );
        // Disjoint: all zeros.
        let apart = over_range(&mass, &(5..8), &(0..2)).unwrap();
        assert_eq!(apart.to_vec2::<f32>().unwrap(), vec![vec![0.0; 2]; 2]);
    }

    #[test]
    fn one_rows_visible_keys_follow_causality_and_the_window() {
        let rows = |queries: &[u32], keys: &[u32], window| {
            let each = queries
                .iter()
                .map(|&q| visible_key_range(&[q], keys, window));
            each.collect::<Vec<_>>()
        };
        let keys = [0, 1, 2, 3, 4, 5];
        assert_eq!(rows(&[3], &keys, None), vec![0..4]);
        assert_eq!(rows(&[3], &keys, Some(2)), vec![2..4]);
        assert_eq!(rows(&[9], &keys, Some(2)), vec![6..6]);
        // Keys with gaps (another document's rows left out).
        assert_eq!(rows(&[7, 12], &[2, 5, 8, 11], Some(6)), vec![0..2, 2..4]);
    }

    #[test]
    fn mask_hides_future_and_out_of_window_keys() {
        let m = build_mask(&[3], &[0, 1, 2, 3, 4], Some(2), DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let m = m.to_vec2::<f32>().unwrap();
        assert_eq!(m[0][2], 0.0);
        assert_eq!(m[0][3], 0.0);
        assert!(m[0][1].is_infinite() && m[0][4].is_infinite());
    }

    #[test]
    fn fully_visible_chunk_needs_no_mask() {
        let m = build_mask(&[9, 10], &[0, 1, 2], None, DType::F32, &Device::Cpu).unwrap();
        assert!(m.is_none());
    }

    #[test]
    fn device_mask_equals_the_host_mask() {
        let queries: Vec<u32> = vec![3, 7, 8, 20, 21];
        let keys: Vec<u32> = (0..24).collect();
        for window in [None, Some(4)] {
            let host = build_mask(&queries, &keys, window, DType::F32, &Device::Cpu)
                .unwrap()
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let device = device_mask(&queries, &keys, window, DType::F32, &Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(host, device, "window {window:?}");
        }
    }

    #[test]
    fn visibility_shortcut_agrees_with_every_pair() {
        let sets: [&[u32]; 5] = [&[0, 1, 2], &[5, 6], &[9, 10, 40], &[2], &[30, 31]];
        for q in sets {
            for k in sets {
                for w in [None, Some(3), Some(12)] {
                    let every = q.iter().all(|&a| k.iter().all(|&b| visible(a, b, w)));
                    assert_eq!(all_visible(q, k, w), every, "{q:?} {k:?} {w:?}");
                }
            }
        }
    }

    #[test]
    fn head_major_copies_give_the_same_attention_as_strided_views() {
        let (heads, kv_heads, d, keys) = (6, 2, 8, 40);
        let (q, k, v) = random_qkv(9, keys, heads, kv_heads, d);
        let query_pos: Vec<u32> = (30..39).collect();
        let key_pos: Vec<u32> = (0..keys as u32).collect();
        let plan = cpu_plan(&query_pos, &key_pos, Some(16), false, heads / kv_heads, d);
        let run = |copy: bool| {
            let chunk = &plan.chunks[0];
            let kc = ByHead::new(&k, plan.key_span(), copy)
                .unwrap()
                .keys(&chunk.keys)
                .unwrap();
            let vc = ByHead::new(&v, plan.key_span(), copy)
                .unwrap()
                .values(&chunk.keys)
                .unwrap();
            let qc = q
                .reshape((9, kv_heads, heads / kv_heads, d))
                .unwrap()
                .permute((1, 2, 0, 3))
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((kv_heads, 3 * 9, d))
                .unwrap();
            let scores = qc.matmul(&kc).unwrap();
            let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
            probs
                .matmul(&vc)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (strided, copied) = (run(false), run(true));
        let diff = strided
            .iter()
            .zip(&copied)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }
}
