//! Selection and assembly invariants on generated inputs (proptest): the
//! pure policies on random scores and groups, the layout on random pieces,
//! and every strategy's run on random layouts of a tiny model.

use candle_core::{Device, Tensor};
use prophetkv_model::testing::{max_abs_diff, tiny, tokens, Tiny};
use prophetkv_model::Model;
use prophetkv_reuse::select::{
    budget, leading_rows, random_rows, spread_forward, top_blocks, top_k_stable,
};
use prophetkv_reuse::{
    assemble, compute_doc_cache, run, DocCache, Layout, Piece, ReuseConfig, ReuseRequest,
    StrategyKind,
};
use proptest::prelude::*;

/// Ascending, duplicate-free, below `n`.
fn is_selection(rows: &[usize], n: usize) -> bool {
    rows.windows(2).all(|w| w[0] < w[1]) && rows.iter().all(|&r| r < n)
}

fn groups() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..40, 1..6)
}

proptest! {
    #[test]
    fn budget_is_the_floor_of_ratio_times_eligible_and_monotone(
        ratio in 0.0f64..=1.0, more in 0.0f64..=1.0, n in 0usize..5000,
    ) {
        let k = budget(ratio, n);
        prop_assert!(k <= n);
        prop_assert!((k as f64) <= ratio * n as f64 + 1e-6);
        prop_assert!((k + 1) as f64 > ratio * n as f64 - 1e-6);
        prop_assert!(budget((ratio + more).min(1.0), n) >= k);
        prop_assert_eq!(budget(1.0, n), n);
        prop_assert_eq!(budget(0.0, n), 0);
    }

    #[test]
    fn top_k_takes_k_rows_none_scoring_below_a_row_left_out(
        scores in prop::collection::vec(-1.0f32..1.0, 0..200), k in 0usize..250,
    ) {
        let chosen = top_k_stable(&scores, k);
        prop_assert_eq!(chosen.len(), k.min(scores.len()));
        prop_assert!(is_selection(&chosen, scores.len()));
        let lowest = chosen.iter().map(|&i| scores[i]).fold(f32::INFINITY, f32::min);
        for (i, &s) in scores.iter().enumerate() {
            if chosen.binary_search(&i).is_err() {
                prop_assert!(s <= lowest, "row {} scores {} above a chosen {}", i, s, lowest);
            }
        }
    }

    #[test]
    fn blocks_take_k_rows_in_whole_blocks_within_documents(
        groups in groups(), block in 1usize..12, ratio in 0.0f64..=1.0, seed in any::<u64>(),
    ) {
        let n: usize = groups.iter().sum();
        let scores: Vec<f32> = random_rows(1000, n.min(1000), seed)
            .iter().map(|&r| r as f32).collect();
        let k = budget(ratio, n);
        let chosen = top_blocks(&scores, &groups, block, k);
        prop_assert_eq!(chosen.len(), k);
        prop_assert!(is_selection(&chosen, n));
        // Every run of chosen rows starts at a block boundary of its document,
        // except where the one cut block was (at most one run is cut short).
        let mut start = 0;
        let mut misaligned = 0;
        for &len in &groups {
            for row in start..start + len {
                let chosen_here = chosen.binary_search(&row).is_ok();
                let starts_run = row == start || chosen.binary_search(&(row - 1)).is_err();
                if chosen_here && starts_run && (row - start) % block != 0 {
                    misaligned += 1;
                }
            }
            start += len;
        }
        prop_assert_eq!(misaligned, 0);
    }

    #[test]
    fn leading_rows_share_the_budget_evenly_from_each_documents_start(
        groups in groups(), ratio in 0.0f64..=1.0,
    ) {
        let n: usize = groups.iter().sum();
        let k = budget(ratio, n);
        let chosen = leading_rows(&groups, None, k);
        prop_assert_eq!(chosen.len(), k);
        prop_assert!(is_selection(&chosen, n));
        let mut start = 0;
        let mut shares = Vec::new();
        for &len in &groups {
            let share = chosen.iter().filter(|&&r| r >= start && r < start + len).count();
            // A prefix of the document.
            prop_assert!(chosen.iter().filter(|&&r| r >= start && r < start + share).count() == share);
            shares.push((share, len));
            start += len;
        }
        // Documents with room left differ by at most one row.
        let open: Vec<usize> = shares.iter().filter(|(s, l)| s < l).map(|(s, _)| *s).collect();
        if let (Some(lo), Some(hi)) = (open.iter().min(), shares.iter().map(|(s, _)| s).max()) {
            prop_assert!(hi <= &(lo + 1), "shares {:?}", shares);
        }
    }

    #[test]
    fn random_rows_are_a_deterministic_selection_of_k(
        n in 0usize..500, k in 0usize..600, seed in any::<u64>(),
    ) {
        let chosen = random_rows(n, k, seed);
        prop_assert_eq!(chosen.len(), k.min(n));
        prop_assert!(is_selection(&chosen, n));
        prop_assert_eq!(chosen, random_rows(n, k, seed));
    }

    #[test]
    fn spreading_raises_scores_to_the_maximum_before_them_within_a_document(
        groups in groups(), spread in 0usize..8, seed in any::<u64>(),
    ) {
        let n: usize = groups.iter().sum();
        let scores: Vec<f32> = random_rows(1000, n.min(1000), seed)
            .iter().map(|&r| r as f32).collect();
        let out = spread_forward(&scores, &groups, spread);
        let mut start = 0;
        for &len in &groups {
            for i in start..start + len {
                let from = i.saturating_sub(spread).max(start);
                let max = scores[from..=i].iter().copied().fold(f32::MIN, f32::max);
                prop_assert_eq!(out[i], max);
            }
            start += len;
        }
    }
}

/// A document cache of `len` rows with recognisable K/V (no model needed).
fn synthetic_doc(anchor: &[u32], len: usize, seed: u64) -> DocCache {
    let layer = |l: u64| {
        let k = Tensor::rand(0f32, 1.0, (len, 2, 4), &Device::Cpu).unwrap();
        let v = (k.clone() + (seed * 10 + l) as f64).unwrap();
        (k, v)
    };
    DocCache::from_parts(
        anchor.to_vec(),
        tokens(len, seed),
        (0..2).map(layer).collect(),
    )
    .unwrap()
}

/// Piece lengths: positive for a document, negative for a fresh segment.
fn piece_lengths() -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(prop_oneof![1i32..30, -3i32..=-1], 0..7)
}

/// The fresh segments of `lengths` (its negative entries), as token ids.
fn fresh_segments(lengths: &[i32]) -> Vec<Vec<u32>> {
    lengths
        .iter()
        .filter(|&&l| l < 0)
        .map(|&l| vec![9; l.unsigned_abs() as usize])
        .collect()
}

/// `lengths` as pieces in order: documents from `docs`, fresh segments from `fresh`.
fn pieces<'a>(lengths: &[i32], docs: &'a [DocCache], fresh: &'a [Vec<u32>]) -> Vec<Piece<'a>> {
    let (mut d, mut f) = (docs.iter(), fresh.iter());
    lengths
        .iter()
        .map(|&l| {
            if l > 0 {
                Piece::Document(d.next().unwrap())
            } else {
                Piece::Fresh(f.next().unwrap())
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn a_layout_places_every_piece_contiguously_and_only_documents_are_eligible(
        lengths in piece_lengths(), query in 1usize..8, first_eligible in any::<bool>(),
    ) {
        let anchor_ids = vec![1u32, 2, 3];
        let anchor = synthetic_doc(&[], anchor_ids.len(), 0);
        let anchor = DocCache::from_parts(Vec::new(), anchor_ids.clone(), anchor.layers().to_vec()).unwrap();
        let docs: Vec<DocCache> = lengths.iter().enumerate().filter(|(_, &l)| l > 0)
            .map(|(i, &l)| synthetic_doc(&anchor_ids, l as usize, i as u64 + 1)).collect();
        let fresh = fresh_segments(&lengths);
        let pieces = pieces(&lengths, &docs, &fresh);
        let query_ids = tokens(query, 5);
        let layout = Layout::new(&anchor, &pieces, &query_ids, first_eligible).unwrap();

        let total = 3 + lengths.iter().map(|l| l.unsigned_abs() as usize).sum::<usize>() + query;
        prop_assert_eq!(layout.len(), total);
        prop_assert_eq!(layout.anchor.clone(), 0..3);
        prop_assert_eq!(layout.query.clone(), total - query..total);
        prop_assert_eq!(&layout.tokens[layout.query.clone()], &query_ids[..]);
        let mut next = 3;
        let (mut di, mut fresh_rows) = (0, Vec::new());
        for (piece, &l) in pieces.iter().zip(&lengths) {
            let len = l.unsigned_abs() as usize;
            match piece {
                Piece::Document(doc) => {
                    prop_assert_eq!(layout.documents[di].clone(), next..next + len);
                    prop_assert_eq!(&layout.tokens[next..next + len], doc.tokens());
                    di += 1;
                }
                Piece::Fresh(_) => fresh_rows.extend(next..next + len),
            }
            next += len;
        }
        prop_assert_eq!(&layout.fresh, &fresh_rows);
        let exact_first = !first_eligible && matches!(pieces.first(), Some(Piece::Document(_)));
        let eligible: Vec<usize> = layout.documents.iter().enumerate()
            .filter(|(i, _)| !(exact_first && *i == 0))
            .flat_map(|(_, r)| r.clone()).collect();
        prop_assert_eq!(&layout.eligible, &eligible);
    }
}

/// The tiny model's run on a layout: `lengths` as in [`piece_lengths`].
struct TinyRun {
    model: Model,
    _dir: tempfile::TempDir,
    anchor: DocCache,
}

impl TinyRun {
    fn new() -> Self {
        let (dir, model) = tiny(Tiny::Gemma3);
        let anchor = compute_doc_cache(&model, &[], &[1, 2, 3]).unwrap();
        Self {
            model,
            _dir: dir,
            anchor,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_strategy_recomputes_its_budget_of_eligible_rows_and_reuses_the_rest_as_cached(
        lengths in piece_lengths(), query in 1usize..6, ratio in 0.0f64..=1.0,
        strategy in prop::sample::select(vec![
            StrategyKind::Naive, StrategyKind::ProphetKv, StrategyKind::CacheBlend,
            StrategyKind::Epic, StrategyKind::Random,
        ]),
    ) {
        thread_local!(static TINY: TinyRun = TinyRun::new());
        TINY.with(|t| -> Result<(), TestCaseError> {
            let model = &t.model;
            let docs: Vec<DocCache> = lengths.iter().enumerate().filter(|(_, &l)| l > 0)
                .map(|(i, &l)| compute_doc_cache(model, &[1, 2, 3], &tokens(l as usize, i as u64)).unwrap())
                .collect();
            let fresh = fresh_segments(&lengths);
            let pieces = pieces(&lengths, &docs, &fresh);
            let query_ids = tokens(query, 77);
            let request = ReuseRequest { anchor: &t.anchor, pieces: &pieces, query: &query_ids };
            let config = ReuseConfig { strategy, ratio, ..ReuseConfig::default() }
                .validate(model.config().num_layers()).unwrap();
            let out = run(model, &request, &config, model.device()).unwrap();
            let stats = &out.stats;
            let layout = &out.layout;

            let expected = match strategy {
                StrategyKind::Naive => 0,
                _ => budget(ratio, layout.eligible.len()),
            };
            prop_assert_eq!(stats.selected, expected, "{}", strategy);
            prop_assert_eq!(stats.recomputed, stats.selected + layout.fresh.len() + query);
            prop_assert_eq!(out.kv.len(), layout.len());
            let selected: Vec<usize> = stats.selected_positions.iter().flatten().map(|&p| p as usize).collect();
            prop_assert_eq!(selected.len(), stats.selected);
            prop_assert!(selected.iter().all(|s| layout.eligible.binary_search(s).is_ok()));

            // Rows not selected keep their cached values exactly (CacheBlend
            // recomputes layer 0 for every row to find its deviations).
            let assembled = assemble(model, layout, &t.anchor, &pieces, model.device()).unwrap();
            let first = usize::from(strategy == StrategyKind::CacheBlend);
            for l in first..model.config().num_layers() {
                let (ours, cached) = (out.kv.v(l).unwrap(), assembled.v(l).unwrap());
                for range in &layout.documents {
                    for row in range.clone().filter(|r| !selected.contains(r)) {
                        let d = max_abs_diff(&ours.get(row).unwrap(), &cached.get(row).unwrap());
                        prop_assert!(d == 0.0, "layer {} row {} changed by {}", l, row, d);
                    }
                }
            }
            Ok(())
        })?;
    }
}
