//! `prophetkv bench attention`: attention's two GPU paths side by side on
//! random inputs of real models' head layouts. The flash kernel (scores on
//! chip) and the chunked path (scores written out) are each compared with
//! f32 attention of the same rounded inputs, and timed.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use prophetkv_model::attention_by_position;
use serde::Serialize;

use crate::{EvalError, Result};

/// One attention problem: a head layout, the rows' and keys' positions.
#[derive(Debug, Clone)]
pub struct AttentionCase {
    /// What it stands for.
    pub name: String,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Position of each query row.
    pub query_pos: Vec<u32>,
    /// Position of each key slot.
    pub key_pos: Vec<u32>,
    /// Sliding window, if any.
    pub window: Option<usize>,
}

/// Head layouts of the models the project serves: (name, heads, kv heads,
/// head size, sliding window).
const LAYOUTS: [(&str, usize, usize, usize, Option<usize>); 4] = [
    ("llama-3.1-8b", 32, 8, 128, None),
    ("gemma-3-270m local", 4, 1, 256, Some(512)),
    ("gemma-3-270m global", 4, 1, 256, None),
    ("smollm2-135m", 9, 3, 64, None),
];

impl AttentionCase {
    fn new(layout: usize, what: &str, query_pos: Vec<u32>, key_pos: Vec<u32>) -> Self {
        let (model, heads, kv_heads, head_dim, window) = LAYOUTS[layout];
        Self {
            name: format!("{model}: {what}"),
            heads,
            kv_heads,
            head_dim,
            query_pos,
            key_pos,
            window,
        }
    }
}

/// The checked cases: prefills (causal, windowed, a length that fills no
/// tile), scattered rows as Stage II recomputes them, a decode row, keys out
/// of position order; then a prefill of `long` tokens for timing.
pub fn standard_cases(long: usize) -> Vec<AttentionCase> {
    let upto = |n: u32| (0..n).collect::<Vec<u32>>();
    let every_fifth = |n: u32| (0..n).step_by(5).collect::<Vec<u32>>();
    // Slots hold positions in blocks of 64, the blocks in reverse order.
    let shuffled: Vec<u32> = (0..64u32)
        .rev()
        .flat_map(|b| b * 64..(b + 1) * 64)
        .collect();
    let mut cases = vec![
        AttentionCase::new(0, "prefill 2048", upto(2048), upto(2048)),
        AttentionCase::new(1, "prefill 2048", upto(2048), upto(2048)),
        AttentionCase::new(2, "prefill 1000", upto(1000), upto(1000)),
        AttentionCase::new(3, "prefill 777", upto(777), upto(777)),
        AttentionCase::new(0, "every 5th row of 4096", every_fifth(4096), upto(4096)),
        AttentionCase::new(1, "every 5th row of 4096", every_fifth(4096), upto(4096)),
        AttentionCase::new(3, "every 5th row of 4096", every_fifth(4096), upto(4096)),
        AttentionCase::new(0, "decode at 4096", vec![4096], upto(4097)),
        AttentionCase::new(1, "decode at 4096", vec![4096], upto(4097)),
        AttentionCase::new(0, "keys out of order", every_fifth(4096), shuffled),
    ];
    if long > 0 {
        let n = long as u32;
        cases.push(AttentionCase::new(
            0,
            &format!("prefill {long}"),
            upto(n),
            upto(n),
        ));
        cases.push(AttentionCase::new(
            1,
            &format!("prefill {long}"),
            upto(n),
            upto(n),
        ));
    }
    cases
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct AttentionRow {
    /// The case.
    pub case: String,
    /// Query rows and key slots.
    pub rows: usize,
    /// Key slots.
    pub keys: usize,
    /// Largest |difference| from f32 attention, flash kernel.
    pub flash_error: f32,
    /// Largest |difference| from f32 attention, chunked path.
    pub chunked_error: f32,
    /// Median time of the flash kernel, ms.
    pub flash_ms: f64,
    /// Median time of the chunked path, ms.
    pub chunked_ms: f64,
    /// Whether the flash kernel is at least as close to f32 as allowed:
    /// twice the chunked path's error, and never looser than 1e-2.
    pub holds: bool,
}

/// Runs every case in `dtype` on `device`, `runs` timed calls per path.
pub fn bench_attention(
    cases: &[AttentionCase],
    dtype: DType,
    device: &Device,
    runs: usize,
) -> Result<Vec<AttentionRow>> {
    if runs == 0 {
        return Err(EvalError::Invalid("need at least one timed run".into()));
    }
    let mut rows = Vec::with_capacity(cases.len());
    for case in cases {
        let (n, r, d) = (case.query_pos.len(), case.key_pos.len(), case.head_dim);
        // Scores of spread ~2, as scaled queries give.
        let q = (Tensor::randn(0f32, 1.0, (n, case.heads, d), device)?
            * (2.0 / (d as f64).sqrt()))?
        .to_dtype(dtype)?;
        let k = Tensor::randn(0f32, 1.0, (r, case.kv_heads, d), device)?.to_dtype(dtype)?;
        let v = Tensor::randn(0f32, 1.0, (r, case.kv_heads, d), device)?.to_dtype(dtype)?;
        let run = |q: &Tensor, k: &Tensor, v: &Tensor, materialized| {
            attention_by_position(
                q,
                k,
                v,
                &case.query_pos,
                &case.key_pos,
                case.window,
                materialized,
            )
        };
        let f32s = |t: &Tensor| t.to_dtype(DType::F32);
        let reference = run(&f32s(&q)?, &f32s(&k)?, &f32s(&v)?, true)?;
        let error = |out: &Tensor| -> Result<f32> {
            Ok((out.to_dtype(DType::F32)? - &reference)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?)
        };
        let time = |materialized| -> Result<(Tensor, f64)> {
            let out = run(&q, &k, &v, materialized)?;
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                device.synchronize()?;
                let started = Instant::now();
                run(&q, &k, &v, materialized)?;
                device.synchronize()?;
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            Ok((out, times[times.len() / 2]))
        };
        let (flash, flash_ms) = time(false)?;
        let (chunked, chunked_ms) = time(true)?;
        let (flash_error, chunked_error) = (error(&flash)?, error(&chunked)?);
        rows.push(AttentionRow {
            case: case.name.clone(),
            rows: n,
            keys: r,
            flash_error,
            chunked_error,
            flash_ms,
            chunked_ms,
            holds: flash_error.is_finite() && flash_error <= (2.0 * chunked_error).max(1e-2),
        });
    }
    Ok(rows)
}

/// The rows as a markdown table.
pub fn attention_markdown(rows: &[AttentionRow]) -> String {
    let mut out = String::from(
        "| case | rows | keys | flash err | chunked err | flash ms | chunked ms | speedup | holds |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2e} | {:.2e} | {:.3} | {:.3} | {:.2}× | {} |\n",
            r.case,
            r.rows,
            r.keys,
            r.flash_error,
            r.chunked_error,
            r.flash_ms,
            r.chunked_ms,
            r.chunked_ms / r.flash_ms.max(1e-9),
            if r.holds { "yes" } else { "NO" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_the_cpu_both_paths_are_the_chunked_one_and_match_f32() {
        let cases = vec![
            AttentionCase::new(3, "prefill 40", (0..40).collect(), (0..40).collect()),
            AttentionCase::new(1, "rows 3, 9", vec![3, 9], (0..12).collect()),
        ];
        let rows = bench_attention(&cases, DType::F32, &Device::Cpu, 1).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(
                r.holds && r.flash_error < 1e-5 && r.chunked_error < 1e-5,
                "{r:?}"
            );
        }
        assert!(attention_markdown(&rows).contains("smollm2-135m: prefill 40"));
    }

    #[test]
    fn standard_cases_keep_positions_in_range() {
        for c in standard_cases(64) {
            assert!(c.heads % c.kv_heads == 0, "{}", c.name);
            let mut sorted = c.key_pos.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), c.key_pos.len(), "{}: distinct slots", c.name);
            let last_key = *sorted.last().unwrap();
            assert!(c.query_pos.iter().all(|&p| p <= last_key), "{}", c.name);
        }
    }
}
