//! `prophetkv generate`: greedy continuation of one prompt.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use prophetkv_model::{generate_greedy, load_model, LoadOptions, TextTokenizer, WeightPath};
use serde::Serialize;

/// Default model location, as left by `scripts/fetch-model.sh`.
pub const DEFAULT_MODEL: &str = "models/gemma-3-270m-q4_k_m.gguf";

/// Weight representation for the matmuls.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// Quantized GGUF weights as stored (fastest decode).
    Q,
    /// Weights dequantized to f32 (exact reference, fastest prefill).
    F32,
}

impl From<DtypeArg> for WeightPath {
    fn from(d: DtypeArg) -> Self {
        match d {
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
    /// The prompt; BOS is added when the model uses one.
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate (generation also stops at EOS).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// How many of the highest logits at the last prompt position to report.
    #[arg(long, default_value_t = 20)]
    top_logprobs: usize,
    /// Weight path: quantized (q) or dequantized f32.
    #[arg(long, value_enum, default_value = "q")]
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
    let loaded = started.elapsed();
    let prompt_ids = tokenizer.prompt_ids(&args.prompt)?;
    let gen_start = Instant::now();
    let generation = generate_greedy(
        &model,
        &prompt_ids,
        args.max_tokens,
        tokenizer.eos(),
        args.top_logprobs,
    )?;
    let text = tokenizer.decode(&generation.output_ids)?;
    tracing::info!(
        load_ms = loaded.as_millis() as u64,
        generate_ms = gen_start.elapsed().as_millis() as u64,
        prompt_tokens = prompt_ids.len(),
        output_tokens = generation.output_ids.len(),
        "generated"
    );
    if args.json {
        let out = GenerateOutput {
            prompt_ids: generation.prompt_ids,
            output_ids: generation.output_ids,
            text,
            first_step_top: generation.first_step_top,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{text}");
    }
    Ok(())
}
