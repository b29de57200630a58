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

use std::ops::Range;

use candle_core::{Device, Tensor};

use super::attention_row::attend_one_row;
use crate::Result;

/// Query rows per chunk. Large enough for efficient GEMMs, small enough that a
/// sliding window skips most keys.
const QUERY_CHUNK: usize = 128;

/// One block of query rows and the key slots they read.
#[derive(Debug)]
struct ChunkPlan {
    rows: Range<usize>,
    keys: Range<usize>,
    /// Additive `(rows, keys)` mask; `None` when every key in range is visible.
    mask: Option<Tensor>,
}

/// How a set of query rows attends over a set of keys, fixed per layer kind.
#[derive(Debug)]
pub(crate) struct AttnPlan {
    chunks: Vec<ChunkPlan>,
    num_keys: usize,
}

impl AttnPlan {
    /// Plans attention of rows at `query_pos` over the key slots `allowed`
    /// (positions `key_pos`, all slots). With `whole` set, one chunk covers
    /// all rows (needed to observe attention over a fixed key range); it
    /// still reads only the keys some row can see.
    pub(crate) fn new(
        query_pos: &[u32],
        key_pos: &[u32],
        allowed: Range<usize>,
        window: Option<usize>,
        whole: bool,
        device: &Device,
    ) -> Result<Self> {
        let keys_in = &key_pos[allowed.clone()];
        let keys_sorted = keys_in.windows(2).all(|w| w[0] <= w[1]);
        let mut chunks = Vec::new();
        for rows in row_chunks(query_pos, window, whole || !keys_sorted) {
            let local = if !keys_sorted {
                0..keys_in.len()
            } else {
                visible_key_range(&query_pos[rows.clone()], keys_in, window)
            };
            let keys = allowed.start + local.start..allowed.start + local.end;
            let mask = build_mask(
                &query_pos[rows.clone()],
                &key_pos[keys.clone()],
                window,
                device,
            )?;
            chunks.push(ChunkPlan { rows, keys, mask });
        }
        Ok(Self {
            chunks,
            num_keys: key_pos.len(),
        })
    }
}

/// Slots (in a position-sorted key list) that any of `query_pos` can see.
/// Consecutive row ranges processed together: at most [`QUERY_CHUNK`] rows,
/// and, under a sliding window, rows within [`QUERY_CHUNK`] positions of the
/// chunk's first, so that scattered rows (a recomputed selection) do not make
/// a chunk read keys far outside every row's window. `single`: one chunk.
fn row_chunks(query_pos: &[u32], window: Option<usize>, single: bool) -> Vec<Range<usize>> {
    if query_pos.is_empty() {
        return Vec::new();
    }
    if single {
        return std::iter::once(0..query_pos.len()).collect();
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    for (i, &p) in query_pos.iter().enumerate() {
        let full = i - start == QUERY_CHUNK;
        let spread = window.is_some() && p.abs_diff(query_pos[start]) as usize >= QUERY_CHUNK;
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

pub(crate) fn build_mask(
    query_pos: &[u32],
    key_pos: &[u32],
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let all_visible = query_pos
        .iter()
        .all(|&q| key_pos.iter().all(|&k| visible(q, k, window)));
    if all_visible {
        return Ok(None);
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
    Ok(Some(Tensor::from_vec(
        mask,
        (query_pos.len(), key_pos.len()),
        device,
    )?))
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
    let mut outs = Vec::with_capacity(plan.chunks.len());
    let mut observed = None;
    let observing_attention = matches!(observe.what, Observe::Attention(_));
    for chunk in &plan.chunks {
        let n = chunk.rows.len();
        let r = chunk.keys.len();
        if n == 1 && chunk.mask.is_none() && !observing_attention {
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
        // (r, kv_heads, d) -> (kv_heads, d, r) and (kv_heads, r, d): strided views.
        let kc = k.narrow(0, chunk.keys.start, r)?.permute((1, 2, 0))?;
        let vc = v.narrow(0, chunk.keys.start, r)?.permute((1, 0, 2))?;
        let scores = qc.matmul(&kc)?.reshape((heads, n, r))?;
        let scores = match &chunk.mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        if let Observe::Attention(range) = observe.what {
            // Observing plans have one chunk, which holds every row.
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
    let kr = k.narrow(0, range.start, r)?.permute((1, 2, 0))?;
    let scores = qg.matmul(&kr)?.reshape((heads, n, r))?;
    let mask = build_mask(
        ctx.query_pos,
        &ctx.key_pos[range.clone()],
        ctx.window,
        q.device(),
    )?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m)?,
        None => scores,
    };
    // A row that sees none of the range would be all -inf: give it zeros.
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
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
            let chunks = row_chunks(pos, window, false);
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
        assert!(row_chunks(&contiguous, Some(512), false).len() == 1000usize.div_ceil(QUERY_CHUNK));
        assert!(row_chunks(&scattered, None, false).len() == 800usize.div_ceil(QUERY_CHUNK));
        assert!(row_chunks(&[], Some(8), false).is_empty());
        let single = row_chunks(&scattered, Some(8), true);
        assert!(single.len() == 1 && single[0] == (0..800));
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
    fn mask_hides_future_and_out_of_window_keys() {
        let m = build_mask(&[3], &[0, 1, 2, 3, 4], Some(2), &Device::Cpu)
            .unwrap()
            .unwrap();
        let m = m.to_vec2::<f32>().unwrap();
        assert_eq!(m[0][2], 0.0);
        assert_eq!(m[0][3], 0.0);
        assert!(m[0][1].is_infinite() && m[0][4].is_infinite());
    }

    #[test]
    fn fully_visible_chunk_needs_no_mask() {
        let m = build_mask(&[9, 10], &[0, 1, 2], None, &Device::Cpu).unwrap();
        assert!(m.is_none());
    }
}
