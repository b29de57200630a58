//! How far one set of cached rows lies from another.

use crate::Result;
use candle_core::{DType, Tensor};

/// Per row, `|Δk| / mean |k| + |Δv| / mean |v|` between `reference` and
/// `other` keys and values (each `(rows, kv_heads, head_dim)`), norms over
/// all heads, means over the reference's rows: a deviation on the same
/// scale in every layer.
pub(crate) fn kv_gaps(
    reference: (&Tensor, &Tensor),
    other: (&Tensor, &Tensor),
) -> Result<Vec<f32>> {
    let dk = relative_gaps(reference.0, other.0)?;
    let dv = relative_gaps(reference.1, other.1)?;
    Ok(dk.iter().zip(&dv).map(|(k, v)| k + v).collect())
}

fn relative_gaps(reference: &Tensor, other: &Tensor) -> Result<Vec<f32>> {
    let reference = reference.to_dtype(DType::F32)?.flatten_from(1)?;
    let other = other.to_dtype(DType::F32)?.flatten_from(1)?;
    let mean_norm = reference
        .sqr()?
        .sum(1)?
        .sqrt()?
        .mean_all()?
        .to_scalar::<f32>()?;
    let gaps: Vec<f32> = (other - &reference)?.sqr()?.sum(1)?.sqrt()?.to_vec1()?;
    Ok(gaps.into_iter().map(|g| g / mean_norm.max(1e-12)).collect())
}
