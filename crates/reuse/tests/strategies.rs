//! DESIGN.md §3's invariants on tiny random models (f32, tolerance 1e-4).

use prophetkv_model::testing::{max_abs_diff, tiny, tokens, Tiny, ALL};
use prophetkv_model::Model;
use prophetkv_reuse::select::{budget, rows_for_mass};
use prophetkv_reuse::{
    compute_doc_cache, compute_doc_cache_keeping, run, Budget, CachedDocuments, DocCache, Fusion,
    Granularity, Piece, Probe, ProphetOptions, Resume, ReuseConfig, ReuseError, ReuseOutput,
    ReuseRequest, Signal, StrategyKind,
};

const TOL: f32 = 1e-4;

/// Anchor, three documents separated by fresh gaps, and a question.
struct Fixture {
    anchor: DocCache,
    docs: Vec<DocCache>,
    gap: Vec<u32>,
    query: Vec<u32>,
}

impl Fixture {
    fn new(model: &Model, doc_lens: &[usize]) -> Self {
        let anchor_ids = vec![1, 2, 3];
        let anchor = compute_doc_cache(model, &[], &anchor_ids).unwrap();
        let docs = doc_lens
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                compute_doc_cache(model, &anchor_ids, &tokens(n, 10 + i as u64)).unwrap()
            })
            .collect();
        Self {
            anchor,
            docs,
            gap: vec![5, 6],
            query: tokens(6, 99),
        }
    }

    fn pieces(&self) -> Vec<Piece<'_>> {
        let mut pieces = Vec::new();
        for (i, d) in self.docs.iter().enumerate() {
            if i > 0 {
                pieces.push(Piece::Fresh(&self.gap));
            }
            pieces.push(Piece::Document(d));
        }
        pieces
    }

    fn run(&self, model: &Model, config: &ReuseConfig) -> ReuseOutput {
        let pieces = self.pieces();
        let request = ReuseRequest {
            anchor: &self.anchor,
            pieces: &pieces,
            query: &self.query,
        };
        let config = config.validate(model.config().num_layers()).unwrap();
        run(model, &request, &config, model.device()).unwrap()
    }
}

fn config(strategy: StrategyKind, ratio: f64) -> ReuseConfig {
    ReuseConfig {
        strategy,
        ratio,
        ..ReuseConfig::default()
    }
}

/// Last-row logits of a plain prefill of `ids`.
fn plain_prefill(model: &Model, ids: &[u32]) -> candle_core::Tensor {
    let positions: Vec<u32> = (0..ids.len() as u32).collect();
    let (_, last) = model.prefill(ids, &positions).unwrap();
    model.logits(&last).unwrap()
}

#[test]
fn full_equals_plain_prefill() {
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let f = Fixture::new(&model, &[20, 25, 30]);
        let out = f.run(&model, &config(StrategyKind::Full, 0.2));
        let d = max_abs_diff(&out.logits, &plain_prefill(&model, &out.layout.tokens));
        assert!(
            d < TOL,
            "{kind:?}: full differs from a plain prefill by {d}"
        );
        assert_eq!(out.stats.recomputed, out.layout.len());
    }
}

#[test]
fn every_budgeted_strategy_at_ratio_one_equals_full_and_decodes_the_same() {
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let f = Fixture::new(&model, &[20, 25, 30]);
        let full = f.run(&model, &config(StrategyKind::Full, 1.0));
        let mut full_kv = full.kv.try_clone().unwrap();
        let full_next = model.decode(&mut [&mut full_kv], &[7]).unwrap();
        for strategy in [
            StrategyKind::ProphetKv,
            StrategyKind::CacheBlend,
            StrategyKind::Epic,
            StrategyKind::Random,
        ] {
            let mut out = f.run(&model, &config(strategy, 1.0));
            assert_eq!(
                out.stats.selected, out.stats.eligible,
                "{kind:?} {strategy}"
            );
            let d = max_abs_diff(&out.logits, &full.logits);
            assert!(
                d < TOL,
                "{kind:?} {strategy}: first-token logits differ from full by {d}"
            );
            for l in 0..out.kv.num_layers() {
                let dk = max_abs_diff(&out.kv.k(l).unwrap(), &full.kv.k(l).unwrap());
                let dv = max_abs_diff(&out.kv.v(l).unwrap(), &full.kv.v(l).unwrap());
                assert!(
                    dk < TOL && dv < TOL,
                    "{kind:?} {strategy} layer {l}: K/V differ by {dk}/{dv}"
                );
            }
            let next = model.decode(&mut [&mut out.kv], &[7]).unwrap();
            let d = max_abs_diff(&next, &full_next);
            assert!(
                d < TOL,
                "{kind:?} {strategy}: decode after Stage II differs by {d}"
            );
        }
    }
}

#[test]
fn one_document_with_naive_equals_full() {
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let f = Fixture::new(&model, &[40]);
        let naive = f.run(&model, &config(StrategyKind::Naive, 0.0));
        let full = f.run(&model, &config(StrategyKind::Full, 0.0));
        let d = max_abs_diff(&naive.logits, &full.logits);
        assert!(
            d < TOL,
            "{kind:?}: naive on one document differs from full by {d}"
        );
        assert_eq!(
            naive.stats.eligible, 0,
            "the first document's cache is exact"
        );
    }
}

#[test]
fn assembled_layer0_keys_equal_keys_computed_in_place() {
    // Layer-0 keys depend only on token and position: after re-rotation to
    // their offsets, cached documents' layer-0 keys must equal a full prefill's.
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let f = Fixture::new(&model, &[20, 25, 30]);
        let naive = f.run(&model, &config(StrategyKind::Naive, 0.0));
        let full = f.run(&model, &config(StrategyKind::Full, 0.0));
        for doc in &naive.layout.documents {
            let a = naive
                .kv
                .k(0)
                .unwrap()
                .narrow(0, doc.start, doc.len())
                .unwrap();
            let b = full
                .kv
                .k(0)
                .unwrap()
                .narrow(0, doc.start, doc.len())
                .unwrap();
            let d = max_abs_diff(&a, &b);
            assert!(d < TOL, "{kind:?}: re-rotated layer-0 keys differ by {d}");
        }
        // Later layers do differ: the documents never saw each other.
        let last = naive.kv.num_layers() - 1;
        let doc = naive.layout.documents[2].clone();
        let a = naive
            .kv
            .k(last)
            .unwrap()
            .narrow(0, doc.start, doc.len())
            .unwrap();
        let b = full
            .kv
            .k(last)
            .unwrap()
            .narrow(0, doc.start, doc.len())
            .unwrap();
        assert!(
            max_abs_diff(&a, &b) > TOL,
            "{kind:?}: caches should be stale before recompute"
        );
    }
}

#[test]
fn selection_is_deterministic() {
    let (_dir, model) = tiny(Tiny::Gemma3);
    let f = Fixture::new(&model, &[20, 25, 30]);
    for strategy in [
        StrategyKind::ProphetKv,
        StrategyKind::CacheBlend,
        StrategyKind::Epic,
        StrategyKind::Random,
    ] {
        let a = f.run(&model, &config(strategy, 0.3));
        let b = f.run(&model, &config(strategy, 0.3));
        assert_eq!(
            a.stats.selected_positions, b.stats.selected_positions,
            "{strategy}"
        );
        assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0, "{strategy}");
    }
    let mut other_seed = config(StrategyKind::Random, 0.3);
    other_seed.seed = 1;
    assert_ne!(
        f.run(&model, &other_seed).stats.selected_positions,
        f.run(&model, &config(StrategyKind::Random, 0.3))
            .stats
            .selected_positions
    );
}

#[test]
fn rows_per_layer_match_each_strategy_plan() {
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let f = Fixture::new(&model, &[20, 25, 30]);
        for strategy in StrategyKind::ALL {
            let out = f.run(&model, &config(strategy, 0.2));
            let s = &out.stats;
            assert_eq!(s.eligible, 55, "documents 2 and 3 are eligible");
            let expected_k = match strategy {
                StrategyKind::Naive => 0,
                StrategyKind::Full => 55,
                _ => 11,
            };
            assert_eq!(s.selected, expected_k, "{kind:?} {strategy}");
            let stage2 = s.selected + s.fresh + s.query;
            for (l, &rows) in s.rows_per_layer.iter().enumerate() {
                let expected = match strategy {
                    StrategyKind::Full => out.layout.len(),
                    // Stage I runs fresh + question rows, Stage II the selection too.
                    StrategyKind::ProphetKv => (s.fresh + s.query) + stage2,
                    // Layer 0 for every row; from layer 1 only the selection.
                    StrategyKind::CacheBlend if l == 0 => 75 + s.fresh + s.query,
                    _ => stage2,
                };
                assert_eq!(rows, expected, "{kind:?} {strategy} layer {l}");
            }
            if strategy == StrategyKind::Full {
                assert_eq!(s.reused, 0);
            } else {
                assert_eq!(
                    s.reused + s.selected,
                    out.layout.document_rows(),
                    "{strategy}"
                );
            }
        }
    }
}

#[test]
fn prophetkv_options_all_run_and_change_the_choice() {
    let (_dir, model) = tiny(Tiny::Gemma3);
    let f = Fixture::new(&model, &[20, 25, 30]);
    let mut mean = config(StrategyKind::ProphetKv, 0.2);
    mean.prophet.fusion = prophetkv_reuse::Fusion::Mean;
    mean.prophet.spread = 0;
    let base = f.run(&model, &mean);
    let scores = base.scores.clone().unwrap();
    let total: f32 = scores.iter().sum();
    assert!(
        (total - 1.0).abs() < 1e-4,
        "fused mean scores sum to 1, got {total}"
    );
    let mut variants = Vec::new();
    let mut c = config(StrategyKind::ProphetKv, 0.2);
    c.prophet.probe = Probe::Isolated;
    variants.push(c.clone());
    c = config(StrategyKind::ProphetKv, 0.2);
    c.prophet.fusion = prophetkv_reuse::Fusion::Max;
    variants.push(c.clone());
    c = config(StrategyKind::ProphetKv, 0.2);
    c.prophet.score_layers = Some(vec![2]);
    variants.push(c.clone());
    c = config(StrategyKind::ProphetKv, 0.2);
    c.prophet.granularity = Granularity::Block(4);
    variants.push(c.clone());
    c = config(StrategyKind::ProphetKv, 0.2);
    c.prophet.signal = Signal::Flow;
    variants.push(c.clone());
    c = config(StrategyKind::ProphetKv, 0.2);
    c.prophet.fusion = prophetkv_reuse::Fusion::Mean;
    c.prophet.spread = 0;
    variants.push(c.clone());
    for v in variants {
        let out = f.run(&model, &v);
        assert_eq!(out.stats.selected, 11, "{:?}", v.prophet);
    }
}

#[test]
fn visible_fusion_scores_rows_outside_every_window_by_the_global_layers_alone() {
    // Tiny Gemma 3: layers 0 and 1 see 8 positions back, layer 2 everything.
    let (_dir, model) = tiny(Tiny::Gemma3);
    let f = Fixture::new(&model, &[20, 25, 30]);
    let mut all = config(StrategyKind::ProphetKv, 0.2);
    all.prophet.fusion = prophetkv_reuse::Fusion::Visible;
    all.prophet.spread = 0;
    let mut global = all.clone();
    global.prophet.score_layers = Some(vec![2]);
    let all = f.run(&model, &all).scores.unwrap();
    let global = f.run(&model, &global).scores.unwrap();
    // The query's 6 rows follow the last document directly, and its first
    // row sees 7 rows back within the window of 8: the last 7 eligible rows.
    let outside = all.len() - 7;
    for (i, (a, g)) in all.iter().zip(&global).enumerate().take(outside) {
        assert!((a - g).abs() < 1e-5, "row {i}: {a} vs {g}");
    }
    for (i, (a, g)) in all.iter().zip(&global).enumerate().skip(outside) {
        assert!(
            (a - g).abs() > 1e-6,
            "row {i} is inside the windows, judged by all three layers: {a} vs {g}"
        );
    }
}

#[test]
fn windowed_models_default_to_max_fusion_with_spread_and_global_ones_to_the_papers_selection() {
    let (_dir, gemma) = tiny(Tiny::Gemma3);
    let windowed = ProphetOptions::for_model(gemma.config());
    assert_eq!(windowed, ProphetOptions::default());
    assert_eq!((windowed.fusion, windowed.spread), (Fusion::Max, 4));
    for kind in [Tiny::Llama, Tiny::Qwen3, Tiny::Qwen2] {
        let (_dir, model) = tiny(kind);
        let global = ReuseConfig::for_model(model.config());
        assert_eq!(
            (global.prophet.fusion, global.prophet.spread),
            (Fusion::Mean, 0),
            "{kind:?}"
        );
        assert_eq!(
            global.prophet,
            ProphetOptions {
                fusion: Fusion::Mean,
                spread: 0,
                ..ProphetOptions::default()
            }
        );
    }
}

#[test]
fn bad_input_gives_errors() {
    let (_dir, model) = tiny(Tiny::Llama);
    let f = Fixture::new(&model, &[20, 25]);
    let pieces = f.pieces();
    let request = ReuseRequest {
        anchor: &f.anchor,
        pieces: &pieces,
        query: &f.query,
    };
    let layers = model.config().num_layers();
    for ratio in [-0.1, 1.5, f64::NAN] {
        let err = config(StrategyKind::ProphetKv, ratio)
            .validate(layers)
            .unwrap_err();
        assert!(matches!(err, ReuseError::Ratio(_)), "{err}");
    }
    // A config checked for another model is refused by the run.
    let other = config(StrategyKind::Naive, 0.2)
        .validate(layers + 1)
        .unwrap();
    let err = run(&model, &request, &other, model.device()).unwrap_err();
    assert!(matches!(err, ReuseError::Option { .. }), "{err}");
    let naive = config(StrategyKind::Naive, 0.2).validate(layers).unwrap();
    assert!(matches!(
        "magic".parse::<StrategyKind>(),
        Err(ReuseError::UnknownStrategy(_))
    ));
    let err = compute_doc_cache(&model, &[1, 2, 3], &[]).unwrap_err();
    assert!(matches!(err, ReuseError::EmptyDocument { .. }), "{err}");
    let empty_query = ReuseRequest {
        query: &[],
        ..request
    };
    let err = run(&model, &empty_query, &naive, model.device()).unwrap_err();
    assert!(matches!(err, ReuseError::EmptyQuery), "{err}");
    // Tiny models have a 1024-token context.
    let long = tokens(1100, 3);
    let too_long = ReuseRequest {
        query: &long,
        ..request
    };
    let err = run(&model, &too_long, &naive, model.device()).unwrap_err();
    assert!(matches!(err, ReuseError::ContextOverflow { .. }), "{err}");
}

#[test]
fn mass_budget_takes_the_top_rows_holding_the_share_within_its_bounds() {
    let (_dir, model) = tiny(Tiny::Gemma3);
    let f = Fixture::new(&model, &[20, 25, 30]);
    let mass = |share, floor, ceiling| {
        let mut c = config(StrategyKind::ProphetKv, 0.2);
        c.prophet.budget = Budget::Mass {
            share,
            floor,
            ceiling,
        };
        f.run(&model, &c)
    };
    let open = mass(0.5, 0.0, 1.0);
    let scores = open.scores.clone().unwrap();
    let eligible = scores.len();
    let k = open.stats.selected;
    assert_eq!(k, rows_for_mass(&scores, 0.5));
    assert!(k > 0 && k < eligible, "{k} of {eligible}");
    // The same rows as the fixed budget of that count: only the count adapts.
    let mut fixed = config(StrategyKind::ProphetKv, k as f64 / eligible as f64);
    fixed.ratio += 0.1 / eligible as f64;
    assert_eq!(
        f.run(&model, &fixed).stats.selected_positions,
        open.stats.selected_positions
    );
    // A larger share never takes fewer rows; the bounds hold.
    assert!(mass(0.9, 0.0, 1.0).stats.selected >= k);
    assert_eq!(mass(1e-6, 0.3, 1.0).stats.selected, budget(0.3, eligible));
    assert_eq!(mass(1.0, 0.0, 0.1).stats.selected, budget(0.1, eligible));
}

#[test]
fn mass_budget_out_of_range_is_refused() {
    let mut c = config(StrategyKind::ProphetKv, 0.2);
    for (share, floor, ceiling) in [
        (0.0, 0.0, 1.0),
        (1.5, 0.0, 1.0),
        (0.5, 0.4, 0.3),
        (0.5, 0.0, 1.2),
    ] {
        c.prophet.budget = Budget::Mass {
            share,
            floor,
            ceiling,
        };
        assert!(
            matches!(c.validate(3), Err(ReuseError::Option { .. })),
            "{share} {floor} {ceiling}"
        );
    }
}

#[test]
fn flow_signal_scores_differ_from_attention_and_need_the_attend_probe() {
    let (_dir, model) = tiny(Tiny::Gemma3);
    let f = Fixture::new(&model, &[20, 25, 30]);
    let attention = config(StrategyKind::ProphetKv, 0.2);
    let mut flow = attention.clone();
    flow.prophet.signal = Signal::Flow;
    let (a, b) = (f.run(&model, &attention), f.run(&model, &flow));
    assert_eq!(a.stats.selected, b.stats.selected);
    assert_ne!(a.scores, b.scores, "value norms reweigh the scores");
    flow.prophet.probe = Probe::Isolated;
    assert!(matches!(
        flow.validate(3),
        Err(ReuseError::Option { name: "signal", .. })
    ));
}

#[test]
fn oracle_deviation_never_scores_a_row_already_equal_to_full_prefill() {
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let f = Fixture::new(&model, &[20, 25, 30]);
        // The first document sits right after the anchor it was cached
        // behind, so its rows are full prefill's: no deviation to repair.
        let mut c = config(StrategyKind::ProphetKv, 0.5);
        c.first_doc_eligible = true;
        c.prophet.signal = Signal::OracleDeviation;
        let out = f.run(&model, &c);
        let scores = out.scores.expect("prophetkv scores its rows");
        let (exact, rest) = scores.split_at(20);
        let top = |s: &[f32]| s.iter().copied().fold(0f32, f32::max);
        // Zero up to the rounding of a prefill split differently into passes.
        assert!(
            top(exact) <= 1e-3 * top(rest),
            "{kind:?}: {exact:?} against {}",
            top(rest)
        );
        assert_eq!(out.stats.selected, budget(0.5, 75), "{kind:?}");
    }
}

fn resume(layer: usize, deep_share: f64, ratio: f64) -> ReuseConfig {
    let mut c = config(StrategyKind::ProphetKv, ratio);
    c.prophet.resume = Some(Resume { layer, deep_share });
    c
}

#[test]
fn resuming_every_row_of_an_exact_document_equals_full_prefill() {
    // A document right after the anchor was cached where it sits: the hidden
    // states it kept are full prefill's, so rows started from them there
    // end where a full pass ends.
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let anchor_ids = vec![1, 2, 3];
        let anchor = compute_doc_cache(&model, &[], &anchor_ids).unwrap();
        let doc_ids = tokens(30, 7);
        let doc = compute_doc_cache_keeping(&model, &anchor_ids, &doc_ids, &[1]).unwrap();
        let query = tokens(5, 99);
        let pieces = [Piece::Document(&doc)];
        let request = ReuseRequest {
            anchor: &anchor,
            pieces: &pieces,
            query: &query,
        };
        let mut c = resume(1, 0.0, 1.0);
        c.first_doc_eligible = true;
        let c = c.validate(model.config().num_layers()).unwrap();
        let out = run(&model, &request, &c, model.device()).unwrap();
        assert_eq!(out.stats.selected, 30, "{kind:?}");
        let layers = model.config().num_layers() as f64;
        assert!((out.stats.recompute_share - (layers - 1.0) / layers).abs() < 1e-9);
        let ids: Vec<u32> = anchor_ids
            .iter()
            .chain(&doc_ids)
            .chain(&query)
            .copied()
            .collect();
        let want = plain_prefill(&model, &ids);
        let diff = max_abs_diff(&out.logits, &want);
        assert!(diff < TOL, "{kind:?}: {diff}");
    }
}

#[test]
fn resume_spends_the_same_rows_times_layers_on_more_rows() {
    let (_dir, model) = tiny(Tiny::Gemma3);
    let f = Fixture::new(&model, &[20, 25, 30]);
    let anchor_ids = vec![1, 2, 3];
    let docs: Vec<DocCache> = [20, 25, 30]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            compute_doc_cache_keeping(&model, &anchor_ids, &tokens(n, 10 + i as u64), &[2]).unwrap()
        })
        .collect();
    let kept = Fixture { docs, ..f };
    let plain = kept.run(&model, &config(StrategyKind::ProphetKv, 0.2));
    // Everything through every layer: the plain selection.
    let deep = kept.run(&model, &resume(2, 1.0, 0.2));
    assert_eq!(
        deep.stats.selected_positions,
        plain.stats.selected_positions
    );
    assert!(max_abs_diff(&deep.logits, &plain.logits) < TOL);
    // Nothing through every layer: three times the rows from the last of
    // three layers, the same rows × layers, and the plain choice among them.
    let wide = kept.run(&model, &resume(2, 0.0, 0.2));
    assert_eq!(wide.stats.selected, 3 * plain.stats.selected);
    assert!((wide.stats.recompute_share - plain.stats.recompute_share).abs() < 1e-9);
    for (all, top) in wide
        .stats
        .selected_positions
        .iter()
        .zip(&plain.stats.selected_positions)
    {
        assert!(top.iter().all(|p| all.binary_search(p).is_ok()));
    }
    // Documents cached without those hidden states are refused by name.
    let pieces = f_pieces_without_hidden(&model);
    let err = pieces.unwrap_err();
    assert!(err.to_string().contains("resume layer"), "{err}");
}

/// A resuming run over documents that kept no hidden states.
fn f_pieces_without_hidden(model: &prophetkv_model::Model) -> Result<ReuseOutput, ReuseError> {
    let f = Fixture::new(model, &[20, 25]);
    let pieces = f.pieces();
    let request = ReuseRequest {
        anchor: &f.anchor,
        pieces: &pieces,
        query: &f.query,
    };
    let c = resume(1, 0.0, 0.2).validate(model.config().num_layers())?;
    run(model, &request, &c, model.device())
}

#[test]
fn a_second_probe_spends_the_same_budget_in_two_repairs() {
    let (_dir, model) = tiny(Tiny::Gemma3);
    let f = Fixture::new(&model, &[20, 25, 30]);
    let one = f.run(&model, &config(StrategyKind::ProphetKv, 0.2));
    let mut c = config(StrategyKind::ProphetKv, 0.2);
    c.prophet.probes = 2;
    let two = f.run(&model, &c);
    assert_eq!(two.stats.selected, one.stats.selected);
    assert!((two.stats.recompute_share - one.stats.recompute_share).abs() < 1e-9);
    // The first half is the first probe's top rows either way.
    let mut first = c.clone();
    first.ratio = 0.1;
    first.prophet.probes = 1;
    let half = f.run(&model, &first);
    for (all, top) in two
        .stats
        .selected_positions
        .iter()
        .zip(&half.stats.selected_positions)
    {
        assert!(
            top.iter().all(|p| all.binary_search(p).is_ok()),
            "{top:?} in {all:?}"
        );
    }
    // One probe per round, each over the fresh rows and the question.
    let probe_rows = f.gap.len() * 2 + f.query.len();
    let final_rows = one.stats.recomputed;
    assert_eq!(one.stats.rows_per_layer[0], probe_rows + final_rows);
    assert_eq!(
        two.stats.rows_per_layer[0],
        2 * probe_rows + final_rows,
        "the repaired rows run once"
    );
    c.prophet.probes = 0;
    assert!(c.validate(3).is_err());
}

#[test]
fn documents_cached_behind_a_preamble_keep_the_first_exact_and_assemble_after_the_anchor() {
    let (_dir, model) = tiny(Tiny::Llama);
    let anchor = vec![1, 2, 3];
    let docs = vec![tokens(12, 10), tokens(15, 11), tokens(9, 12)];
    let plain = CachedDocuments::compute(&model, &anchor, &docs).unwrap();
    let same = CachedDocuments::compute_behind(&model, &anchor, &[], &docs, 1, &[]).unwrap();
    let behind =
        CachedDocuments::compute_behind(&model, &anchor, &tokens(8, 13), &docs, 1, &[]).unwrap();
    let keys = |c: &DocCache| c.layers()[1].0.clone();
    for (i, ((p, s), b)) in plain
        .documents
        .iter()
        .zip(&same.documents)
        .zip(&behind.documents)
        .enumerate()
    {
        assert_eq!(
            b.anchor(),
            &anchor[..],
            "document {i} is filed under the anchor"
        );
        assert_eq!(
            max_abs_diff(&keys(p), &keys(s)),
            0.0,
            "no preamble: document {i} as before"
        );
        let d = max_abs_diff(&keys(p), &keys(b));
        if i == 0 {
            assert_eq!(d, 0.0, "the first document stays exact");
        } else {
            assert!(d > 1e-4, "document {i} saw the preamble");
        }
    }
    let all =
        CachedDocuments::compute_behind(&model, &anchor, &tokens(8, 13), &docs, 0, &[]).unwrap();
    let d = max_abs_diff(&keys(&plain.documents[0]), &keys(&all.documents[0]));
    assert!(
        d > 1e-4,
        "with none exact, the first document saw the preamble too"
    );
    // The preamble's rows are not in the request: full prefill over the
    // assembled documents is the plain prompt's.
    let pieces = behind.pieces();
    let query = tokens(5, 14);
    let request = ReuseRequest {
        anchor: &behind.anchor,
        pieces: &pieces,
        query: &query,
    };
    let full = config(StrategyKind::Full, 1.0)
        .validate(model.config().num_layers())
        .unwrap();
    let out = run(&model, &request, &full, model.device()).unwrap();
    let prompt: Vec<u32> = anchor
        .iter()
        .chain(docs.iter().flatten())
        .chain(&query)
        .copied()
        .collect();
    assert_eq!(out.layout.tokens, prompt);
    assert!(max_abs_diff(&out.logits, &plain_prefill(&model, &prompt)) < TOL);
}
