//! `prophetkv tasks gen`, `prophetkv eval` and `prophetkv bench ttft`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use prophetkv_eval::attention_bench::{attention_markdown, bench_attention, standard_cases};
use prophetkv_eval::bench::{bench_ttft, ttft_chart, ttft_markdown, TtftSpec};
use prophetkv_eval::decode_bench::{bench_decode, decode_markdown, DecodeSpec};
use prophetkv_eval::eval::{evaluate, file_blake3, partial_outcomes, Progress, RunIdentity};
use prophetkv_eval::generate::{generate, GenSpec, TaskKind};
use prophetkv_eval::journal::Journal;
use prophetkv_eval::numerics::{compare, NumericsSpec, Runtimes};
use prophetkv_eval::report::{self, compare_with_run, comparison_markdown, markdown, summarize};
use prophetkv_eval::run::{Arm, Evaluator, Outcome};
use prophetkv_eval::task::{load_tasks, write_tasks};
use prophetkv_model::{DType, Model, ModelConfig, TextTokenizer};
use prophetkv_reuse::{ReuseConfig, StrategyKind};

use crate::generate::DEFAULT_MODEL;
use crate::output::{print_line, status_line};
use crate::runtime::ModelSource;
use crate::strategy_args::{parse_strategy, ReuseOptionArgs};

/// `prophetkv tasks ...`.
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Generate RULER-style tasks (deterministic per seed).
    Gen(GenArgs),
}

/// `prophetkv bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time to first token of strategies side by side.
    Ttft(TtftArgs),
    /// Batched decode throughput after a prompt.
    Decode(DecodeArgs),
    /// The runtime on a device (a GPU) against the CPU's f32, same weights.
    Numerics(NumericsArgs),
    /// Attention's flash kernel against the chunked path on a GPU: error
    /// against f32 and time, on random inputs of real head layouts.
    Attention(AttentionArgs),
}

/// Arguments of `prophetkv bench attention`.
#[derive(Debug, Args)]
pub struct AttentionArgs {
    /// Device: cuda or cuda:N (on the CPU both paths are the chunked one).
    #[arg(long, env = "PROPHETKV_DEVICE", default_value = "cuda")]
    device: String,
    /// Precision of the inputs: bf16 or f16 (f32 for a CPU try-out).
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Length of the timed long prefills (0: none).
    #[arg(long, default_value_t = 16384)]
    long: usize,
    /// Timed calls per path and case.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for attention.md and attention.json.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
}

/// Arguments of `prophetkv bench decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Prompt tokens of every sequence.
    #[arg(long, default_value_t = 1024)]
    context_tokens: usize,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    /// Timed steps per batch size.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Directory for decode.md and decode.json.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    #[command(flatten)]
    model: WeightArgs,
}

/// Arguments of `prophetkv bench numerics`.
#[derive(Debug, Args)]
pub struct NumericsArgs {
    /// Generated prompts.
    #[arg(long, default_value_t = 20)]
    prompts: usize,
    /// Their length in tokens.
    #[arg(long, default_value_t = 1536)]
    context_tokens: usize,
    /// Documents per prompt.
    #[arg(long, default_value_t = 8)]
    docs: usize,
    /// Greedy tokens compared.
    #[arg(long, default_value_t = 16)]
    greedy_tokens: usize,
    /// ProphetKV's ratio for the selection check.
    #[arg(long, default_value_t = 0.2)]
    ratio: f64,
    /// Low precision checked against the CPU's f32: bf16 or f16.
    #[arg(long, default_value = "bf16")]
    low: String,
    /// Directory for numerics.json.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Model (its --device is the one checked; the CPU is the reference).
    #[command(flatten)]
    model: WeightArgs,
}

/// Arguments of `prophetkv tasks gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// multi-key, multi-value or rag.
    #[arg(long)]
    kind: String,
    /// Number of tasks.
    #[arg(long, default_value_t = 50)]
    n: usize,
    /// Target prompt length in the model's tokens.
    #[arg(long, default_value_t = 2000)]
    context_tokens: usize,
    /// Documents per task.
    #[arg(long, default_value_t = 8)]
    docs: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Distractor facts per task, in documents drawn at random (default: one
    /// in every document): fewer make tasks a small model can answer.
    #[arg(long)]
    distractors: Option<usize>,
    /// Output JSONL file.
    #[arg(long)]
    out: PathBuf,
    /// Model whose tokenizer measures the context.
    #[arg(long, env = "PROPHETKV_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Measure the context for random weights of this shape instead (one
    /// byte per token, whatever the shape).
    #[arg(long)]
    random_weights: Option<String>,
}

/// The model, its precision and device, shared by eval, bench and ablate.
#[derive(Debug, Args)]
pub(crate) struct WeightArgs {
    /// Model path.
    #[arg(long, env = "PROPHETKV_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Precision: mixed-bf16 (the server's default), mixed, q, f32, or on a GPU bf16 or f16.
    #[arg(long, default_value = "mixed-bf16")]
    dtype: String,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, env = "PROPHETKV_DEVICE", default_value = "cpu")]
    device: String,
    /// Random weights of this shape instead of --model (gemma-3-270m,
    /// llama-3.1-8b, qwen2.5-7b, smollm2-135m or a config.json), one byte
    /// per token: for timing where the weights cannot be sent.
    #[arg(long)]
    random_weights: Option<String>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    random_seed: u64,
}

impl WeightArgs {
    pub(crate) fn load(&self) -> anyhow::Result<(Model, TextTokenizer)> {
        let (model, tokenizer, _) = self.source().load(&self.dtype, &self.device)?;
        Ok((model, tokenizer))
    }

    pub(crate) fn source(&self) -> ModelSource {
        ModelSource::new(
            &self.model,
            self.random_weights.as_deref(),
            self.random_seed,
        )
    }
}

/// The model and the reuse options every strategy run shares (eval, bench).
#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    #[command(flatten)]
    weights: WeightArgs,
    #[command(flatten)]
    pub(crate) options: ReuseOptionArgs,
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<(Model, TextTokenizer)> {
        self.weights.load()
    }

    fn base(&self, model: &ModelConfig) -> anyhow::Result<ReuseConfig> {
        let base = self.options.config(model);
        base.validate(model.num_layers())?;
        Ok(base)
    }
}

/// Arguments of `prophetkv eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Task file (JSONL).
    #[arg(long)]
    tasks: PathBuf,
    /// Strategies to compare.
    #[arg(long, value_delimiter = ',', value_parser = parse_strategy,
          default_value = "full,naive,prophetkv,cacheblend,epic,random")]
    strategies: Vec<StrategyKind>,
    /// Recompute ratios of the budgeted strategies.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.2,0.3")]
    ratios: Vec<f64>,
    /// Most tokens per answer (answers also end at a line break).
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Run directory: results, plots, and the journal that makes reruns resume.
    #[arg(long, default_value = "eval-out")]
    out: PathBuf,
    /// Print how far the run in --out has come and the table over the tasks
    /// done so far (marked partial), without running anything.
    #[arg(long)]
    status: bool,
    /// Cache every document behind this text, as `serve --preamble` does.
    #[arg(long)]
    preamble: Option<String>,
    /// Also compare ProphetKV, task by task, with the ProphetKV arms of this
    /// run directory (another selection or preamble, run on the same tasks).
    #[arg(long)]
    against: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

/// Arguments of `prophetkv bench ttft`.
#[derive(Debug, Args)]
pub struct TtftArgs {
    /// Context lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096")]
    context_tokens: Vec<usize>,
    /// Documents per prompt.
    #[arg(long, default_value_t = 8)]
    docs: usize,
    /// Recompute ratio.
    #[arg(long, default_value_t = 0.2)]
    ratio: f64,
    /// Strategies.
    #[arg(long, value_delimiter = ',', value_parser = parse_strategy,
          default_value = "full,naive,prophetkv,cacheblend,epic")]
    strategies: Vec<StrategyKind>,
    /// Timed runs per strategy and length.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seed of the generated prompts.
    #[arg(long, default_value_t = 0)]
    prompt_seed: u64,
    /// Directory for the table and ttft_vs_context.png.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn tasks(command: TasksCommand) -> anyhow::Result<()> {
    let TasksCommand::Gen(args) = command;
    let kind: TaskKind = args.kind.parse()?;
    let tokenizer = match &args.random_weights {
        Some(_) => TextTokenizer::bytes()?,
        None => TextTokenizer::from_path(&args.model)
            .with_context(|| format!("loading tokenizer of {}", args.model.display()))?,
    };
    let count = |t: &str| tokenizer.encode(t).map(|ids| ids.len()).unwrap_or(0);
    let spec = GenSpec {
        kind,
        n: args.n,
        context_tokens: args.context_tokens,
        docs: args.docs,
        seed: args.seed,
        distractors: args.distractors,
    };
    let tasks = generate(&spec, &count)?;
    write_tasks(&args.out, &tasks)?;
    let mean = tasks
        .iter()
        .map(|t| {
            count(&t.prefix)
                + 1
                + t.documents.iter().map(|d| count(d)).sum::<usize>()
                + count(&t.question)
        })
        .sum::<usize>() as f64
        / tasks.len() as f64;
    eprintln!(
        "wrote {} {kind} tasks ({} documents, {mean:.0} tokens on average) to {}",
        tasks.len(),
        args.docs,
        args.out.display()
    );
    Ok(())
}

fn ratios_valid(ratios: &[f64]) -> anyhow::Result<()> {
    if let Some(r) = ratios.iter().find(|r| !(0.0..=1.0).contains(*r)) {
        bail!("recompute ratio must be within [0, 1], got {r}");
    }
    Ok(())
}

/// Progress on a terminal: a bar with ETA; otherwise a plain line per task.
fn reporter(total: usize) -> impl FnMut(Progress) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} tasks  {elapsed} elapsed, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let start = Instant::now();
    move |p: Progress| match &bar {
        Some(bar) => {
            if p.done == p.resumed {
                bar.set_position(p.done as u64);
                bar.reset_eta();
            } else {
                bar.set_position(p.done as u64);
            }
            if p.done == p.total {
                bar.finish();
            }
        }
        None => {
            let ran = p.done - p.resumed;
            let eta = if ran > 0 {
                let per = start.elapsed().as_secs_f64() / ran as f64;
                format!(", ETA {:.0} s", per * (p.total - p.done) as f64)
            } else {
                String::new()
            };
            eprintln!("{}/{} tasks ({} resumed){eta}", p.done, p.total, p.resumed);
        }
    }
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    ratios_valid(&args.ratios)?;
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let tasks = load_tasks(&args.tasks)?;
    let arms = Arm::grid(&args.strategies, &args.ratios);
    if args.model.options.budget_per_request() && args.ratios.len() > 1 {
        bail!(
            "--mass sets ProphetKV's budget per request, so its arms would not differ by ratio: \
             give one --ratios value (the other strategies' budget), or compare budgets with \
             `prophetkv ablate`"
        );
    }
    let against = match &args.against {
        Some(dir) => {
            let theirs = Journal::read_outcomes(dir)?;
            if theirs.is_empty() {
                bail!("--against {}: no outcomes there", dir.display());
            }
            Some((dir.display().to_string(), theirs))
        }
        None => None,
    };
    if args.status {
        let (done, outcomes) = partial_outcomes(&tasks, &arms, &args.out)?;
        return print_line(&format!(
            "{}\n\n{}{}",
            status_line(done, tasks.len(), "", &args.out),
            markdown(&summarize(&outcomes, &arms)),
            comparisons(&outcomes, &arms, against.as_ref()),
        ));
    }
    let (model, tokenizer) = args.model.load()?;
    let base = args.model.base(model.config())?;
    let identity = RunIdentity {
        tasks_blake3: file_blake3(&args.tasks)?,
        model: args.model.weights.model.display().to_string(),
        weights: args.model.weights.dtype.clone(),
        max_new_tokens: args.max_new_tokens,
        options: match &args.preamble {
            None => format!("{base:?}"),
            Some(text) => format!("{base:?}, preamble {text:?}"),
        },
    };
    let mut evaluator = Evaluator::new(&model, &tokenizer, base, args.max_new_tokens);
    if let Some(text) = &args.preamble {
        evaluator.preamble = tokenizer.encode(text)?;
        evaluator.exact_documents = 0;
    }
    let mut progress = reporter(tasks.len());
    let report = evaluate(
        &evaluator,
        &tasks,
        &arms,
        &args.out,
        identity,
        &mut progress,
    )?;
    print_line(&format!(
        "{}{}",
        markdown(&report.summary),
        comparisons(&report.outcomes, &arms, against.as_ref())
    ))?;
    eprintln!(
        "results in {}: results.json, results.md, accuracy_vs_ratio.png",
        args.out.display()
    );
    Ok(())
}

/// ProphetKV against the other strategies, task by task, and against the
/// ProphetKV arms of the `--against` run, as markdown after a blank line.
fn comparisons(
    outcomes: &[Outcome],
    arms: &[Arm],
    against: Option<&(String, Vec<Outcome>)>,
) -> String {
    let mut rows = report::compare(outcomes, arms);
    if let Some((run, theirs)) = against {
        rows.extend(compare_with_run(outcomes, arms, theirs, run));
    }
    if rows.is_empty() {
        return String::new();
    }
    format!("\n{}", comparison_markdown(&rows))
}

pub fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ttft(args) => bench_ttft_command(args),
        BenchCommand::Decode(args) => bench_decode_command(args),
        BenchCommand::Numerics(args) => bench_numerics_command(args),
        BenchCommand::Attention(args) => bench_attention_command(args),
    }
}

fn bench_attention_command(args: AttentionArgs) -> anyhow::Result<()> {
    let device = prophetkv_model::device_from_name(&args.device)?;
    let dtype = match args.dtype.as_str() {
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        "f32" => DType::F32,
        other => bail!("--dtype {other}: expected bf16, f16 or f32"),
    };
    let rows = bench_attention(&standard_cases(args.long), dtype, &device, args.runs)?;
    let table = attention_markdown(&rows);
    publish(&args.out, "attention", &table, &rows)?;
    if rows.iter().any(|r| !r.holds) {
        bail!("the flash kernel strayed from f32 attention (see the table)");
    }
    Ok(())
}

/// Writes `NAME.md` (the table) and `NAME.json` (the rows) under `out`, and
/// prints the table.
fn publish(
    out: &Path,
    name: &str,
    table: &str,
    rows: &impl serde::Serialize,
) -> anyhow::Result<()> {
    write_results(out, name, table, serde_json::to_string_pretty(rows)?)?;
    print_line(table)?;
    Ok(())
}

fn write_results(out: &Path, name: &str, markdown: &str, json: String) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(format!("{name}.md")), markdown)
        .with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(out.join(format!("{name}.json")), json)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn bench_decode_command(args: DecodeArgs) -> anyhow::Result<()> {
    let (model, _) = args.model.load()?;
    let spec = DecodeSpec {
        context_tokens: args.context_tokens,
        batches: args.batch,
        steps: args.steps,
    };
    let rows = bench_decode(&model, &spec)?;
    let table = decode_markdown(&rows);
    publish(&args.out, "decode", &table, &rows)?;
    Ok(())
}

fn bench_numerics_command(args: NumericsArgs) -> anyhow::Result<()> {
    let source = args.model.source();
    let (cpu, tokenizer, _) = source.load("f32", "cpu")?;
    let (device, _, _) = source.load("f32", &args.model.device)?;
    let (low, _, _) = source.load(&args.low, &args.model.device)?;
    let base = ReuseConfig::for_model(cpu.config());
    let evaluator = |m| Evaluator::new(m, &tokenizer, base.clone(), 1);
    let (cpu, device, low) = (evaluator(&cpu), evaluator(&device), evaluator(&low));
    let spec = NumericsSpec {
        prompts: args.prompts,
        context_tokens: args.context_tokens,
        docs: args.docs,
        greedy_tokens: args.greedy_tokens,
        ratio: args.ratio,
        seed: 0,
    };
    let runtimes = Runtimes {
        cpu: &cpu,
        device: &device,
        low: &low,
    };
    let started = Instant::now();
    let report = compare(&runtimes, &spec, &mut |line| {
        eprintln!("{:.1}s {line}", started.elapsed().as_secs_f64())
    })?;
    let mut table = String::from("| check | value | bound | holds |\n|---|---:|---|---|\n");
    for c in &report.checks {
        table.push_str(&format!(
            "| {} | {:.6} | {} | {} |\n",
            c.name,
            c.value,
            c.bound,
            if c.pass { "yes" } else { "NO" }
        ));
    }
    publish(&args.out, "numerics", &table, &report)?;
    if report.checks.iter().any(|c| !c.pass) {
        bail!("a numerics check failed (see the table)");
    }
    Ok(())
}

fn bench_ttft_command(args: TtftArgs) -> anyhow::Result<()> {
    ratios_valid(&[args.ratio])?;
    let (model, tokenizer) = args.model.load()?;
    let base = args.model.base(model.config())?;
    let evaluator = Evaluator::new(&model, &tokenizer, base, 1);
    let spec = TtftSpec {
        contexts: args.context_tokens,
        docs: args.docs,
        ratio: args.ratio,
        strategies: args.strategies,
        runs: args.runs,
        seed: args.prompt_seed,
    };
    let rows = bench_ttft(&evaluator, &spec, &mut |line| eprintln!("{line}"))?;
    let table = ttft_markdown(&rows, args.ratio);
    write_results(
        &args.out,
        "ttft",
        &table,
        serde_json::to_string_pretty(&rows)?,
    )?;
    ttft_chart(&rows, args.ratio, &args.out.join("ttft_vs_context.png"))?;
    print_line(&table)?;
    eprintln!(
        "results in {}: ttft.md, ttft.json, ttft_vs_context.png",
        args.out.display()
    );
    Ok(())
}
