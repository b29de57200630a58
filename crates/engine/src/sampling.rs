//! Choosing the next token from logits: OpenAI's adjustments first
//! (`logit_bias`, presence and frequency penalties over the tokens generated
//! so far), then greedy, or temperature + top-k + top-p with a per-request
//! seeded generator (the same seed gives the same text).

use std::collections::HashMap;

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
    /// Subtracted once from the logit of every token generated before.
    #[serde(default)]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated before.
    #[serde(default)]
    pub frequency_penalty: f32,
    /// Added to the logits of these token ids at every step.
    #[serde(default)]
    pub logit_bias: Vec<(u32, f32)>,
    /// Report each generated token's log-probability with this many
    /// alternatives (`None`: no log-probabilities).
    #[serde(default)]
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            logprobs: None,
        }
    }
}

impl SamplingParams {
    fn penalises(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    fn adjusts(&self) -> bool {
        self.penalises() || !self.logit_bias.is_empty()
    }
}

/// Temperatures at or below this are greedy.
const GREEDY_TEMPERATURE: f32 = 1e-5;

/// Buckets that tokens fall into by scaled logit below the highest, 1/16 nat
/// wide (the last one takes everything past 64 nats), so that cutting a
/// nucleus sorts only the buckets it spans.
const NUCLEUS_BUCKETS: usize = 1024;
const BUCKETS_PER_NAT: f32 = 16.0;

/// A request's sampler: parameters plus its generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token was generated (kept only under a penalty).
    counts: HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler seeded from the parameters (or the OS when no seed is given).
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            counts: HashMap::new(),
        }
    }

    /// The parameters it samples with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token id, from the model's `logits` for this step. Without
    /// penalties or biases the logits are used as they are (no copy).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.adjusts() {
            return self.sample_mut(&mut logits.to_vec());
        }
        // No penalty: nothing to count.
        self.choose(logits)
    }

    /// The next token id from logits the caller lets it change: penalties
    /// and biases are applied to them in place (a caller that already holds
    /// a copy, e.g. a masked one, saves another).
    pub fn sample_mut(&mut self, logits: &mut [f32]) -> u32 {
        self.adjust(logits);
        let token = self.choose(logits);
        if self.params.penalises() {
            *self.counts.entry(token).or_default() += 1;
        }
        token
    }

    /// OpenAI's definition: `logit[j] + bias[j] - count[j] * frequency -
    /// (count[j] > 0) * presence`, with `count` over the tokens generated so
    /// far (not the prompt). Ids outside the vocabulary are skipped (the
    /// engine refuses them before a request runs).
    pub fn adjust(&self, logits: &mut [f32]) {
        for &(id, bias) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        let SamplingParams {
            presence_penalty,
            frequency_penalty,
            ..
        } = self.params;
        for (&id, &count) in &self.counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= count as f32 * frequency_penalty + presence_penalty;
            }
        }
    }

    /// The next token id from adjusted logits. Costs a pass over the logits (greedy, or every
    /// token a candidate), a partial ranking (top-k) or a sort of the
    /// nucleus alone (top-p), never a sort of the whole vocabulary unless the
    /// nucleus spans it.
    fn choose(&mut self, logits: &[f32]) -> u32 {
        let SamplingParams {
            temperature: t,
            top_p,
            top_k,
            ..
        } = self.params;
        let vocab = logits.len();
        if t <= GREEDY_TEMPERATURE || vocab == 0 {
            return argmax(logits) as u32;
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) / t;
        let scaled = |i: usize| logits[i] / t - max;
        let weight = |i: usize| (scaled(i) as f64).exp();
        let limit = if top_k == 0 { vocab } else { top_k.min(vocab) };
        let ranked = if limit < vocab {
            let mut ranked = top(logits, limit);
            if top_p < 1.0 {
                let total: f64 = ranked.iter().map(|&i| weight(i)).sum();
                let len = prefix_reaching(&ranked, |i| weight(i) / total, top_p);
                ranked.truncate(len.unwrap_or(limit));
            }
            ranked
        } else if top_p < 1.0 {
            nucleus(logits, &scaled, &weight, top_p)
        } else {
            let weights: Vec<f64> = (0..vocab).map(weight).collect();
            return self.draw(&weights) as u32;
        };
        let weights: Vec<f64> = ranked.iter().map(|&i| weight(i)).collect();
        ranked[self.draw(&weights)] as u32
    }

    /// An index drawn with probability proportional to its weight.
    fn draw(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (k, w) in weights.iter().enumerate() {
            if r < *w {
                return k;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

/// Token ids by descending logit, the lower id first on ties.
fn by_logit(logits: &[f32]) -> impl Fn(&usize, &usize) -> std::cmp::Ordering + '_ {
    move |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
}

/// The `n` highest-ranked token ids, in rank order.
pub(crate) fn top(logits: &[f32], n: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    let rank = by_logit(logits);
    if n < ids.len() {
        ids.select_nth_unstable_by(n, &rank);
        ids.truncate(n);
    }
    ids.sort_unstable_by(rank);
    ids
}

/// The shortest rank prefix of the whole vocabulary whose probability
/// reaches `top_p`, in rank order. Bucketing by `scaled` logit (at most 0,
/// monotone in the logit) finds the buckets the nucleus spans; only their
/// tokens, a rank prefix, are sorted.
fn nucleus(
    logits: &[f32],
    scaled: &dyn Fn(usize) -> f32,
    weight: &dyn Fn(usize) -> f64,
    top_p: f32,
) -> Vec<usize> {
    let bucket = |i: usize| ((-scaled(i) * BUCKETS_PER_NAT) as usize).min(NUCLEUS_BUCKETS - 1);
    let mut mass = vec![0f64; NUCLEUS_BUCKETS];
    let mut total = 0.0;
    for i in 0..logits.len() {
        let w = weight(i);
        mass[bucket(i)] += w;
        total += w;
    }
    let mut sum = 0.0;
    let last = mass
        .iter()
        .position(|m| {
            sum += m;
            sum / total >= top_p as f64
        })
        .unwrap_or(NUCLEUS_BUCKETS - 1);
    let mut ranked: Vec<usize> = (0..logits.len()).filter(|&i| bucket(i) <= last).collect();
    ranked.sort_unstable_by(by_logit(logits));
    let probability = |i: usize| weight(i) / total;
    match prefix_reaching(&ranked, probability, top_p) {
        Some(len) => ranked.truncate(len),
        // Sums in another order fell short by a rounding: rank everything.
        None if ranked.len() < logits.len() => {
            ranked = top(logits, logits.len());
            let len = prefix_reaching(&ranked, probability, top_p);
            ranked.truncate(len.unwrap_or(logits.len()));
        }
        None => {}
    }
    ranked
}

/// Length of the shortest prefix of `ranked` whose probabilities sum to at
/// least `mass`, if it has one.
fn prefix_reaching(
    ranked: &[usize],
    probability: impl Fn(usize) -> f64,
    mass: f32,
) -> Option<usize> {
    let mut sum = 0.0;
    for (k, &i) in ranked.iter().enumerate() {
        sum += probability(i);
        if sum >= mass as f64 {
            return Some(k + 1);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_takes_the_highest_logit_first_on_ties() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 1.0, 0, seed));
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut s = Sampler::new(params(1.5, 1.0, 1, 3));
        let best = argmax(&logits) as u32;
        assert!((0..20).all(|_| s.sample(&logits) == best));
    }

    #[test]
    fn penalties_and_biases_follow_openais_definition() {
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.3,
            logit_bias: vec![(3, -1.0)],
            ..SamplingParams::default()
        });
        // Greedy: 0 (5 > 4), 0 again (5 - 0.8 > 4), then 1 (5 - 1.1 < 4).
        let logits = [5.0f32, 4.0, 0.0, 2.0];
        assert_eq!(s.sample(&logits), 0);
        assert_eq!(s.sample(&logits), 0);
        let mut adjusted = logits.to_vec();
        s.adjust(&mut adjusted);
        assert_eq!(adjusted, [5.0 - (2.0 * 0.3 + 0.5), 4.0, 0.0, 1.0]);
        assert_eq!(s.sample(&logits), 1);
        let mut adjusted = logits.to_vec();
        s.adjust(&mut adjusted);
        assert_eq!(
            adjusted,
            [5.0 - (2.0 * 0.3 + 0.5), 4.0 - (0.3 + 0.5), 0.0, 1.0]
        );
    }

    #[test]
    fn without_adjustments_no_counts_are_kept_and_a_bias_alone_shifts_the_choice() {
        let mut s = Sampler::new(SamplingParams::default());
        s.sample(&[1.0, 0.0]);
        assert!(s.counts.is_empty());
        let mut s = Sampler::new(SamplingParams {
            logit_bias: vec![(1, 100.0)],
            ..SamplingParams::default()
        });
        assert!((0..5).all(|_| s.sample(&[50.0, 0.0]) == 1));
        assert!(s.counts.is_empty());
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds ~88% of the mass: with top_p 0.5 it is the only choice.
        let logits = [5.0, 3.0, 1.0, 0.0];
        let mut s = Sampler::new(params(1.0, 0.5, 0, 11));
        assert!((0..50).all(|_| s.sample(&logits) == 0));
    }

    /// The sampler as it was: the whole vocabulary sorted for every sampled
    /// token, and a log-probability (a log-sum-exp over it) for a greedy one.
    fn sample_by_full_sort(params: &SamplingParams, rng: &mut StdRng, logits: &[f32]) -> u32 {
        let t = params.temperature;
        if t <= GREEDY_TEMPERATURE {
            let best = argmax(logits);
            let max = logits[best];
            let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
            std::hint::black_box(sum.ln());
            return best as u32;
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_unstable_by(by_logit(logits));
        if params.top_k > 0 {
            order.truncate(params.top_k);
        }
        let max = logits[order[0]] / t;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] / t - max) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut keep = order.len();
        let mut mass = 0.0;
        for (n, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= params.top_p as f64 {
                keep = n + 1;
                break;
            }
        }
        let kept: f64 = weights[..keep].iter().sum();
        let mut r = rng.random::<f64>() * kept;
        for (n, w) in weights[..keep].iter().enumerate() {
            if r < *w {
                return order[n] as u32;
            }
            r -= w;
        }
        order[keep - 1] as u32
    }

    #[test]
    fn top_k_and_top_p_draw_what_a_full_sort_draws() {
        // A flat tail, so that a 0.95 nucleus holds hundreds of tokens and the
        // ranking has to grow; ties included.
        let logits: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 / 400.0)
            .collect();
        for (top_p, top_k) in [(0.95, 0), (0.5, 0), (0.9, 40), (1.0, 40), (0.99, 3000)] {
            for seed in 0..40 {
                let p = params(0.8, top_p, top_k, seed);
                let mut rng = StdRng::seed_from_u64(seed);
                let want: Vec<u32> = (0..5)
                    .map(|_| sample_by_full_sort(&p, &mut rng, &logits))
                    .collect();
                let mut s = Sampler::new(p);
                let got: Vec<u32> = (0..5).map(|_| s.sample(&logits)).collect();
                assert_eq!(got, want, "top_p {top_p} top_k {top_k} seed {seed}");
            }
        }
    }

    #[test]
    fn without_top_k_or_top_p_tokens_come_at_their_softmax_frequency() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let t = 0.7;
        let weights: Vec<f64> = logits.iter().map(|&l| ((l / t) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut s = Sampler::new(params(t, 1.0, 0, 5));
        let draws = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..draws {
            counts[s.sample(&logits) as usize] += 1;
        }
        for (count, w) in counts.iter().zip(&weights) {
            let share = *count as f64 / draws as f64;
            assert!((share - w / total).abs() < 0.01, "{counts:?}");
        }
    }

    /// A measurement, not a check: one token from a Gemma-sized vocabulary
    /// (262,144 logits spread like a language model's) for each kind of
    /// sampling, against the full sort it replaced.
    /// `cargo test --release -p prophetkv-engine sampling_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing, run by hand"]
    fn sampling_cost_per_token() {
        let mut rng = StdRng::seed_from_u64(1);
        let logits: Vec<f32> = (0..262_144)
            .map(|_| {
                let u: f32 = rng.random();
                -12.0 * u * u + 10.0
            })
            .collect();
        let time = |run: &mut dyn FnMut()| {
            let start = std::time::Instant::now();
            for _ in 0..20 {
                run();
            }
            start.elapsed().as_secs_f64() * 1e3 / 20.0
        };
        for (temperature, top_p, top_k) in
            [(0.0, 1.0, 0), (1.0, 1.0, 0), (1.0, 0.95, 0), (0.7, 0.9, 40)]
        {
            let p = params(temperature, top_p, top_k, 3);
            let mut s = Sampler::new(p.clone());
            let now = time(&mut || {
                std::hint::black_box(s.sample(&logits));
            });
            let mut rng = StdRng::seed_from_u64(3);
            let before = time(&mut || {
                std::hint::black_box(sample_by_full_sort(&p, &mut rng, &logits));
            });
            println!(
                "t {temperature} top_p {top_p} top_k {top_k}: {now:.2} ms (before: {before:.2} ms)"
            );
        }
    }
}
