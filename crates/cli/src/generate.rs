//! `prophetkv generate`: greedy continuation of one prompt, optionally with
//! documents reused from their own KV caches.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use prophetkv_model::{
    continue_greedy, generate_greedy, load_model, LoadOptions, Model, TextTokenizer, WeightPath,
};
use prophetkv_reuse::{CachedDocuments, ReuseRequest, ReuseStats};
use serde::Serialize;

use crate::output::print_line;
use crate::strategy_args::StrategyArgs;

/// Default model location, as left by `scripts/fetch-model.sh`.
pub const DEFAULT_MODEL: &str = "models/gemma-3-270m-q4_k_m.gguf";

/// Weight representation for the matmuls.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// Quantized weights for decode steps, their f32 form for prefill.
    Mixed,
    /// Mixed, with prefill's copy in bf16 on CPUs with AVX-512 BF16 (the default).
    MixedBf16,
    /// Quantized GGUF weights as stored.
    Q,
    /// Weights dequantized to f32 (the exactness reference).
    F32,
}

impl From<DtypeArg> for WeightPath {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::Mixed => WeightPath::Mixed,
            DtypeArg::MixedBf16 => WeightPath::MixedBf16,
            DtypeArg::Q => WeightPath::Quantized,
            DtypeArg::F32 => WeightPath::F32,
        }
    }
}

/// Arguments of `prophetkv generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model: a GGUF file or a directory with config.json + *.safetensors + tokenizer.json.
    #[arg(long, env = "PROPHETKV_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// The prompt (with documents: the question, which ends where the answer starts).
    #[arg(long)]
    prompt: String,
    /// Instruction prefix placed after BOS; with documents it is their anchor.
    #[arg(long, default_value = "")]
    prefix: String,
    /// A document placed between the prefix and the prompt (repeatable, in order).
    #[arg(long = "document")]
    documents: Vec<String>,
    /// A JSON file holding a list of document strings (after any --document).
    #[arg(long)]
    documents_file: Option<PathBuf>,
    #[command(flatten)]
    reuse: StrategyArgs,
    /// Most tokens to generate (generation also stops at EOS).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// How many of the highest logits at the last prompt position to report.
    #[arg(long, default_value_t = 20)]
    top_logprobs: usize,
    /// Weight path: mixed (quantized decode, f32 prefill), quantized (q) or f32.
    #[arg(long, value_enum, default_value = "mixed-bf16")]
    dtype: DtypeArg,
    /// Print one JSON object instead of the text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct GenerateOutput {
    prompt_ids: Vec<u32>,
    output_ids: Vec<u32>,
    text: String,
    first_step_top: Vec<(u32, f32)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<ReuseStats>,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = LoadOptions {
        weight_path: args.dtype.into(),
        ..LoadOptions::default()
    };
    let model = load_model(&args.model, &options)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let tokenizer = TextTokenizer::from_path(&args.model)
        .with_context(|| format!("loading tokenizer of {}", args.model.display()))?;
    let config = args.reuse.config(model.config())?;
    let documents = read_documents(&args.documents, args.documents_file.as_deref())?;
    tracing::info!(
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );

    let gen_start = Instant::now();
    let out = if documents.is_empty() {
        let mut ids = tokenizer.prompt_ids(&args.prefix)?;
        ids.extend(tokenizer.encode(&args.prompt)?);
        let g = generate_greedy(
            &model,
            &ids,
            args.max_tokens,
            tokenizer.eos(),
            args.top_logprobs,
        )?;
        GenerateOutput {
            text: tokenizer.decode(&g.output_ids)?,
            prompt_ids: g.prompt_ids,
            output_ids: g.output_ids,
            first_step_top: g.first_step_top,
            stats: None,
        }
    } else {
        with_documents(&model, &tokenizer, &args, &documents, &config)?
    };
    tracing::info!(
        generate_ms = gen_start.elapsed().as_millis() as u64,
        prompt_tokens = out.prompt_ids.len(),
        output_tokens = out.output_ids.len(),
        "generated"
    );
    if args.json {
        print_line(&serde_json::to_string(&out)?)
    } else {
        print_line(&out.text)
    }
}

/// `--document` values, then the strings of `--documents-file`.
fn read_documents(inline: &[String], file: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let mut documents = inline.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading documents file {}", path.display()))?;
        let listed: Vec<String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "documents file {} must hold a JSON list of strings",
                path.display()
            )
        })?;
        documents.extend(listed);
    }
    Ok(documents)
}

/// Caches every document after the anchor, assembles, recomputes per the
/// strategy, then decodes greedily from the corrected cache.
fn with_documents(
    model: &Model,
    tokenizer: &TextTokenizer,
    args: &GenerateArgs,
    documents: &[String],
    config: &prophetkv_reuse::ReuseConfig,
) -> anyhow::Result<GenerateOutput> {
    let lookup = Instant::now();
    let anchor_ids = tokenizer.prompt_ids(&args.prefix)?;
    if anchor_ids.is_empty() {
        bail!("documents need an anchor: the model has no BOS token and --prefix is empty");
    }
    let ids = documents
        .iter()
        .map(|d| tokenizer.encode(d))
        .collect::<prophetkv_model::Result<Vec<_>>>()?;
    let cached =
        CachedDocuments::compute_keeping(model, &anchor_ids, &ids, &config.hidden_layers())?;
    let lookup_ms = lookup.elapsed().as_secs_f64() * 1e3;
    let query = tokenizer.encode(&args.prompt)?;
    let pieces = cached.pieces();
    let request = ReuseRequest {
        anchor: &cached.anchor,
        pieces: &pieces,
        query: &query,
    };
    let config = config.validate(model.config().num_layers())?;
    let mut out = prophetkv_reuse::run(model, &request, &config, model.device())?;
    out.stats.timings.lookup_ms = lookup_ms;
    let c = continue_greedy(
        model,
        &mut out.kv,
        &out.logits,
        args.max_tokens,
        tokenizer.eos(),
        args.top_logprobs,
    )?;
    Ok(GenerateOutput {
        text: tokenizer.decode(&c.output_ids)?,
        prompt_ids: out.layout.tokens,
        output_ids: c.output_ids,
        first_step_top: c.first_step_top,
        stats: Some(out.stats),
    })
}
