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
    let mut out = vec![0f32; heads * head_dim];
    let out_addr = out.as_mut_ptr() as usize;
    // Heads in parallel on candle's spinning pool (the one the matrix-vector
    // products of the same step use): a lone thread over a long cache left
    // the other core waiting.
    candle_core::utils::barrier_pool().execute_chunked(heads, |range| {
        let mut scores = vec![0f32; keys.len()];
        for h in range {
            // SAFETY: `out` holds `heads * head_dim` values and each head
            // writes only its own `head_dim` of them.
            let out_h = unsafe {
                std::slice::from_raw_parts_mut((out_addr as *mut f32).add(h * head_dim), head_dim)
            };
            let head = Head {
                q: &q[h * head_dim..(h + 1) * head_dim],
                offset: (h / group) * head_dim,
                stride,
            };
            head.attend(k_rows, v_rows, &mut scores, out_h);
        }
    });
    Ok(Some(Tensor::from_vec(
        out,
        (1, heads * head_dim),
        &Device::Cpu,
    )?))
}

/// One query head against the key and value rows of its KV head.
struct Head<'a> {
    /// The head's query, `head_dim` values.
    q: &'a [f32],
    /// Where its KV head starts within a slot's row.
    offset: usize,
    /// Values per slot (KV heads × head_dim).
    stride: usize,
}

impl Head<'_> {
    /// Softmax attention over every row of `k_rows`/`v_rows` into `out`
    /// (zeroed, `head_dim` values); `scores` holds one value per row.
    fn attend(&self, k_rows: &[f32], v_rows: &[f32], scores: &mut [f32], out: &mut [f32]) {
        let (dim, offset) = (self.q.len(), self.offset);
        for (s, key) in scores.iter_mut().zip(k_rows.chunks_exact(self.stride)) {
            *s = dot(self.q, &key[offset..offset + dim]);
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        for (&p, value) in scores.iter().zip(v_rows.chunks_exact(self.stride)) {
            let weight = p / total;
            for (o, &x) in out.iter_mut().zip(&value[offset..offset + dim]) {
                *o += weight * x;
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
        let (heads, kv_heads, d, slots) = (4, 2, 20, 50);
        let q = Tensor::randn(0f32, 1.0, (heads, d), &Device::Cpu).unwrap();
        let k = Tensor::randn(0f32, 1.0, (slots, kv_heads, d), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (slots, kv_heads, d), &Device::Cpu).unwrap();
        let keys = 5..42;
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
        for h in 0..heads {
            let (kh, vh) = (head_rows(&k, h / 2), head_rows(&v, h / 2));
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
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "head {h}");
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
