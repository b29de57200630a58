//! The default model on a needle task of 6 documents (~1,560 tokens):
//! `full` finds the needle, `prophetkv` at ratio 1 equals `full`, and Stage I
//! ranks the needle's tokens among the top 20% of eligible rows.
//!
//! Needs `models/gemma-3-270m-q4_k_m.gguf` (the test command fetches it).

use prophetkv_model::testing::{default_model_path, max_abs_diff, workspace_root};
use prophetkv_model::{continue_greedy, load_model, LoadOptions, Model, TextTokenizer, WeightPath};
use prophetkv_reuse::{
    CachedDocuments, Piece, ReuseConfig, ReuseError, ReuseOutput, ReuseRequest, StrategyKind,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Task {
    id: String,
    prefix: String,
    documents: Vec<String>,
    question: String,
    answers: Vec<String>,
}

/// Task `code-s102-n8-t2000-3` of the dev set, cut to its first 6 documents
/// (the needle is in document 4, index 3).
fn task() -> Task {
    let text = std::fs::read_to_string(workspace_root().join("tasks/dev-niah.jsonl")).unwrap();
    let mut task: Task = text
        .lines()
        .map(|l| serde_json::from_str::<Task>(l).unwrap())
        .find(|t| t.id == "code-s102-n8-t2000-3")
        .unwrap();
    task.documents.truncate(6);
    task
}

/// A task's anchor, documents and question in one model's token ids.
struct Tokenized {
    anchor: Vec<u32>,
    documents: Vec<Vec<u32>>,
    query: Vec<u32>,
}

impl Tokenized {
    fn new(tokenizer: &TextTokenizer, task: &Task) -> Self {
        Self {
            anchor: tokenizer.prompt_ids(&task.prefix).unwrap(),
            documents: task
                .documents
                .iter()
                .map(|d| tokenizer.encode(d).unwrap())
                .collect(),
            query: tokenizer.encode(&task.question).unwrap(),
        }
    }

    /// The anchor's and the documents' caches under `model`.
    fn cached(&self, model: &Model) -> CachedDocuments {
        CachedDocuments::compute(model, &self.anchor, &self.documents).unwrap()
    }
}

/// Validates `config` for `model`, then runs the request.
fn run(
    model: &Model,
    request: &ReuseRequest<'_>,
    config: &ReuseConfig,
    device: &candle_core::Device,
) -> Result<ReuseOutput, ReuseError> {
    let config = config.validate(model.config().num_layers())?;
    prophetkv_reuse::run(model, request, &config, device)
}

fn config(strategy: StrategyKind, ratio: f64) -> ReuseConfig {
    ReuseConfig {
        strategy,
        ratio,
        ..ReuseConfig::default()
    }
}

fn answer(model: &Model, tokenizer: &TextTokenizer, out: &mut ReuseOutput) -> String {
    let logits = out.logits.clone();
    let c = continue_greedy(model, &mut out.kv, &logits, 8, tokenizer.eos(), 0).unwrap();
    tokenizer.decode(&c.output_ids).unwrap()
}

#[test]
fn prophetkv_on_the_default_model_matches_full_and_finds_the_needle() {
    let path = default_model_path();
    let options = LoadOptions {
        weight_path: WeightPath::F32,
        ..LoadOptions::default()
    };
    let model = load_model(&path, &options).unwrap();
    let tokenizer = TextTokenizer::from_path(&path).unwrap();
    let task = task();
    let needle_doc = task
        .documents
        .iter()
        .position(|d| d.contains(&task.answers[0]))
        .unwrap();
    assert_eq!(needle_doc, 3);

    let ids = Tokenized::new(&tokenizer, &task);
    let cached = ids.cached(&model);
    let pieces = cached.pieces();
    let query = ids.query.clone();
    let request = ReuseRequest {
        anchor: &cached.anchor,
        pieces: &pieces,
        query: &query,
    };

    let mut full = run(
        &model,
        &request,
        &config(StrategyKind::Full, 1.0),
        model.device(),
    )
    .unwrap();
    let context = full.layout.len();
    assert!(
        (1400..=1700).contains(&context),
        "context of {context} tokens"
    );
    let full_logits = full.logits.clone();
    let text = answer(&model, &tokenizer, &mut full);
    assert!(
        text.contains(&task.answers[0]),
        "full answered {text:?}, expected {}",
        task.answers[0]
    );

    let exact = run(
        &model,
        &request,
        &config(StrategyKind::ProphetKv, 1.0),
        model.device(),
    )
    .unwrap();
    let d = max_abs_diff(&exact.logits, &full_logits);
    assert!(d <= 1e-3, "prophetkv at ratio 1 differs from full by {d}");

    // The needle: the sentence of the needle document that holds the answer.
    let digits = tokenizer.encode(&task.answers[0]).unwrap();
    let needle_text = task.documents[needle_doc]
        .split_inclusive(". ")
        .find(|s| s.contains(&task.answers[0]))
        .unwrap()
        .trim();
    let needle = needle_slots(&tokenizer, &request_tokens(&request), needle_text, &digits);

    let mut global_only = config(StrategyKind::ProphetKv, 0.2);
    global_only.prophet.score_layers = Some(vec![5, 11, 17]);
    for (name, c) in [
        ("all layers", config(StrategyKind::ProphetKv, 0.2)),
        ("global layers", global_only),
    ] {
        let out = run(&model, &request, &c, model.device()).unwrap();
        let ranks = ranks_of(&out, &needle.sentence);
        let answer_ranks = ranks_of(&out, &needle.answer);
        let budget = out.stats.selected;
        let selected = ranks.iter().filter(|&&r| r < budget).count();
        println!(
            "{name}: needle sentence {needle_text:?}: {selected} of {} rows in the top 20% \
             ({budget} of {} eligible); best rank {}; answer-digit ranks {answer_ranks:?}; \
             {} selected rows in the needle document",
            ranks.len(),
            out.stats.eligible,
            ranks.iter().min().unwrap(),
            out.stats.selected_positions[needle_doc].len(),
        );
        if name == "all layers" {
            assert!(
                selected > 0,
                "no row of the needle sentence in Stage I's top 20%: ranks {ranks:?}"
            );
        }
    }
    let mut out = run(
        &model,
        &request,
        &config(StrategyKind::ProphetKv, 0.2),
        model.device(),
    )
    .unwrap();
    let text = answer(&model, &tokenizer, &mut out);
    println!(
        "prophetkv@0.2 answered {text:?} (expected {})",
        task.answers[0]
    );
}

/// Slots of the needle sentence and of the answer inside it.
struct Needle {
    sentence: Vec<usize>,
    answer: Vec<usize>,
}

/// The prompt's tokens in layout order.
fn request_tokens(request: &ReuseRequest<'_>) -> Vec<u32> {
    let mut ids = request.anchor.tokens().to_vec();
    for p in request.pieces {
        if let Piece::Document(d) = p {
            ids.extend_from_slice(d.tokens());
        }
    }
    ids.extend_from_slice(request.query);
    ids
}

fn find(haystack: &[u32], needle: &[u32]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("tokens present in the prompt")
}

fn needle_slots(
    tokenizer: &TextTokenizer,
    prompt: &[u32],
    sentence: &str,
    digits: &[u32],
) -> Needle {
    // The sentence's words before the answer tokenize the same inside the
    // document, except possibly the first (no leading space), so match from the second.
    let head = sentence.split(char::is_numeric).next().unwrap().trim_end();
    let head_ids = tokenizer.encode(head).unwrap();
    let start = find(prompt, &head_ids[1..]) - 1;
    let answer_at = start + find(&prompt[start..], digits);
    Needle {
        sentence: (start..answer_at + digits.len()).collect(),
        answer: (answer_at..answer_at + digits.len()).collect(),
    }
}

/// Stage I rank (0 = highest score) of each slot among the eligible rows.
fn ranks_of(out: &ReuseOutput, slots: &[usize]) -> Vec<usize> {
    let scores = out.scores.as_ref().unwrap();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut rank = vec![0usize; scores.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    slots
        .iter()
        .map(|s| rank[out.layout.eligible.iter().position(|e| e == s).unwrap()])
        .collect()
}

#[test]
fn prophetkv_at_ratio_one_equals_full_on_the_llama_family_model() {
    let path = prophetkv_model::testing::instruct_model_path();
    let tokenizer = TextTokenizer::from_path(&path).unwrap();
    let task = task();
    let ids = Tokenized::new(&tokenizer, &task);
    let query = ids.query.clone();
    for weight_path in [WeightPath::F32, WeightPath::Mixed] {
        let options = LoadOptions {
            weight_path,
            ..LoadOptions::default()
        };
        let model = load_model(&path, &options).unwrap();
        let cached = ids.cached(&model);
        let pieces = cached.pieces();
        let request = ReuseRequest {
            anchor: &cached.anchor,
            pieces: &pieces,
            query: &query,
        };
        let full = run(
            &model,
            &request,
            &config(StrategyKind::Full, 1.0),
            model.device(),
        )
        .unwrap();
        let exact = run(
            &model,
            &request,
            &config(StrategyKind::ProphetKv, 1.0),
            model.device(),
        )
        .unwrap();
        let d = max_abs_diff(&exact.logits, &full.logits);
        let per_layer: Vec<String> = (0..full.kv.num_layers())
            .map(|l| {
                let dk = max_abs_diff(&exact.kv.k(l).unwrap(), &full.kv.k(l).unwrap());
                let dv = max_abs_diff(&exact.kv.v(l).unwrap(), &full.kv.v(l).unwrap());
                format!("{l}:{dk:.1e}/{dv:.1e}")
            })
            .collect();
        println!("{weight_path:?}: logits differ by {d}; K/V by layer {per_layer:?}");
        assert!(
            d <= 1e-3,
            "{weight_path:?}: prophetkv at ratio 1 differs from full by {d}"
        );
    }
}
