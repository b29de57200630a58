//! Command-line options that configure document reuse (shared by subcommands).

use clap::{Args, ValueEnum};
use prophetkv_model::ModelConfig;
use prophetkv_reuse::{
    Budget, Fusion, Granularity, Probe, ProphetOptions, Resume, ReuseConfig, Signal, StrategyKind,
};

/// A strategy name as a clap value.
pub fn parse_strategy(s: &str) -> Result<StrategyKind, String> {
    s.parse()
        .map_err(|e: prophetkv_reuse::ReuseError| e.to_string())
}

/// ProphetKV Stage I mode.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProbeArg {
    /// The question attends to the assembled context.
    Attend,
    /// The question runs alone; scored against the cached keys.
    Isolated,
}

/// What Stage I scores a row by.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SignalArg {
    /// The question's attention probability.
    Attention,
    /// The probability times the norm of the row's value.
    Flow,
    /// The probability times the row's deviation from full prefill
    /// (an ablation's upper bound: it runs a full prefill).
    OracleDeviation,
}

/// A layer fusion name as a clap value (the names the config file takes).
fn parse_fusion(s: &str) -> Result<Fusion, String> {
    s.parse()
        .map_err(|e: prophetkv_reuse::ReuseError| e.to_string())
}

/// How documents are reused and which rows are recomputed.
#[derive(Debug, Args)]
pub struct StrategyArgs {
    /// Recomputation strategy: full, naive, prophetkv, cacheblend, epic, random.
    #[arg(long, default_value = "prophetkv", value_parser = parse_strategy)]
    strategy: StrategyKind,
    /// Fraction of eligible document rows to recompute, in [0, 1].
    #[arg(long, default_value_t = 0.2)]
    ratio: f64,
    #[command(flatten)]
    options: ReuseOptionArgs,
}

impl StrategyArgs {
    /// The validated reuse configuration for `model`.
    pub fn config(&self, model: &ModelConfig) -> anyhow::Result<ReuseConfig> {
        let config = ReuseConfig {
            strategy: self.strategy,
            ratio: self.ratio,
            ..self.options.config(model)
        };
        config.validate(model.num_layers())?;
        Ok(config)
    }
}

/// The options of the strategies (everything but which one and its ratio).
#[derive(Debug, Args)]
pub struct ReuseOptionArgs {
    /// ProphetKV Stage I probe.
    #[arg(long, value_enum, default_value = "attend")]
    probe: ProbeArg,
    /// ProphetKV Stage I score of a row.
    #[arg(long, value_enum, default_value = "attention")]
    signal: SignalArg,
    /// ProphetKV layer fusion: mean, max, or visible (the mean over the
    /// layers that see each row, each relative to its window) [default: max
    /// on models with sliding-window layers, mean on all-global ones].
    #[arg(long, value_parser = parse_fusion)]
    fusion: Option<Fusion>,
    /// ProphetKV scoring layers, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    score_layers: Vec<usize>,
    /// ProphetKV selects blocks of this many rows instead of single rows.
    #[arg(long)]
    block: Option<usize>,
    /// ProphetKV: a row also scores as high as any of this many rows before
    /// it in its document (0: off) [default: 4 on models with sliding-window
    /// layers, 0 on all-global ones].
    #[arg(long)]
    spread: Option<usize>,
    /// ProphetKV recomputes, per request, the fewest top rows holding this
    /// share of Stage I's score, instead of the ratio's fixed count.
    #[arg(long)]
    mass: Option<f64>,
    /// With --mass: fewest rows, as a fraction of the eligible ones.
    #[arg(long, default_value_t = 0.05, requires = "mass")]
    mass_floor: f64,
    /// With --mass: most rows, as a fraction of the eligible ones.
    #[arg(long, default_value_t = 0.5, requires = "mass")]
    mass_ceiling: f64,
    /// ProphetKV spends part of its budget (rows × layers) on rows that
    /// start at this layer from the hidden states their documents kept.
    #[arg(long)]
    resume_layer: Option<usize>,
    /// With --resume-layer: share of the budget on the top rows recomputed
    /// through every layer.
    #[arg(long, default_value_t = 0.5, requires = "resume_layer")]
    resume_deep_share: f64,
    /// ProphetKV's Stage I probes: with more than one, an even share of the
    /// budget is recomputed after each probe but the last.
    #[arg(long, default_value_t = 1)]
    probes: usize,
    /// EPIC: fixed rows per document (default: the ratio's budget spread over documents).
    #[arg(long)]
    epic_rows: Option<usize>,
    /// Seed of the random strategy.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Let the first document be recomputed too (its cache is already exact).
    #[arg(long)]
    first_doc_eligible: bool,
}

impl ReuseOptionArgs {
    /// Whether ProphetKV's budget is set per request (`--mass`), so that
    /// its ratio does not apply.
    pub fn budget_per_request(&self) -> bool {
        self.mass.is_some()
    }

    /// The options over the default strategy and ratio, and over `model`'s
    /// default selection where an option is not given (validated by the
    /// caller once those are set).
    pub fn config(&self, model: &ModelConfig) -> ReuseConfig {
        let defaults = ProphetOptions::for_model(model);
        ReuseConfig {
            first_doc_eligible: self.first_doc_eligible,
            prophet: ProphetOptions {
                probe: match self.probe {
                    ProbeArg::Attend => Probe::Attend,
                    ProbeArg::Isolated => Probe::Isolated,
                },
                signal: match self.signal {
                    SignalArg::Attention => Signal::Attention,
                    SignalArg::Flow => Signal::Flow,
                    SignalArg::OracleDeviation => Signal::OracleDeviation,
                },
                fusion: self.fusion.unwrap_or(defaults.fusion),
                score_layers: (!self.score_layers.is_empty()).then(|| self.score_layers.clone()),
                granularity: self.block.map_or(Granularity::Token, Granularity::Block),
                spread: self.spread.unwrap_or(defaults.spread),
                budget: self.mass.map_or(Budget::Fixed, |share| Budget::Mass {
                    share,
                    floor: self.mass_floor,
                    ceiling: self.mass_ceiling,
                }),
                resume: self.resume_layer.map(|layer| Resume {
                    layer,
                    deep_share: self.resume_deep_share,
                }),
                probes: self.probes,
            },
            epic_rows: self.epic_rows,
            seed: self.seed,
            ..ReuseConfig::default()
        }
    }
}
