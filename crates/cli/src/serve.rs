//! `prophetkv serve`: the OpenAI-compatible daemon.
//!
//! Configuration: `--config FILE` (TOML, see config/default.toml) <
//! `PROPHETKV_*` environment variables < flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use prophetkv_engine::{EngineConfig, EngineHandle, EngineParts, ProphetOptions, StrategyKind};
use prophetkv_model::{ModelConfig, TextTokenizer};
use prophetkv_reuse::Fusion;
use prophetkv_server::chat_template::ChatTemplate;
use prophetkv_server::openai::Defaults;
use prophetkv_server::{AppState, ServeOptions, ServerConfig};

use crate::config_file::FileConfig;
use crate::runtime::{self, ModelSource, RuntimeSettings};
use crate::store_args::StoreArgs;

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `prophetkv serve`; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see config/default.toml).
    #[arg(long, env = "PROPHETKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Model path [default: models/gemma-3-270m-q4_k_m.gguf].
    #[arg(long, env = "PROPHETKV_MODEL")]
    pub model: Option<PathBuf>,
    /// Model id served at /v1/models [default: gemma-3-270m].
    #[arg(long, env = "PROPHETKV_MODEL_NAME")]
    pub model_name: Option<String>,
    /// Precision: mixed-bf16 (quantized decode steps, and prompt rows in bf16
    /// on CPUs with AVX-512 BF16, else f32; bf16 on a GPU), mixed (f32 prompt
    /// rows), q, f32, or on a GPU bf16 or f16 [default: mixed-bf16].
    #[arg(long, env = "PROPHETKV_DTYPE")]
    pub dtype: Option<String>,
    /// Serve random weights of this shape instead of a model file
    /// (gemma-3-270m, llama-3.1-8b, qwen2.5-7b, smollm2-135m or a
    /// config.json), one byte per token: a benchmark stand-in whose answers
    /// mean nothing.
    #[arg(long, env = "PROPHETKV_RANDOM_WEIGHTS")]
    pub random_weights: Option<String>,
    /// Seed of the random weights [default: 0].
    #[arg(long, env = "PROPHETKV_RANDOM_SEED")]
    pub random_seed: Option<u64>,
    /// Device: cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature) [default: cpu].
    #[arg(long, env = "PROPHETKV_DEVICE")]
    pub device: Option<String>,
    /// Instruction placed after BOS; documents are cached after it.
    #[arg(long, env = "PROPHETKV_INSTRUCTION")]
    pub instruction: Option<String>,
    /// Text every document is cached behind, after the instruction, standing
    /// in for the documents a request puts before it ("": none) [default: the
    /// config's [model] preamble].
    #[arg(long, env = "PROPHETKV_PREAMBLE")]
    pub preamble: Option<String>,
    /// Chat layout: a Jinja template file, "plain", or empty for the
    /// model's own template (plain when it has none) [default: empty].
    #[arg(long, env = "PROPHETKV_CHAT_TEMPLATE")]
    pub chat_template: Option<String>,
    /// Address to bind [default: 127.0.0.1].
    #[arg(long, env = "PROPHETKV_HOST")]
    pub host: Option<IpAddr>,
    /// Port [default: 8080].
    #[arg(long, env = "PROPHETKV_PORT")]
    pub port: Option<u16>,
    /// Bearer API keys, comma-separated; each is a tenant [default: none, no auth].
    #[arg(long, env = "PROPHETKV_API_KEYS", value_delimiter = ',')]
    pub api_keys: Option<Vec<String>>,
    /// Default strategy [default: prophetkv].
    #[arg(long, env = "PROPHETKV_STRATEGY")]
    pub strategy: Option<String>,
    /// Default recompute ratio [default: 0.2].
    #[arg(long, env = "PROPHETKV_RECOMPUTE_RATIO")]
    pub recompute_ratio: Option<f64>,
    /// ProphetKV's layer fusion: auto, mean, max or visible [default: auto,
    /// the model's: max with sliding-window layers, mean without].
    #[arg(long, env = "PROPHETKV_FUSION")]
    pub fusion: Option<String>,
    /// ProphetKV's spread: a row also scores as high as any of this many
    /// rows before it in its document [default: the model's: 4 with
    /// sliding-window layers, 0 without].
    #[arg(long, env = "PROPHETKV_SPREAD")]
    pub spread: Option<usize>,
    /// Most sequences per decode step [default: 16].
    #[arg(long, env = "PROPHETKV_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Most waiting requests; more get 429 [default: 64].
    #[arg(long, env = "PROPHETKV_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Most prefills admitted per decode step [default: 2].
    #[arg(long, env = "PROPHETKV_MAX_PREFILLS_PER_STEP")]
    pub max_prefills_per_step: Option<usize>,
    /// Most documents in one request [default: 64].
    #[arg(long, env = "PROPHETKV_MAX_DOCUMENTS")]
    pub max_documents: Option<usize>,
    /// Most tokens in one document, registered or inline; 0: only the
    /// model's context bounds it [default: 0].
    #[arg(long, env = "PROPHETKV_MAX_DOCUMENT_TOKENS")]
    pub max_document_tokens: Option<usize>,
    /// max_tokens of a chat request that sets none [default: 256].
    #[arg(long, env = "PROPHETKV_CHAT_MAX_TOKENS")]
    pub chat_max_tokens: Option<usize>,
    /// Largest request body in MiB; larger ones get 413 [default: 8].
    #[arg(long, env = "PROPHETKV_MAX_BODY_MB")]
    pub max_body_mb: Option<usize>,
    /// Seconds running streams get to finish after SIGTERM [default: 30].
    #[arg(long, env = "PROPHETKV_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds a client gets to send a request's headers; then the
    /// connection is closed; 0: no limit [default: 30].
    #[arg(long, env = "PROPHETKV_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds without request body data before the request gets 408 and
    /// the connection is closed; 0: no limit [default: 60].
    #[arg(long, env = "PROPHETKV_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<u64>,
    /// Log format.
    #[arg(long, value_enum, env = "PROPHETKV_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = FileConfig::load(args.config.as_deref())?;
    let model_path = args.model.clone().unwrap_or(file.model.path.clone());
    let source = ModelSource::new(
        &model_path,
        args.random_weights
            .as_deref()
            .or(Some(file.model.random_weights.as_str())),
        args.random_seed.unwrap_or(file.model.random_seed),
    );
    let settings = RuntimeSettings {
        dtype: args.dtype.clone().unwrap_or(file.model.dtype.clone()),
        device: args.device.clone().unwrap_or(file.model.device.clone()),
        instruction: args
            .instruction
            .clone()
            .unwrap_or(file.model.instruction.clone()),
        preamble: args.preamble.clone().unwrap_or(file.model.preamble.clone()),
    };
    let strategy: StrategyKind = args
        .strategy
        .as_deref()
        .unwrap_or(&file.reuse.strategy)
        .parse()?;
    let ratio = args.recompute_ratio.unwrap_or(file.reuse.recompute_ratio);
    if !(0.0..=1.0).contains(&ratio) {
        anyhow::bail!("recompute_ratio must be within [0, 1], got {ratio}");
    }
    let fusion = configured_fusion(args.fusion.as_deref().unwrap_or(&file.reuse.fusion))?;
    let host: IpAddr = match args.host {
        Some(h) => h,
        None => file
            .server
            .host
            .parse()
            .with_context(|| format!("server.host {:?}", file.server.host))?,
    };
    let addr = SocketAddr::new(host, args.port.unwrap_or(file.server.port));
    let quota = args.store.quota(&file.store);
    let store_config = args.store.config(file.store, &settings.device)?;

    let (model, tokenizer, store) = runtime::open(&source, &settings, &store_config)?;
    let prophet = prophet_options(model.config(), fusion, args.spread.or(file.reuse.spread));
    tracing::info!(fusion = ?prophet.fusion, spread = prophet.spread, "ProphetKV selection");
    let store = Arc::new(store.with_quota(quota));
    let engine_config = EngineConfig {
        max_batch: args.max_batch.unwrap_or(file.engine.max_batch).max(1),
        max_queue: args.max_queue.unwrap_or(file.engine.max_queue),
        max_prefills_per_step: args
            .max_prefills_per_step
            .unwrap_or(file.engine.max_prefills_per_step),
        max_documents: args.max_documents.unwrap_or(file.engine.max_documents),
        max_document_tokens: args
            .max_document_tokens
            .unwrap_or(file.engine.max_document_tokens),
    };
    let parts = EngineParts {
        model,
        tokenizer: tokenizer.clone(),
        store,
        instruction: settings.instruction,
    };
    let chat_template = chat_template(
        args.chat_template
            .as_deref()
            .unwrap_or(&file.model.chat_template),
        &tokenizer,
    )?;
    let engine = EngineHandle::spawn(parts, engine_config)?;
    let api_keys = args.api_keys.clone().unwrap_or(file.server.api_keys);
    let config = ServerConfig {
        api_keys: api_keys.into_iter().filter(|k| !k.is_empty()).collect(),
        max_body_bytes: args.max_body_mb.unwrap_or(file.server.max_body_mb) << 20,
        defaults: Defaults {
            model: args.model_name.clone().unwrap_or(file.model.name),
            strategy,
            ratio,
            prophet,
            chat_max_tokens: args.chat_max_tokens.unwrap_or(file.engine.chat_max_tokens),
            chat_template,
        },
        random_weights: source.random_shape().map(str::to_string),
    };
    let state = AppState::new(engine, config);
    let secs = |flag: Option<u64>, file: u64| Duration::from_secs(flag.unwrap_or(file));
    let timeout = |flag: Option<u64>, file: u64| Some(secs(flag, file)).filter(|d| !d.is_zero());
    let options = ServeOptions {
        shutdown_grace: secs(args.shutdown_grace_secs, file.server.shutdown_grace_secs),
        header_read_timeout: timeout(
            args.header_read_timeout_secs,
            file.server.header_read_timeout_secs,
        ),
        body_read_timeout: timeout(
            args.body_read_timeout_secs,
            file.server.body_read_timeout_secs,
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(prophetkv_server::serve(state, addr, options))
        .with_context(|| format!("serving on {addr}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// The chat template named by the configuration: "" (the model's own, if
/// any), "plain" (none), or a file.
fn chat_template(
    setting: &str,
    tokenizer: &TextTokenizer,
) -> anyhow::Result<Option<Arc<ChatTemplate>>> {
    let source = match setting {
        "plain" => return Ok(None),
        "" => match tokenizer.chat_template() {
            Some(t) => t.to_string(),
            None => {
                tracing::info!("the model has no chat template; chat uses the plain layout");
                return Ok(None);
            }
        },
        path => std::fs::read_to_string(path)
            .with_context(|| format!("reading chat template {path}"))?,
    };
    let token = |id: Option<u32>| id.and_then(|id| tokenizer.token(id)).unwrap_or_default();
    let template = ChatTemplate::new(
        &source,
        &token(tokenizer.bos()),
        &token(tokenizer.eos().first().copied()),
    )
    .context("compiling the chat template")?;
    tracing::info!("chat uses the model's chat template");
    Ok(Some(Arc::new(template)))
}

/// The configured fusion; `None` for "auto" (the model's).
fn configured_fusion(text: &str) -> anyhow::Result<Option<Fusion>> {
    if text == "auto" {
        return Ok(None);
    }
    let fusion = text.parse::<Fusion>().context("reuse.fusion (or auto)")?;
    Ok(Some(fusion))
}

/// ProphetKV's selection: the model's default ([`ProphetOptions::for_model`])
/// where the fusion or the spread is not configured.
fn prophet_options(
    model: &ModelConfig,
    fusion: Option<Fusion>,
    spread: Option<usize>,
) -> ProphetOptions {
    let defaults = ProphetOptions::for_model(model);
    ProphetOptions {
        fusion: fusion.unwrap_or(defaults.fusion),
        spread: spread.unwrap_or(defaults.spread),
        ..defaults
    }
}
