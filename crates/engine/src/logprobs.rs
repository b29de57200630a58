//! Log-probabilities of generated tokens, as OpenAI's `logprobs` reports
//! them: the chosen token's and the most likely alternatives', from the
//! model's own log-softmax at that step (before temperature, penalties and
//! biases, so that they say what the model thinks, not what was asked of it).
//!
//! Only requests that ask pay for it: a pass for the log-sum-exp and a
//! partial ranking for the alternatives.

use prophetkv_model::TextTokenizer;

/// Most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A token with its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// Its id.
    pub id: u32,
    /// Its text (invalid UTF-8 of a partial character replaced).
    pub token: String,
    /// Its bytes: a byte token's one byte, else the text's.
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
}

/// A generated token's log-probability and the top alternatives at its step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogprobs {
    /// The generated token.
    pub chosen: TokenLogprob,
    /// The most likely tokens at that step, most likely first.
    pub top: Vec<TokenLogprob>,
}

/// `chosen`'s log-probability under `logits` and the `top` most likely ids
/// with theirs, most likely first (lower id first on ties).
pub fn log_softmax_at(logits: &[f32], chosen: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    let logprob = |id: usize| (logits[id] as f64 - log_z) as f32;
    let chosen_logprob = logits
        .get(chosen as usize)
        .map_or(f32::NEG_INFINITY, |_| logprob(chosen as usize));
    let ranked = crate::sampling::top(logits, top.min(logits.len()));
    let alternatives = ranked.into_iter().map(|i| (i as u32, logprob(i))).collect();
    (chosen_logprob, alternatives)
}

/// The step's log-probabilities with token texts.
pub(crate) fn step_logprobs(
    tokenizer: &TextTokenizer,
    logits: &[f32],
    chosen: u32,
    top: usize,
) -> StepLogprobs {
    let (logprob, alternatives) = log_softmax_at(logits, chosen, top);
    let entry = |id: u32, logprob: f32| {
        let bytes = tokenizer.token_bytes(id);
        TokenLogprob {
            id,
            token: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logprob,
        }
    };
    StepLogprobs {
        chosen: entry(chosen, logprob),
        top: alternatives
            .into_iter()
            .map(|(id, lp)| entry(id, lp))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_are_a_normalised_log_softmax() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let (chosen, top) = log_softmax_at(&logits, 2, 5);
        let total: f64 = top.iter().map(|&(_, lp)| (lp as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        assert!((chosen as f64 - (-2.0 - z.ln())).abs() < 1e-6);
        let ids: Vec<u32> = top.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, [1, 3, 0, 4, 2]);
    }

    #[test]
    fn asking_for_no_alternatives_gives_only_the_chosen_token() {
        let (chosen, top) = log_softmax_at(&[0.0, 0.0], 1, 0);
        assert!((chosen - 0.5f32.ln()).abs() < 1e-6);
        assert!(top.is_empty());
    }
}
