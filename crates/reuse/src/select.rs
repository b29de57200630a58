//! Pure selection policies: budgets, stable top-k, layer fusion, blocks.
//!
//! Invariants: selections are deterministic, sorted by slot, duplicate-free
//! and never larger than the budget; ties go to the lower slot.

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;

use crate::strategy::Fusion;

/// `floor(ratio * eligible)`, robust to `ratio * eligible` landing just below an integer.
pub fn budget(ratio: f64, eligible: usize) -> usize {
    let exact = ratio * eligible as f64;
    let k = (exact + 1e-9 * exact.max(1.0)).floor();
    (k.max(0.0) as usize).min(eligible)
}

/// How many of the highest `scores` it takes to hold `share` of their sum
/// (all of them when the sum is 0: no evidence to stop early).
pub fn rows_for_mass(scores: &[f32], share: f64) -> usize {
    let total: f64 = scores.iter().map(|&s| f64::from(s.max(0.0))).sum();
    if total <= 0.0 {
        return scores.len();
    }
    let mut sorted: Vec<f32> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let goal = share * total;
    let mut held = 0.0;
    for (i, &s) in sorted.iter().enumerate() {
        held += f64::from(s.max(0.0));
        // A relative slack for the scores' f32 rounding: a share of 1 is
        // met by the last positive row, 0.5 by a row holding exactly half.
        if held >= goal * (1.0 - 1e-6) {
            return i + 1;
        }
    }
    scores.len()
}

/// Indices of the `k` highest scores, ascending by index; ties go to the lower index.
pub fn top_k_stable(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k.min(scores.len()));
    idx.sort_unstable();
    idx
}

/// One layer's Stage I scores over the eligible rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerScores {
    /// Score of every eligible row, normalised to sum 1.
    pub scores: Vec<f32>,
    /// The first eligible row the layer's queries can see; rows before it
    /// lie outside its sliding window (eligible rows ascend by position, so
    /// what a layer sees is always a suffix).
    pub first_visible: usize,
}

/// One score per row from per-layer scores.
pub fn fuse(per_layer: &[LayerScores], fusion: Fusion) -> Vec<f32> {
    let Some(first) = per_layer.first() else {
        return Vec::new();
    };
    let n = first.scores.len();
    let mut out = vec![0f32; n];
    match fusion {
        Fusion::Mean | Fusion::Max => {
            for layer in per_layer {
                for (o, &s) in out.iter_mut().zip(&layer.scores) {
                    *o = match fusion {
                        Fusion::Max => o.max(s),
                        _ => *o + s / per_layer.len() as f32,
                    };
                }
            }
        }
        Fusion::Visible => {
            let mut seen_by = vec![0u32; n];
            for layer in per_layer {
                let from = layer.first_visible.min(n);
                // Relative to the rows it sees: mean 1 over its window.
                let scale = (n - from) as f32;
                let rows = out[from..].iter_mut().zip(&mut seen_by[from..]);
                for ((o, c), &s) in rows.zip(&layer.scores[from..]) {
                    *o += s * scale;
                    *c += 1;
                }
            }
            for (o, &c) in out.iter_mut().zip(&seen_by) {
                if c > 0 {
                    *o /= c as f32;
                }
            }
        }
    }
    out
}

/// Each row's score raised to the highest of the `spread` rows before it
/// within its group (document): the words a question matches lend their
/// score to what follows them.
pub fn spread_forward(scores: &[f32], groups: &[usize], spread: usize) -> Vec<f32> {
    let mut out = scores.to_vec();
    if spread == 0 {
        return out;
    }
    let mut start = 0;
    for &len in groups {
        for (i, o) in out.iter_mut().enumerate().skip(start).take(len) {
            let from = i.saturating_sub(spread).max(start);
            *o = scores[from..=i].iter().copied().fold(f32::MIN, f32::max);
        }
        start += len;
    }
    out
}

/// Scales `scores` to sum 1 (all zeros stay zeros).
pub fn normalise(scores: &mut [f32]) {
    let total: f32 = scores.iter().sum();
    if total > 0.0 {
        scores.iter_mut().for_each(|s| *s /= total);
    }
}

/// Block selection: rows are split into runs of `block` consecutive indices
/// that never cross a `group` boundary (documents); blocks are ranked by the
/// sum of their scores and taken whole until `k` rows are chosen (the last
/// block taken is cut to fit, keeping its first rows).
pub fn top_blocks(scores: &[f32], groups: &[usize], block: usize, k: usize) -> Vec<usize> {
    let mut blocks: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for &len in groups {
        let end = start + len;
        let mut b = start;
        while b < end {
            blocks.push((b, (b + block).min(end)));
            b += block;
        }
        start = end;
    }
    let sums: Vec<f32> = blocks
        .iter()
        .map(|&(a, b)| scores[a..b].iter().sum())
        .collect();
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by(|&a, &b| sums[b].total_cmp(&sums[a]).then(a.cmp(&b)));
    let mut chosen = Vec::with_capacity(k);
    for i in order {
        if chosen.len() >= k {
            break;
        }
        let (a, b) = blocks[i];
        let take = (b - a).min(k - chosen.len());
        chosen.extend(a..a + take);
    }
    chosen.sort_unstable();
    chosen
}

/// The first rows of every group: `per_group` each, or, when `per_group` is
/// `None`, the budget `k` shared as evenly as the groups' sizes allow (a
/// group too short for its share passes the rest on; earlier groups take the
/// remainder).
pub fn leading_rows(groups: &[usize], per_group: Option<usize>, k: usize) -> Vec<usize> {
    let shares: Vec<usize> = match per_group {
        Some(m) => groups.iter().map(|&len| m.min(len)).collect(),
        None => even_shares(groups, k),
    };
    let mut chosen = Vec::new();
    let mut start = 0;
    for (&len, &share) in groups.iter().zip(&shares) {
        chosen.extend(start..start + share);
        start += len;
    }
    chosen
}

/// Water-filling of `k` over groups of the given sizes: every group gets
/// `min(len, level)` for the highest level the budget allows, then the
/// remainder goes one row each to the earliest groups with room.
fn even_shares(groups: &[usize], k: usize) -> Vec<usize> {
    let k = k.min(groups.iter().sum());
    let filled = |level: usize| groups.iter().map(|&len| len.min(level)).sum::<usize>();
    let (mut lo, mut hi) = (0, groups.iter().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if filled(mid) <= k {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut shares: Vec<usize> = groups.iter().map(|&len| len.min(lo)).collect();
    let mut left = k - filled(lo);
    for (share, &len) in shares.iter_mut().zip(groups) {
        if left == 0 {
            break;
        }
        if *share < len {
            *share += 1;
            left -= 1;
        }
    }
    shares
}

/// `k` distinct indices below `n`, drawn with `seed`, ascending.
pub fn random_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chosen = sample(&mut rng, n, k.min(n)).into_vec();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_floors_and_survives_rounding() {
        assert_eq!(budget(0.2, 10), 2);
        assert_eq!(budget(0.29, 100), 29); // 0.29 * 100 = 28.999999999999996
        assert_eq!(budget(0.7, 10), 7); // 0.7 * 10 = 7.000000000000001
        assert_eq!(budget(1.0, 13), 13);
        assert_eq!(budget(0.0, 13), 0);
        assert_eq!(budget(0.15, 10), 1);
    }

    #[test]
    fn mass_counts_the_fewest_top_rows_holding_the_share() {
        let scores = [0.1, 0.5, 0.0, 0.3, 0.1];
        assert_eq!(rows_for_mass(&scores, 0.5), 1);
        assert_eq!(rows_for_mass(&scores, 0.8), 2);
        assert_eq!(rows_for_mass(&scores, 0.81), 3);
        assert_eq!(rows_for_mass(&scores, 1.0), 4);
        // Without evidence every row counts.
        assert_eq!(rows_for_mass(&[0.0; 3], 0.5), 3);
    }

    #[test]
    fn top_k_breaks_ties_toward_lower_index_and_sorts() {
        assert_eq!(top_k_stable(&[0.1, 0.5, 0.5, 0.9, 0.5], 3), vec![1, 2, 3]);
        assert_eq!(top_k_stable(&[0.3; 4], 2), vec![0, 1]);
        assert_eq!(top_k_stable(&[1.0, 2.0], 5), vec![0, 1]);
    }

    #[test]
    fn fusion_mean_and_max() {
        let layers = vec![layer(&[0.2, 0.8], 0), layer(&[0.6, 0.4], 0)];
        assert_eq!(fuse(&layers, Fusion::Mean), vec![0.4, 0.6]);
        assert_eq!(fuse(&layers, Fusion::Max), vec![0.6, 0.8]);
    }

    fn layer(scores: &[f32], first_visible: usize) -> LayerScores {
        LayerScores {
            scores: scores.to_vec(),
            first_visible,
        }
    }

    #[test]
    fn visible_fusion_judges_each_row_by_the_layers_that_see_it() {
        // A global layer over 4 rows and a windowed one that sees the last 2
        // and spends all its mass there.
        let global = layer(&[0.4, 0.1, 0.1, 0.4], 0);
        let windowed = layer(&[0.0, 0.0, 0.5, 0.5], 2);
        let fused = fuse(&[global.clone(), windowed.clone()], Fusion::Visible);
        // Row 0: the global layer alone, 0.4 relative to a mean of 0.25.
        // Row 2: mean of 0.1 * 4 and 0.5 * 2.
        let want = [1.6, 0.4, 0.7, 1.3];
        for (f, w) in fused.iter().zip(want) {
            assert!((f - w).abs() < 1e-6, "{fused:?}");
        }
        // Under the plain mean the windowed layer buries row 0 below rows 2 and 3.
        let mean = fuse(&[global, windowed], Fusion::Mean);
        assert!(mean[0] < mean[2] && mean[0] < mean[3]);
        // A row no scoring layer sees scores 0.
        assert_eq!(
            fuse(&[layer(&[0.0, 1.0], 1)], Fusion::Visible),
            vec![0.0, 1.0]
        );
    }

    #[test]
    fn spread_lends_a_score_to_the_rows_after_it_within_a_document() {
        let scores = [0.9, 0.1, 0.2, 0.0, 0.0, 0.3];
        // Documents of 4 and 2 rows; the 0.9 reaches 2 rows on, not past the document.
        assert_eq!(
            spread_forward(&scores, &[4, 2], 2),
            vec![0.9, 0.9, 0.9, 0.2, 0.0, 0.3]
        );
        assert_eq!(spread_forward(&scores, &[4, 2], 0), scores.to_vec());
    }

    #[test]
    fn blocks_stay_inside_documents_and_fill_the_budget_exactly() {
        // Two documents of 5 and 3 rows, blocks of 2.
        let scores = [0.0, 0.0, 0.0, 0.0, 0.9, 0.5, 0.5, 0.0];
        let chosen = top_blocks(&scores, &[5, 3], 2, 3);
        assert_eq!(chosen, vec![4, 5, 6]);
    }

    #[test]
    fn leading_rows_spread_the_budget_over_documents() {
        assert_eq!(leading_rows(&[4, 4, 4], None, 5), vec![0, 1, 4, 5, 8]);
        assert_eq!(leading_rows(&[2, 4], Some(3), 0), vec![0, 1, 2, 3, 4]);
        // A short document passes the rest of its share on.
        assert_eq!(leading_rows(&[2, 6], None, 6), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(leading_rows(&[25, 30], None, 55).len(), 55);
    }

    #[test]
    fn random_rows_are_seeded_distinct_and_sorted() {
        let a = random_rows(100, 10, 7);
        assert_eq!(a, random_rows(100, 10, 7));
        assert_ne!(a, random_rows(100, 10, 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }
}
