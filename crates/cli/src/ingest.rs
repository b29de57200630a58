//! `prophetkv ingest`: register documents and precompute their KV caches.
//!
//! Each document is registered first (text kept, not yet ready), then its
//! cache is computed and stored, then it is marked ready. Interrupted at any
//! point and rerun, ingest skips ready documents and finishes the rest; a
//! document registered but not ready is rebuilt from its text on lookup.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use prophetkv_engine::{DocumentCaches, NewDocument};
use serde::Deserialize;

use crate::config_file::FileConfig;
use crate::generate::DEFAULT_MODEL;
use crate::output::print_line;
use crate::runtime::{self, ModelSource, RuntimeSettings};
use crate::store_args::StoreArgs;

/// Arguments of `prophetkv ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Model the caches are computed with.
    #[arg(long, env = "PROPHETKV_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Register every text file (*.txt, *.md) under this directory; ids are relative paths.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    dir: Option<PathBuf>,
    /// Register every line of this JSONL file: {"id"?, "text", "metadata"?}.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Tenant that owns the documents.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Config file whose [model] instruction/dtype and [store] settings apply.
    #[arg(long, env = "PROPHETKV_CONFIG")]
    config: Option<PathBuf>,
    /// Instruction every document is cached after (with BOS); must equal the
    /// server's [default: the config's [model] instruction].
    #[arg(long)]
    prefix: Option<String>,
    /// Text every document is cached behind; must equal the server's
    /// [default: the config's [model] preamble].
    #[arg(long)]
    preamble: Option<String>,
    /// Precision the caches are computed with (mixed, q, f32, bf16, f16)
    /// [default: the config's].
    #[arg(long)]
    dtype: Option<String>,
    /// Device: cpu, cuda or cuda:N [default: the config's].
    #[arg(long, env = "PROPHETKV_DEVICE")]
    device: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Deserialize)]
struct Line {
    id: Option<String>,
    text: String,
    #[serde(default)]
    metadata: serde_json::Value,
}

fn read_documents(args: &IngestArgs) -> anyhow::Result<Vec<NewDocument>> {
    if let Some(dir) = &args.dir {
        let mut files = Vec::new();
        collect_text_files(dir, &mut files)?;
        files.sort();
        return files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let id = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                Ok(NewDocument {
                    id: Some(id.clone()),
                    name: id,
                    text,
                    metadata: serde_json::Value::Null,
                })
            })
            .collect();
    }
    let Some(file) = &args.file else {
        bail!("give --dir or --file");
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line: Line = serde_json::from_str(l).with_context(|| {
                format!(
                    "{} line {}: expected {{\"id\", \"text\", \"metadata\"}}",
                    file.display(),
                    i + 1
                )
            })?;
            let name = line.id.clone().unwrap_or_default();
            Ok(NewDocument {
                id: line.id,
                name,
                text: line.text,
                metadata: line.metadata,
            })
        })
        .collect()
}

fn collect_text_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            collect_text_files(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "txt" || x == "md") {
            out.push(path);
        }
    }
    Ok(())
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let documents = read_documents(&args)?;
    let file = FileConfig::load(args.config.as_deref())?;
    let settings = RuntimeSettings {
        dtype: args.dtype.clone().unwrap_or(file.model.dtype),
        device: args.device.clone().unwrap_or(file.model.device),
        instruction: args.prefix.clone().unwrap_or(file.model.instruction),
        preamble: args.preamble.clone().unwrap_or(file.model.preamble),
    };
    let quota = args.store.quota(&file.store);
    let store_config = args.store.config(file.store, &settings.device)?;
    let source = ModelSource::Path(args.model.clone());
    let (model, tokenizer, store) = runtime::open(&source, &settings, &store_config)?;
    let store = Arc::new(store.with_quota(quota));
    let caches = DocumentCaches::new(store.clone());

    let bar = ProgressBar::new(documents.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} documents  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut computed, mut skipped, mut tokens) = (0usize, 0usize, 0usize);
    for doc in documents {
        let ids = tokenizer.encode(&doc.text)?;
        if ids.is_empty() {
            bar.println(format!(
                "skipping empty document {:?}",
                doc.id.as_deref().unwrap_or(&doc.name)
            ));
            bar.inc(1);
            continue;
        }
        let record = store.register(&args.tenant, doc, ids)?;
        if record.ready {
            skipped += 1;
        } else {
            caches.registered(&model, &args.tenant, &record.id)?;
            computed += 1;
            tokens += record.tokens;
        }
        let rate = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{rate:.0} tokens/s"));
        bar.inc(1);
        if bar.is_hidden() {
            eprintln!(
                "{} {} ({} tokens)",
                if record.ready { "ready" } else { "computed" },
                record.id,
                record.tokens
            );
        }
    }
    bar.finish_and_clear();
    print_line(&format!(
        "ingested into tenant {:?}: {computed} computed ({tokens} tokens in {:.1}s), {skipped} already ready",
        args.tenant,
        started.elapsed().as_secs_f64()
    ))
}
