//! Greedy generation: prefill the prompt, then decode one token at a time.

use candle_core::{DType, Tensor};

use crate::kv::Kv;
use crate::model::Model;
use crate::{ModelError, Result};

/// Result of [`generate_greedy`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt as given.
    pub prompt_ids: Vec<u32>,
    /// Generated ids (the stop token included when one was produced).
    pub output_ids: Vec<u32>,
    /// The `top` highest logits at the last prompt position, descending.
    pub first_step_top: Vec<(u32, f32)>,
}

/// The `k` largest entries of `logits` as `(id, logit)`, descending; ties go to the lower id.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, logits[i as usize])).collect()
}

fn row(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Greedy decoding of up to `max_tokens` after `prompt_ids`, stopping at any
/// id in `eos` or at the model's context limit.
pub fn generate_greedy(
    model: &Model,
    prompt_ids: &[u32],
    max_tokens: usize,
    eos: &[u32],
    top: usize,
) -> Result<Generation> {
    let max = model.config().max_position;
    if prompt_ids.len() > max {
        return Err(ModelError::ContextOverflow {
            len: prompt_ids.len(),
            max,
        });
    }
    let positions: Vec<u32> = (0..prompt_ids.len() as u32).collect();
    let (mut kv, last) = model.prefill(prompt_ids, &positions)?;
    let logits = model.logits(&last)?;
    let c = continue_greedy(model, &mut kv, &logits, max_tokens, eos, top)?;
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        output_ids: c.output_ids,
        first_step_top: c.first_step_top,
    })
}

/// What [`continue_greedy`] produced.
#[derive(Debug, Clone)]
pub struct Continuation {
    /// Generated ids (the stop token included when one was produced).
    pub output_ids: Vec<u32>,
    /// The `top` highest first-step logits, descending.
    pub first_step_top: Vec<(u32, f32)>,
}

/// Greedy decoding from a filled cache whose next-token logits are `logits`
/// `(1, vocab)`.
pub fn continue_greedy(
    model: &Model,
    kv: &mut Kv,
    logits: &Tensor,
    max_tokens: usize,
    eos: &[u32],
    top: usize,
) -> Result<Continuation> {
    let max = model.config().max_position;
    let logits = row(logits)?;
    let first_step_top = top_k(&logits, top);
    let mut output_ids = Vec::new();
    let mut next = top_k(&logits, 1).first().map(|t| t.0);
    while let Some(token) = next {
        if output_ids.len() >= max_tokens {
            break;
        }
        output_ids.push(token);
        if eos.contains(&token) || kv.next_position() as usize >= max {
            break;
        }
        let logits = row(&model.decode(&mut [&mut *kv], &[token])?)?;
        next = top_k(&logits, 1).first().map(|t| t.0);
    }
    Ok(Continuation {
        output_ids,
        first_step_top,
    })
}
