//! The engine end to end on a tiny model: generation, batching, cancellation,
//! overload, sampling and stops.

use std::time::{Duration, Instant};

use prophetkv_engine::testing::{load_tiny, tiny_engine, tiny_engine_behind, TinyEngine};
use prophetkv_engine::{
    DocumentRef, EngineConfig, EngineError, EngineHandle, Event, FinishReason, GenerateRequest,
    OutputConstraint, ReuseConfig, SamplingParams, Segment, StrategyKind, Summary,
};
use prophetkv_model::testing::{tiny_text, tokens};
use prophetkv_model::{continue_greedy, Model, TextTokenizer};
use tokio::sync::mpsc::UnboundedReceiver;

struct Fixture {
    tiny: TinyEngine,
    engine: EngineHandle,
    tokenizer: TextTokenizer,
    reference: Model,
}

const INSTRUCTION: &str = "t5 t6 ";

fn fixture(config: EngineConfig) -> Fixture {
    let tiny = tiny_engine(INSTRUCTION, config, None);
    Fixture {
        engine: tiny.engine.clone(),
        tokenizer: tiny.tokenizer.clone(),
        reference: load_tiny(tiny.model_dir.path()),
        tiny,
    }
}

/// Validates and submits, as the HTTP layer does.
fn submit(
    engine: &EngineHandle,
    request: GenerateRequest,
) -> Result<UnboundedReceiver<Event>, EngineError> {
    engine.submit(engine.validate(request)?)
}

fn request(docs: Vec<DocumentRef>, query: &str, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        tenant: "t".into(),
        segments: docs.into_iter().map(Segment::Document).collect(),
        query: query.into(),
        reuse: ReuseConfig {
            strategy: StrategyKind::ProphetKv,
            ratio: 0.5,
            ..ReuseConfig::default()
        },
        sampling: SamplingParams::default(),
        max_tokens,
        stop: vec![],
        layout_stop: None,
        constraint: None,
        explain: false,
    }
}

/// All text of a request and its summary (or its error).
async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<(String, Summary), EngineError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Started { .. } => {}
            Event::Text { text: t, .. } => text.push_str(&t),
            Event::Finished(s) => return Ok((text, *s)),
            Event::Failed(e) => return Err(e),
        }
    }
    panic!("stream ended without Finished");
}

#[tokio::test]
async fn greedy_generation_with_full_reuse_equals_the_models_own_greedy_decode() {
    let f = fixture(EngineConfig::default());
    let docs = [tiny_text(&tokens(30, 1)), tiny_text(&tokens(25, 2))];
    let query = tiny_text(&tokens(5, 3));
    let mut req = request(
        docs.iter().cloned().map(DocumentRef::Text).collect(),
        &query,
        8,
    );
    req.reuse.strategy = StrategyKind::Full;
    let (text, summary) = collect(submit(&f.engine, req).unwrap()).await.unwrap();

    let mut ids = f.tokenizer.prompt_ids(INSTRUCTION).unwrap();
    for d in &docs {
        ids.extend(f.tokenizer.encode(d).unwrap());
    }
    ids.extend(f.tokenizer.encode(&query).unwrap());
    let positions: Vec<u32> = (0..ids.len() as u32).collect();
    let (mut kv, last) = f.reference.prefill(&ids, &positions).unwrap();
    let logits = f.reference.logits(&last).unwrap();
    let c = continue_greedy(&f.reference, &mut kv, &logits, 8, f.tokenizer.eos(), 0).unwrap();
    let expected_ids: Vec<u32> = c
        .output_ids
        .into_iter()
        .filter(|t| !f.tokenizer.eos().contains(t))
        .collect();
    assert_eq!(text, f.tokenizer.decode(&expected_ids).unwrap());
    assert_eq!(summary.usage.prompt_tokens, ids.len());
    assert_eq!(summary.usage.completion_tokens, expected_ids.len());
    assert_eq!(summary.hits.computed, 2);
}

#[tokio::test]
async fn behind_a_preamble_the_first_document_is_eligible_too() {
    /// Eligible rows of a request over two documents of 30 and 25 tokens.
    async fn eligible(preamble: &str) -> usize {
        let tiny = tiny_engine_behind(INSTRUCTION, preamble, EngineConfig::default(), None);
        let docs = [tiny_text(&tokens(30, 1)), tiny_text(&tokens(25, 2))];
        let req = request(
            docs.into_iter().map(DocumentRef::Text).collect(),
            &tiny_text(&tokens(5, 3)),
            1,
        );
        let (_, summary) = collect(submit(&tiny.engine, req).unwrap()).await.unwrap();
        summary.reuse.eligible
    }
    // Cached after the anchor alone, the first document is exact.
    assert_eq!(eligible("").await, 25);
    // Behind a preamble no document is exact: both may be repaired.
    assert_eq!(eligible(&tiny_text(&tokens(6, 4))).await, 55);
}

#[tokio::test]
async fn concurrent_requests_share_decode_steps_and_all_finish() {
    let f = fixture(EngineConfig {
        max_batch: 8,
        max_queue: 16,
        max_prefills_per_step: 8,
        ..EngineConfig::default()
    });
    let doc = tiny_text(&tokens(40, 4));
    let receivers: Vec<_> = (0..6)
        .map(|i| {
            submit(
                &f.engine,
                request(
                    vec![DocumentRef::Text(doc.clone())],
                    &tiny_text(&tokens(4, 10 + i)),
                    12,
                ),
            )
            .unwrap()
        })
        .collect();
    for rx in receivers {
        let (_, summary) = collect(rx).await.unwrap();
        assert!(summary.usage.completion_tokens > 0);
    }
    let m = f.engine.metrics();
    assert!(m.largest_batch > 1, "decode batch never exceeded 1: {m:?}");
    assert_eq!(m.hits[4], 1, "the shared document is computed once: {m:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_is_cancelled_and_frees_its_slot() {
    let f = fixture(EngineConfig {
        max_batch: 1,
        max_queue: 4,
        max_prefills_per_step: 1,
        ..EngineConfig::default()
    });
    let mut rx = submit(&f.engine, request(vec![], &tiny_text(&tokens(4, 5)), 900)).unwrap();
    assert!(matches!(rx.recv().await, Some(Event::Started { .. })));
    drop(rx);
    // With max_batch 1, a second request can only run once the first is gone.
    let started = Instant::now();
    let (_, summary) =
        collect(submit(&f.engine, request(vec![], &tiny_text(&tokens(4, 6)), 3)).unwrap())
            .await
            .unwrap();
    assert!(summary.usage.completion_tokens > 0);
    assert!(started.elapsed() < Duration::from_secs(30));
    // The gauge is updated at the end of the worker's step.
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.engine.metrics().running != 0 {
        assert!(
            Instant::now() < deadline,
            "a finished sequence still counts as running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_queue_refuses_new_requests() {
    let f = fixture(EngineConfig {
        max_batch: 1,
        max_queue: 2,
        max_prefills_per_step: 1,
        ..EngineConfig::default()
    });
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        match submit(
            &f.engine,
            request(vec![], &tiny_text(&tokens(4, 20 + i)), 40),
        ) {
            Ok(rx) => accepted.push(rx),
            Err(EngineError::QueueFull { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "a queue of 2 accepted 12 requests at once");
    for rx in accepted {
        collect(rx).await.unwrap();
    }
}

#[tokio::test]
async fn seeded_sampling_reproduces_and_stop_strings_are_not_emitted() {
    let f = fixture(EngineConfig::default());
    let sampled = |seed| {
        let mut r = request(vec![], &tiny_text(&tokens(6, 7)), 16);
        r.sampling = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            top_k: 0,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        r
    };
    let a = collect(submit(&f.engine, sampled(42)).unwrap())
        .await
        .unwrap()
        .0;
    let b = collect(submit(&f.engine, sampled(42)).unwrap())
        .await
        .unwrap()
        .0;
    assert_eq!(a, b);
    // Stop at the second word of the greedy text: only the first is emitted.
    let (greedy, _) =
        collect(submit(&f.engine, request(vec![], &tiny_text(&tokens(6, 7)), 6)).unwrap())
            .await
            .unwrap();
    let words: Vec<&str> = greedy.split_whitespace().collect();
    assert!(words.len() >= 2, "{greedy:?}");
    let mut r = request(vec![], &tiny_text(&tokens(6, 7)), 6);
    r.stop = vec![format!(" {}", words[1])];
    let (text, summary) = collect(submit(&f.engine, r).unwrap()).await.unwrap();
    assert_eq!(text.trim(), words[0]);
    assert_eq!(summary.reason, FinishReason::Stop);
}

#[tokio::test]
async fn unknown_documents_and_bad_fields_fail_cleanly() {
    let f = fixture(EngineConfig::default());
    let err = collect(
        submit(
            &f.engine,
            request(vec![DocumentRef::Id("nope".into())], "t3", 4),
        )
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EngineError::UnknownDocument(_)), "{err}");
    let mut r = request(vec![], "t3", 4);
    r.reuse.ratio = 2.0;
    assert!(matches!(submit(&f.engine, r), Err(EngineError::Reuse(_))));
    let r = request(vec![], "t3", 5000);
    let err = collect(submit(&f.engine, r).unwrap()).await.unwrap_err();
    assert!(matches!(err, EngineError::ContextOverflow { .. }), "{err}");
    // A registered document is found by id, and the engine still serves after errors.
    let record = f
        .tiny
        .store
        .register(
            "t",
            prophetkv_engine::NewDocument {
                text: "t9 t10".into(),
                ..Default::default()
            },
            vec![9, 10],
        )
        .unwrap();
    let (_, summary) = collect(
        submit(
            &f.engine,
            request(vec![DocumentRef::Id(record.id)], "t3", 2),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(summary.hits.computed, 1);
}

#[tokio::test]
async fn logprobs_are_the_models_own_log_softmax_at_each_generated_step() {
    let f = fixture(EngineConfig::default());
    let doc = tiny_text(&tokens(30, 21));
    let query = tiny_text(&tokens(5, 22));
    let mut req = request(vec![DocumentRef::Text(doc.clone())], &query, 6);
    req.reuse.strategy = StrategyKind::Full;
    req.sampling = SamplingParams {
        temperature: 0.9,
        seed: Some(4),
        logprobs: Some(5),
        ..SamplingParams::default()
    };
    let mut rx = submit(&f.engine, req).unwrap();
    let mut steps = Vec::new();
    let mut summary = None;
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text { logprobs, .. } => steps.extend(logprobs),
            Event::Finished(s) => summary = Some(*s),
            Event::Failed(e) => panic!("{e}"),
            Event::Started { .. } => {}
        }
    }
    let summary = summary.unwrap();
    assert_eq!(steps.len(), summary.usage.completion_tokens);

    // The whole sequence so far, prefilled from scratch at each step.
    let mut ids = f.tokenizer.prompt_ids(INSTRUCTION).unwrap();
    ids.extend(f.tokenizer.encode(&doc).unwrap());
    ids.extend(f.tokenizer.encode(&query).unwrap());
    for step in &steps {
        let positions: Vec<u32> = (0..ids.len() as u32).collect();
        let (_, last) = f.reference.prefill(&ids, &positions).unwrap();
        let logits: Vec<f32> = f
            .reference
            .logits(&last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_z = max as f64
            + logits
                .iter()
                .map(|&l| ((l - max) as f64).exp())
                .sum::<f64>()
                .ln();
        let want = |id: u32| (logits[id as usize] as f64 - log_z) as f32;
        assert!((step.chosen.logprob - want(step.chosen.id)).abs() < 1e-4);
        assert_eq!(step.top.len(), 5);
        let mut best: Vec<u32> = (0..logits.len() as u32).collect();
        best.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        for (alt, id) in step.top.iter().zip(&best) {
            assert_eq!(alt.id, *id);
            assert!((alt.logprob - want(alt.id)).abs() < 1e-4);
        }
        ids.push(step.chosen.id);
    }
}

#[tokio::test]
async fn a_grammar_holds_the_output_to_its_language_and_ends_it_when_complete() {
    let f = fixture(EngineConfig::default());
    let run = |constraint: Option<OutputConstraint>, temperature: f32| {
        let mut req = request(vec![], &tiny_text(&tokens(5, 31)), 12);
        req.sampling.temperature = temperature;
        req.sampling.seed = Some(9);
        req.constraint = constraint;
        let rx = submit(&f.engine, req).unwrap();
        async move { collect(rx).await }
    };
    // The tiny vocabulary spells "t0".."t63" (one-digit ones here, so that
    // no token is a dead-end prefix of another, as "t1" is of "t17").
    let exact = OutputConstraint::Lark(r#"start: "t7" "t5" "t9""#.into());
    let (text, summary) = run(Some(exact), 1.0).await.unwrap();
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["t7", "t5", "t9"]
    );
    assert_eq!(summary.reason, FinishReason::Stop);
    assert_eq!(summary.usage.completion_tokens, 3);
    // A choice: every token is t3 or t4, however it samples.
    let either = OutputConstraint::Lark(r#"start: ("t3" | "t4")+"#.into());
    let (text, _) = run(Some(either), 1.5).await.unwrap();
    assert!(!text.is_empty());
    assert!(
        text.split_whitespace().all(|t| t == "t3" || t == "t4"),
        "{text}"
    );
    // A grammar that does not compile is the client's error.
    let broken = OutputConstraint::Lark("start: (".into());
    assert!(matches!(
        run(Some(broken), 0.0).await,
        Err(EngineError::Invalid { field: "tools", .. })
    ));
}
