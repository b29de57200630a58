//! Choosing the next token from logits: greedy, or temperature + top-k + top-p
//! with a per-request seeded generator (the same seed gives the same text).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Sampling parameters as the API accepts them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Seed of the generator (`None`: drawn at random).
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
        }
    }
}

/// A request's sampler: parameters plus its generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded from the parameters (or the OS when no seed is given).
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng }
    }

    /// The next token id and its log-probability under the sampling distribution.
    pub fn sample(&mut self, logits: &[f32]) -> (u32, f32) {
        if self.params.temperature <= 1e-5 {
            let best = argmax(logits);
            return (best as u32, log_softmax_at(logits, best, 1.0));
        }
        let t = self.params.temperature;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.params.top_k > 0 {
            order.truncate(self.params.top_k);
        }
        let max = logits[order[0]] / t;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] / t - max) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        // Nucleus: the smallest prefix whose mass reaches top_p.
        let mut keep = order.len();
        let mut mass = 0.0;
        for (n, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= self.params.top_p as f64 {
                keep = n + 1;
                break;
            }
        }
        let kept: f64 = weights[..keep].iter().sum();
        let mut r = self.rng.random::<f64>() * kept;
        let mut chosen = keep - 1;
        for (n, w) in weights[..keep].iter().enumerate() {
            if r < *w {
                chosen = n;
                break;
            }
            r -= w;
        }
        let id = order[chosen];
        (id as u32, (weights[chosen] / kept).ln() as f32)
    }
}

fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

fn log_softmax_at(logits: &[f32], i: usize, t: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| (((x - max) / t) as f64).exp()).sum();
    ((logits[i] - max) / t) - sum.ln() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
        }
    }

    #[test]
    fn greedy_takes_the_highest_logit_first_on_ties() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]).0, 1);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 1.0, 0, seed));
            (0..20).map(|_| s.sample(&logits).0).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut s = Sampler::new(params(1.5, 1.0, 1, 3));
        let best = argmax(&logits) as u32;
        assert!((0..20).all(|_| s.sample(&logits).0 == best));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds ~88% of the mass: with top_p 0.5 it is the only choice.
        let logits = [5.0, 3.0, 1.0, 0.0];
        let mut s = Sampler::new(params(1.0, 0.5, 0, 11));
        assert!((0..50).all(|_| s.sample(&logits).0 == 0));
    }
}
