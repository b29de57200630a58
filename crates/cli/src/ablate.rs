//! `prophetkv ablate`: variants of the reuse options side by side on task
//! files, each against `full` on the same tasks.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser};
use prophetkv_eval::ablate::{ablate, ablation_markdown, load_trials, summarize, Variant};
use prophetkv_eval::run::Evaluator;
use prophetkv_eval::task::load_tasks;
use prophetkv_model::ModelConfig;
use prophetkv_reuse::ReuseConfig;

use crate::eval::WeightArgs;
use crate::output::{print_line, status_line};
use crate::strategy_args::StrategyArgs;

/// Arguments of `prophetkv ablate`.
#[derive(Debug, Args)]
pub struct AblateArgs {
    /// Task files (JSONL), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    tasks: Vec<PathBuf>,
    /// Keep the first N tasks of each file.
    #[arg(long)]
    n: Option<usize>,
    /// A variant as NAME=OPTIONS, the options as on the command line
    /// (e.g. "global=--score-layers 5,11,17"; default strategy prophetkv at
    /// ratio 0.2). Repeat for each variant.
    #[arg(long = "variant", required = true, allow_hyphen_values = true)]
    variants: Vec<String>,
    /// Most tokens per answer (answers also end at a line break).
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Cache documents after BOS alone and compute the task's prefix fresh,
    /// instead of caching them after the prefix (the deployed layout).
    #[arg(long)]
    bos_anchor: bool,
    /// Cache every document but the first behind this text (after the
    /// anchor), a stand-in for the documents before it in a request.
    #[arg(long)]
    preamble: Option<String>,
    /// With --preamble: the first document too (then only a variant with
    /// --first-doc-eligible can repair it).
    #[arg(long, requires = "preamble")]
    preamble_first: bool,
    /// Directory for ablation.md and trials.jsonl.
    #[arg(long, default_value = "ablate-out")]
    out: PathBuf,
    /// Print the table over the tasks that --out's trials.jsonl holds for
    /// every variant (a run stopped early, or still running) without running
    /// anything.
    #[arg(long)]
    status: bool,
    #[command(flatten)]
    model: WeightArgs,
}

/// The options of one variant, parsed like the command line's.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct VariantFlags {
    #[command(flatten)]
    strategy: StrategyArgs,
}

fn parse_variant(text: &str, model: &ModelConfig) -> anyhow::Result<Variant> {
    let (name, spec) = text
        .split_once('=')
        .with_context(|| format!("variant {text:?} is not NAME=OPTIONS"))?;
    let name = name.trim();
    if name.is_empty() || name == "full" {
        bail!("variant {text:?} needs a name other than \"full\"");
    }
    let flags = VariantFlags::try_parse_from(spec.split_whitespace())
        .map_err(|e| anyhow::anyhow!("variant {name}: {}", e.render().to_string().trim()))?;
    Ok(Variant {
        name: name.to_string(),
        spec: spec.trim().to_string(),
        config: flags.strategy.config(model)?,
    })
}

pub fn run(args: AblateArgs) -> anyhow::Result<()> {
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let mut tasks = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for path in &args.tasks {
        let mut file = load_tasks(path)?;
        file.truncate(args.n.unwrap_or(usize::MAX));
        if let Some(t) = file.iter().find(|t| !ids.insert(t.id.clone())) {
            bail!(
                "task id {:?} of {} is used by an earlier file",
                t.id,
                path.display()
            );
        }
        tasks.extend(file);
    }
    let (model, tokenizer) = args.model.load()?;
    let variants = args
        .variants
        .iter()
        .map(|v| parse_variant(v, model.config()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut names = std::collections::HashSet::new();
    if let Some(v) = variants.iter().find(|v| !names.insert(v.name.as_str())) {
        bail!("variant name {:?} is used twice", v.name);
    }
    if args.status {
        let trials = load_trials(&args.out.join("trials.jsonl"), &variants)?;
        let done = trials.iter().filter(|t| t.variant == "full").count();
        let table = ablation_markdown(&summarize(&trials, &variants));
        let status = status_line(done, tasks.len(), " by full and every variant", &args.out);
        return print_line(&format!("{status}\n\n{table}"));
    }
    // The base only configures `full`; every variant carries its own options.
    let base = ReuseConfig::for_model(model.config());
    let mut evaluator = Evaluator::new(&model, &tokenizer, base, args.max_new_tokens);
    evaluator.prefix_in_anchor = !args.bos_anchor;
    if let Some(text) = &args.preamble {
        evaluator.preamble = tokenizer.encode(text)?;
        evaluator.exact_documents = usize::from(!args.preamble_first);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Each task's trials are written as it finishes, so a stopped run keeps them.
    let path = args.out.join("trials.jsonl");
    let mut journal = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut write_error: Option<std::io::Error> = None;
    let trials = ablate(&evaluator, &tasks, &variants, |done, total, latest| {
        let marks: Vec<String> = latest
            .iter()
            .map(|t| format!("{}{}", t.variant, if t.correct { "+" } else { "-" }))
            .collect();
        let id = latest.first().map_or("", |t| t.id.as_str());
        eprintln!("{done}/{total} {id}: {}", marks.join(" "));
        for t in latest {
            let written = serde_json::to_writer(&mut journal, t)
                .map_err(std::io::Error::from)
                .and_then(|()| journal.write_all(b"\n"))
                .and_then(|()| journal.flush());
            if let Err(e) = written {
                write_error.get_or_insert(e);
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    let table = ablation_markdown(&summarize(&trials, &variants));
    std::fs::write(args.out.join("ablation.md"), &table)?;
    print_line(&table)
}
