//! Attention of one query row over contiguous CPU keys, without GEMMs.
//!
//! A decode step attends one row per sequence. As GEMMs, its `q·K` and
//! `p·V` are 4-row products against strided views of the cache, and packing
//! those views cost more than the arithmetic (16% of a decode step on the
//! default model). Here each head reads its keys and values once, in place.

use candle_core::{Device, Storage, Tensor};

use crate::Result;

/// Lanes of the dot-product accumulators: independent sums the compiler
/// turns into one SIMD register.
const LANES: usize = 16;

/// `q` `(heads, head_dim)` (rotated, scaled) over the key slots `keys` of
/// `k`, `v` `(slots, kv_heads, head_dim)`, every key visible; `(1, heads *
/// head_dim)`. `None` when the tensors are not contiguous f32 on the CPU.
pub(crate) fn attend_one_row(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    keys: std::ops::Range<usize>,
) -> Result<Option<Tensor>> {
    let (heads, head_dim) = q.dims2()?;
    let (slots, kv_heads, k_dim) = k.dims3()?;
    if k_dim != head_dim || v.dims() != k.dims() || keys.end > slots || heads % kv_heads != 0 {
        return Err(crate::ModelError::input(format!(
            "one-row attention: q {:?}, k {:?}, v {:?}, keys {keys:?}",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if keys.is_empty() || !q.device().is_cpu() {
        return Ok(None);
    }
    let q = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let (k_guard, k_layout) = k.storage_and_layout();
    let (v_guard, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_guard, &*v_guard) else {
        return Ok(None);
    };
    let (Some((k0, _)), Some((v0, _))) =
        (k_layout.contiguous_offsets(), v_layout.contiguous_offsets())
    else {
        return Ok(None);
    };
    let (Ok(k_all), Ok(v_all)) = (k_cpu.as_slice::<f32>(), v_cpu.as_slice::<f32>()) else {
        return Ok(None);
    };
    let stride = kv_heads * head_dim;
    let span = keys.start * stride..keys.end * stride;
    let (k_rows, v_rows) = (&k_all[k0..][span.clone()], &v_all[v0..][span]);
    let group = heads / kv_heads;
    // Tasks: each KV head's keys cut into parts, so that both cores have
    // work when there are fewer KV heads than cores (Gemma 3 270M has one).
    // A task reads each of its keys and values once for all the query heads
    // that share them, and leaves a partial softmax that the merge combines.
    let parts = (2 * candle_core::utils::get_num_threads())
        .div_ceil(kv_heads)
        .clamp(1, keys.len().div_ceil(MIN_KEYS_PER_PART).max(1));
    let per_part = keys.len().div_ceil(parts);
    let tasks = kv_heads * parts;
    let empty = Partial {
        max: f32::NEG_INFINITY,
        total: 0.0,
        out: vec![0f32; head_dim],
    };
    let mut partials = vec![empty; tasks * group];
    let partials_addr = partials.as_mut_ptr() as usize;
    // On candle's spinning pool (the one the matrix-vector products of the
    // same step use): a lone thread over a long cache left the other core
    // waiting.
    candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
        let mut scores = vec![0f32; group * per_part];
        for t in range {
            let (kv_head, part) = (t / parts, t % parts);
            let rows = (part * per_part).min(keys.len())..((part + 1) * per_part).min(keys.len());
            // SAFETY: `partials` holds `tasks * group` entries and each task
            // writes only its own `group` of them.
            let mine = unsafe {
                std::slice::from_raw_parts_mut(
                    (partials_addr as *mut Partial).add(t * group),
                    group,
                )
            };
            let heads = KvHead {
                q: &q[kv_head * group * head_dim..(kv_head + 1) * group * head_dim],
                offset: kv_head * head_dim,
                stride,
            };
            let span = rows.start * stride..rows.end * stride;
            heads.attend(&k_rows[span.clone()], &v_rows[span], &mut scores, mine);
        }
    });
    let mut out = vec![0f32; heads * head_dim];
    for (h, out_h) in out.chunks_exact_mut(head_dim).enumerate() {
        let (kv_head, g) = (h / group, h % group);
        let parts_of_h = (0..parts)
            .map(|part| &partials[(kv_head * parts + part) * group + g])
            .filter(|p| p.total > 0.0);
        let max = parts_of_h
            .clone()
            .fold(f32::NEG_INFINITY, |m, p| m.max(p.max));
        let mut total = 0f32;
        for p in parts_of_h {
            let w = (p.max - max).exp();
            total += w * p.total;
            out_h.iter_mut().zip(&p.out).for_each(|(o, &x)| *o += w * x);
        }
        out_h.iter_mut().for_each(|o| *o /= total);
    }
    Ok(Some(Tensor::from_vec(
        out,
        (1, heads * head_dim),
        &Device::Cpu,
    )?))
}

/// Fewest keys a part takes: below it, a task costs more than it saves.
const MIN_KEYS_PER_PART: usize = 64;

/// One query head's softmax over some of the keys, before normalising: the
/// highest score, the sum of `exp(score - max)` and the values weighted by it.
#[derive(Debug, Clone)]
struct Partial {
    max: f32,
    total: f32,
    out: Vec<f32>,
}

/// The query heads that share one KV head, against its key and value rows.
struct KvHead<'a> {
    /// The heads' queries, `head_dim` values each, one after the other.
    q: &'a [f32],
    /// Where the KV head starts within a slot's row.
    offset: usize,
    /// Values per slot (KV heads × head_dim).
    stride: usize,
}

impl KvHead<'_> {
    /// Each query head's [`Partial`] over every row of `k_rows`/`v_rows`
    /// (each row read once for all heads); `scores` has room for a score
    /// per head and row.
    fn attend(&self, k_rows: &[f32], v_rows: &[f32], scores: &mut [f32], out: &mut [Partial]) {
        let dim = self.q.len() / out.len();
        let rows = k_rows.len() / self.stride;
        let scores = &mut scores[..out.len() * rows];
        for (j, key) in k_rows.chunks_exact(self.stride).enumerate() {
            let key = &key[self.offset..self.offset + dim];
            for (g, q) in self.q.chunks_exact(dim).enumerate() {
                scores[g * rows + j] = dot(q, key);
            }
        }
        for (p, s) in out.iter_mut().zip(scores.chunks_exact_mut(rows.max(1))) {
            p.max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            p.total = 0.0;
            for x in s.iter_mut() {
                *x = (*x - p.max).exp();
                p.total += *x;
            }
        }
        for (j, value) in v_rows.chunks_exact(self.stride).enumerate() {
            let value = &value[self.offset..self.offset + dim];
            for (g, p) in out.iter_mut().enumerate() {
                let weight = scores[g * rows + j];
                for (o, &x) in p.out.iter_mut().zip(value) {
                    *o += weight * x;
                }
            }
        }
    }
}

/// `a · b` over [`LANES`] independent partial sums.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_blocks
        .remainder()
        .iter()
        .zip(b_blocks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_blocks.zip(b_blocks) {
        for ((acc, x), y) in acc.iter_mut().zip(x).zip(y) {
            *acc += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_equals_softmax_attention_with_grouped_heads() {
        matches_softmax_attention(4, 2, 20, 50, 5..42);
    }

    #[test]
    fn long_caches_split_into_parts_merge_to_one_softmax() {
        // Enough keys for several parts per KV head: one KV head (as Gemma
        // 3 270M), then three shared by nine query heads (as SmolLM2).
        matches_softmax_attention(4, 1, 16, 700, 3..690);
        matches_softmax_attention(9, 3, 8, 300, 0..300);
    }

    /// [`attend_one_row`] against candle's softmax attention, head by head.
    fn matches_softmax_attention(
        heads: usize,
        kv_heads: usize,
        d: usize,
        slots: usize,
        keys: std::ops::Range<usize>,
    ) {
        let q = Tensor::randn(0f32, 1.0, (heads, d), &Device::Cpu).unwrap();
        let k = Tensor::randn(0f32, 1.0, (slots, kv_heads, d), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (slots, kv_heads, d), &Device::Cpu).unwrap();
        let got = attend_one_row(&q, &k, &v, keys.clone()).unwrap().unwrap();
        let got = got.reshape((heads, d)).unwrap();
        // The `(keys, head_dim)` rows of KV head `kv_head` in the attended slots.
        let head_rows = |t: &Tensor, kv_head: usize| {
            t.narrow(0, keys.start, keys.len())
                .unwrap()
                .narrow(1, kv_head, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
        };
        let group = heads / kv_heads;
        for h in 0..heads {
            let (kh, vh) = (head_rows(&k, h / group), head_rows(&v, h / group));
            let qh = q.narrow(0, h, 1).unwrap();
            let p =
                candle_nn::ops::softmax_last_dim(&qh.matmul(&kh.t().unwrap()).unwrap()).unwrap();
            let want = p.matmul(&vh).unwrap();
            let d = (got.narrow(0, h, 1).unwrap() - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(
                d.to_scalar::<f32>().unwrap() < 1e-5,
                "{heads} heads on {kv_heads}: head {h}"
            );
        }
    }

    #[test]
    fn strided_or_empty_inputs_fall_back_and_mismatched_shapes_are_errors() {
        let zeros =
            |shape: &[usize]| Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = zeros(&[2, 3]);
        // (8, 2, 3) as a strided view of (8, 3, 2).
        let strided = zeros(&[8, 3, 2]).transpose(1, 2).unwrap();
        assert!(attend_one_row(&q, &strided, &strided, 0..3)
            .unwrap()
            .is_none());
        assert!(
            attend_one_row(&q, &strided, &strided, 0..9).is_err(),
            "keys past the cache"
        );
        let k = zeros(&[3, 1, 3]);
        assert!(attend_one_row(&q, &k, &k, 1..1).unwrap().is_none());
        let wide = zeros(&[3, 1, 8]);
        assert!(
            attend_one_row(&q, &wide, &wide, 0..3).is_err(),
            "head widths differ"
        );
    }
}
