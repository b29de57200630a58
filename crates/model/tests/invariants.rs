//! The runtime's invariants on tiny random models (f32, tolerance 1e-4).

use candle_core::Tensor;
use prophetkv_model::testing::{max_abs_diff, tiny, tokens, Tiny, ALL};
use prophetkv_model::{load_model, Forward, LoadOptions, ModelError, Observe, Rows, WeightPath};

const TOL: f32 = 1e-4;

fn positions(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

/// Logits of every row after a one-shot prefill.
fn prefill_logits(model: &prophetkv_model::Model, ids: &[u32]) -> Tensor {
    let mut kv = model.new_kv().unwrap();
    let n = ids.len() as u32;
    let out = model
        .forward_rows(&mut kv, &Rows::append(ids, &positions(0..n), 0), None)
        .unwrap();
    model.logits(&out.hidden).unwrap()
}

#[test]
fn one_shot_prefill_equals_chunked_prefill_equals_token_by_token_decode() {
    // 300 rows: longer than the attention's query chunk and 37x the window.
    let ids = tokens(300, 1);
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let one_shot = prefill_logits(&model, &ids);

        let mut kv = model.new_kv().unwrap();
        let mut chunked = Vec::new();
        for (start, end) in [(0usize, 5usize), (5, 131), (131, 300)] {
            let rows = Rows::append(
                &ids[start..end],
                &positions(start as u32..end as u32),
                start,
            );
            let out = model.forward_rows(&mut kv, &rows, None).unwrap();
            chunked.push(model.logits(&out.hidden).unwrap());
        }
        let chunked = Tensor::cat(&chunked, 0).unwrap();
        let d = max_abs_diff(&one_shot, &chunked);
        assert!(d < TOL, "{kind:?}: chunked prefill differs by {d}");

        let (mut kv, last) = model.prefill(&ids[..1], &[0]).unwrap();
        let mut stepwise = vec![model.logits(&last).unwrap()];
        for &t in &ids[1..] {
            stepwise.push(model.decode(&mut [&mut kv], &[t]).unwrap());
        }
        let stepwise = Tensor::cat(&stepwise, 0).unwrap();
        let d = max_abs_diff(&one_shot, &stepwise);
        assert!(d < TOL, "{kind:?}: token-by-token decode differs by {d}");
    }
}

#[test]
fn batched_decode_equals_decoding_each_sequence_alone() {
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let a = tokens(20, 2);
        let b = tokens(33, 3);
        let (mut ka, _) = model.prefill(&a, &positions(0..20)).unwrap();
        let (mut kb, _) = model.prefill(&b, &positions(0..33)).unwrap();
        let (mut ka2, mut kb2) = (ka.try_clone().unwrap(), kb.try_clone().unwrap());
        let batched = model.decode(&mut [&mut ka, &mut kb], &[5, 9]).unwrap();
        let alone_a = model.decode(&mut [&mut ka2], &[5]).unwrap();
        let alone_b = model.decode(&mut [&mut kb2], &[9]).unwrap();
        let alone = Tensor::cat(&[alone_a, alone_b], 0).unwrap();
        let d = max_abs_diff(&batched, &alone);
        assert!(d < TOL, "{kind:?}: batched decode differs by {d}");
        assert_eq!(ka.len(), 21);
        assert_eq!(kb.len(), 34);
    }
}

#[test]
fn keys_cached_at_p_and_rerotated_to_q_equal_keys_computed_at_q() {
    let ids = tokens(40, 4);
    let shift = 137u32;
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let (at_p, _) = model.prefill(&ids, &positions(0..40)).unwrap();
        let (at_q, _) = model.prefill(&ids, &positions(shift..shift + 40)).unwrap();
        let q_pos = positions(shift..shift + 40);
        for layer in 0..at_p.num_layers() {
            let moved = model
                .rope_k(layer, &at_p.k_raw(layer).unwrap(), &q_pos)
                .unwrap();
            let d = max_abs_diff(&moved, &at_q.k(layer).unwrap());
            assert!(
                d < TOL,
                "{kind:?} layer {layer}: re-rotated keys differ by {d}"
            );
        }
        // A whole cache moved to q decodes like one computed at q.
        let layers = (0..at_p.num_layers())
            .map(|l| (at_p.k_raw(l).unwrap(), at_p.v(l).unwrap()))
            .collect();
        let mut moved = model.kv_from_raw(q_pos.clone(), layers).unwrap();
        let mut direct = at_q.try_clone().unwrap();
        let a = model.decode(&mut [&mut moved], &[3]).unwrap();
        let b = model.decode(&mut [&mut direct], &[3]).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(
            d < TOL,
            "{kind:?}: decode after moving the cache differs by {d}"
        );
    }
}

#[test]
fn forward_rows_over_all_rows_equals_prefill() {
    let ids = tokens(50, 5);
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let (mut kv, _) = model.prefill(&ids, &positions(0..50)).unwrap();
        let reference = kv.try_clone().unwrap();
        let out_prefill = prefill_logits(&model, &ids);
        // Overwrite every slot with the same rows: a fixed point.
        let rows = Rows {
            tokens: ids.clone(),
            positions: positions(0..50),
            slots: (0..50).collect(),
        };
        let out = model.forward_rows(&mut kv, &rows, None).unwrap();
        let d = max_abs_diff(&model.logits(&out.hidden).unwrap(), &out_prefill);
        assert!(d < TOL, "{kind:?}: forward_rows logits differ by {d}");
        for l in 0..kv.num_layers() {
            let dk = max_abs_diff(&kv.k(l).unwrap(), &reference.k(l).unwrap());
            let dv = max_abs_diff(&kv.v(l).unwrap(), &reference.v(l).unwrap());
            assert!(
                dk < TOL && dv < TOL,
                "{kind:?} layer {l}: K/V changed by {dk}/{dv}"
            );
        }
        // Recomputing a scattered subset also leaves an exact cache unchanged.
        let subset: Vec<usize> = vec![3, 7, 8, 20, 41, 49];
        let rows = Rows {
            tokens: subset.iter().map(|&s| ids[s]).collect(),
            positions: subset.iter().map(|&s| s as u32).collect(),
            slots: subset.clone(),
        };
        let out = model.forward_rows(&mut kv, &rows, None).unwrap();
        let last = model.logits(&out.hidden.narrow(0, 5, 1).unwrap()).unwrap();
        let d = max_abs_diff(&last, &out_prefill.narrow(0, 49, 1).unwrap());
        assert!(d < TOL, "{kind:?}: subset recompute logits differ by {d}");
    }
}

#[test]
fn attention_mass_sums_to_one_over_all_keys_per_row() {
    let ids = tokens(30, 6);
    for kind in ALL {
        let (_dir, model) = tiny(kind);
        let (mut kv, _) = model.prefill(&ids[..24], &positions(0..24)).unwrap();
        let rows = Rows::append(&ids[24..], &positions(24..30), 24);
        let out = model.forward_rows(&mut kv, &rows, Some(0..30)).unwrap();
        let attention = out.attention.expect("attention requested");
        assert_eq!(attention.len(), kv.num_layers());
        for (l, mass) in attention.iter().enumerate() {
            assert_eq!(mass.dims(), &[6, 30]);
            let sums = mass.sum(1).unwrap().to_vec1::<f32>().unwrap();
            for s in sums {
                assert!((s - 1.0).abs() < 1e-5, "{kind:?} layer {l}: row mass {s}");
            }
            // No mass on future keys: row i (position 24 + i) sees slots <= 24 + i.
            let m = mass.to_vec2::<f32>().unwrap();
            assert_eq!(m[0][25], 0.0);
        }
    }
}

#[test]
fn sliding_window_layers_give_no_mass_outside_the_window() {
    let ids = tokens(30, 7);
    let (_dir, model) = tiny(Tiny::Gemma3);
    let (mut kv, _) = model.prefill(&ids[..29], &positions(0..29)).unwrap();
    let rows = Rows::append(&ids[29..], &[29], 29);
    let out = model.forward_rows(&mut kv, &rows, Some(0..30)).unwrap();
    let attention = out.attention.unwrap();
    let window = prophetkv_model::testing::WINDOW;
    for (l, mass) in attention.iter().enumerate() {
        let m = mass.to_vec2::<f32>().unwrap();
        let outside: f32 = m[0][..30 - window].iter().sum();
        if l < 2 {
            assert_eq!(outside, 0.0, "sliding layer {l} attends outside its window");
        } else {
            assert!(
                outside > 0.0,
                "global layer {l} should see the whole sequence"
            );
        }
    }
}

#[test]
fn observed_attention_equals_a_softmax_over_every_key_under_sliding_windows() {
    // Attention observation reads only the keys inside each window; the
    // `Scores` observation scores every key of the range and masks. Over
    // the same keys, with the rows attending to all of them, they agree.
    let ids = tokens(40, 9);
    let (_dir, model) = tiny(Tiny::Gemma3);
    let (kv, _) = model.prefill(&ids[..34], &positions(0..34)).unwrap();
    let rows = Rows::append(&ids[34..], &positions(34..40), 34);
    let observed = |observe: Observe| {
        let mut kv = kv.try_clone().unwrap();
        let mut pass = Forward::new(&rows, kv.num_layers());
        pass.observe = observe;
        model.forward(&mut kv, &pass).unwrap().attention.unwrap()
    };
    let attention = observed(Observe::Attention(0..40));
    let scores = observed(Observe::Scores(0..40));
    for (l, (a, s)) in attention.iter().zip(&scores).enumerate() {
        assert_eq!(a.dims(), &[6, 40]);
        let d = max_abs_diff(a, s);
        assert!(d < 1e-6, "layer {l}: observed attention differs by {d}");
    }
}

#[test]
fn malformed_rows_are_errors_not_panics() {
    let (_dir, model) = tiny(Tiny::Llama);
    let (mut kv, _) = model.prefill(&tokens(10, 8), &positions(0..10)).unwrap();
    let bad = [
        Rows {
            tokens: vec![1, 2],
            positions: vec![10],
            slots: vec![10, 11],
        },
        Rows {
            tokens: vec![1],
            positions: vec![10],
            slots: vec![12],
        },
        Rows {
            tokens: vec![1, 2],
            positions: vec![3, 4],
            slots: vec![3, 3],
        },
        Rows {
            tokens: vec![prophetkv_model::testing::VOCAB as u32],
            positions: vec![10],
            slots: vec![10],
        },
        Rows {
            tokens: vec![],
            positions: vec![],
            slots: vec![],
        },
    ];
    for rows in bad {
        let err = model.forward_rows(&mut kv, &rows, None).unwrap_err();
        assert!(matches!(err, ModelError::Input(_)), "{rows:?}: {err}");
        assert_eq!(kv.len(), 10, "a rejected call must not change the cache");
    }
    let far = Rows::append(&[1], &[5000], 10);
    let err = model.forward_rows(&mut kv, &far, None).unwrap_err();
    assert!(matches!(err, ModelError::ContextOverflow { .. }), "{err}");
    let err = model.decode(&mut [&mut kv], &[1, 2]).unwrap_err();
    assert!(matches!(err, ModelError::Input(_)), "{err}");
}

/// The largest |value| of `t`.
fn largest_magnitude(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The tiny model of `kind` with f32 weights, and the same weights on `path`.
fn tiny_in(kind: Tiny, path: WeightPath) -> (prophetkv_model::Model, prophetkv_model::Model) {
    let (dir, f32_model) = tiny(kind);
    let options = LoadOptions {
        weight_path: path,
        ..LoadOptions::default()
    };
    (f32_model, load_model(dir.path(), &options).unwrap())
}

#[test]
fn mixed_path_prefills_exactly_like_f32_and_decodes_within_8_bit_rounding() {
    let ids = tokens(40, 11);
    for kind in ALL {
        let (f32_model, mixed) = tiny_in(kind, WeightPath::Mixed);
        assert!(
            mixed.resident_bytes() < f32_model.resident_bytes() * 2,
            "{kind:?}: the mixed path keeps at most one extra (quantized) copy"
        );

        // 40 rows: the projections take the f32 GEMM, the same weights as f32's.
        let hidden = |m: &prophetkv_model::Model| {
            let mut kv = m.new_kv().unwrap();
            let rows = Rows::append(&ids, &positions(0..40), 0);
            m.forward_rows(&mut kv, &rows, None).unwrap().hidden
        };
        let d = max_abs_diff(&hidden(&f32_model), &hidden(&mixed));
        assert!(d < TOL, "{kind:?}: mixed prefill differs from f32 by {d}");

        // Decode steps multiply Q8_0 weights by 8-bit activations.
        let (mut kv_f, _) = f32_model.prefill(&ids, &positions(0..40)).unwrap();
        let (mut kv_m, _) = mixed.prefill(&ids, &positions(0..40)).unwrap();
        for &t in &ids[..8] {
            let want = f32_model.decode(&mut [&mut kv_f], &[t]).unwrap();
            let got = mixed.decode(&mut [&mut kv_m], &[t]).unwrap();
            let scale = largest_magnitude(&want);
            let d = max_abs_diff(&want, &got);
            assert!(
                d < 0.05 * scale.max(1.0),
                "{kind:?}: mixed decode off by {d} (logits up to {scale})"
            );
            assert!(d > 0.0, "{kind:?}: decode should run the quantized copy");
        }
    }
}

#[test]
fn mixed_bf16_prompt_rows_do_not_depend_on_their_pass_and_stay_near_f32() {
    let ids = tokens(40, 12);
    for kind in ALL {
        let (f32_model, bf16) = tiny_in(kind, WeightPath::MixedBf16);

        // One pass of 40 rows, and the same rows as 17 then 23: each row's
        // keys, values and output must be the same either way (reuse at
        // ratio 1 equals full prefill).
        let mut kv = bf16.new_kv().unwrap();
        let whole = bf16
            .forward_rows(&mut kv, &Rows::append(&ids, &positions(0..40), 0), None)
            .unwrap()
            .hidden;
        let mut kv = bf16.new_kv().unwrap();
        bf16.forward_rows(
            &mut kv,
            &Rows::append(&ids[..17], &positions(0..17), 0),
            None,
        )
        .unwrap();
        let rest = bf16
            .forward_rows(
                &mut kv,
                &Rows::append(&ids[17..], &positions(17..40), 17),
                None,
            )
            .unwrap()
            .hidden;
        let d = max_abs_diff(&whole.narrow(0, 17, 23).unwrap(), &rest);
        if prophetkv_model::bf16_prompt_gemm() {
            assert_eq!(d, 0.0, "{kind:?}: a row's output depends on its pass");
        } else {
            // Without AVX-512 BF16 this is `mixed`: candle's f32 GEMM picks
            // its blocking by the row count, so a split pass may sum in
            // another order.
            assert!(
                d < TOL,
                "{kind:?}: a row's output depends on its pass by {d}"
            );
        }

        let mut kv = f32_model.new_kv().unwrap();
        let exact = f32_model
            .forward_rows(&mut kv, &Rows::append(&ids, &positions(0..40), 0), None)
            .unwrap()
            .hidden;
        let scale = largest_magnitude(&exact);
        let d = max_abs_diff(&exact, &whole);
        assert!(
            d < 0.05 * scale.max(1.0),
            "{kind:?}: bf16 prefill off by {d} (hidden states up to {scale})"
        );
    }
}
