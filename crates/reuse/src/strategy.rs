//! Which rows to recompute: the strategies and their options, as config values.

use std::fmt;
use std::str::FromStr;

use prophetkv_model::ModelConfig;
use serde::Serialize;

use crate::{Result, ReuseError};

/// A recomputation strategy (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    /// Compute every row: the reference.
    Full,
    /// Compute only fresh rows and the query.
    Naive,
    /// Query-driven two-stage selection (the product's default).
    #[serde(rename = "prophetkv")]
    ProphetKv,
    /// Rows whose layer-1 keys deviate most from the cache.
    #[serde(rename = "cacheblend")]
    CacheBlend,
    /// The first rows of every document.
    Epic,
    /// Seeded random rows: the floor any smart strategy must beat.
    Random,
}

impl StrategyKind {
    /// Every strategy, in a stable order.
    pub const ALL: [StrategyKind; 6] = [
        StrategyKind::Full,
        StrategyKind::Naive,
        StrategyKind::ProphetKv,
        StrategyKind::CacheBlend,
        StrategyKind::Epic,
        StrategyKind::Random,
    ];

    /// The name used in configs, the CLI and the API.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Full => "full",
            StrategyKind::Naive => "naive",
            StrategyKind::ProphetKv => "prophetkv",
            StrategyKind::CacheBlend => "cacheblend",
            StrategyKind::Epic => "epic",
            StrategyKind::Random => "random",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = ReuseError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| ReuseError::UnknownStrategy(s.to_string()))
    }
}

/// How ProphetKV's Stage I obtains the query's attention over the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// The query (and fresh rows) run against the assembled, uncorrected context.
    Attend,
    /// The query runs alone; its scores against the cached keys are read off.
    Isolated,
}

/// What Stage I reads off the question's attention as a row's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// The attention probability (the paper's score).
    Attention,
    /// The probability times the norm of the row's value: what the row
    /// adds to the question's output, so rows attended to for no content
    /// (separators, local sinks, whose values are small) rank lower.
    Flow,
    /// The probability times how far the row's cached key and value lie
    /// from full prefill's (each relative to the rows' mean norm): a
    /// first-order estimate of the error the row leaves in the question's
    /// output. An upper bound for ablations, not a selector to serve: it
    /// runs a full prefill to measure the deviation.
    #[serde(rename = "oracle-deviation")]
    OracleDeviation,
}

/// How per-layer scores become one score per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Mean over the scoring layers (the paper's fusion).
    Mean,
    /// Max over the scoring layers: a row ranks by the layer that attends
    /// to it most, so both the rows in a windowed layer's reach and the
    /// rows a global layer finds rank high (the default: docs/RESULTS.md,
    /// "At 4k tokens").
    Max,
    /// Mean over the scoring layers that can see the row, each layer's
    /// scores taken relative to the rows it sees: a sliding-window layer
    /// neither hides rows outside its window nor outweighs the global
    /// layers inside it.
    Visible,
}

impl FromStr for Fusion {
    type Err = ReuseError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mean" => Ok(Fusion::Mean),
            "max" => Ok(Fusion::Max),
            "visible" => Ok(Fusion::Visible),
            _ => Err(ReuseError::Option {
                name: "fusion",
                reason: format!("{s:?} is not one of mean, max, visible"),
            }),
        }
    }
}

/// Unit of selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// Individual rows.
    Token,
    /// Runs of this many consecutive rows within a document, scored by their sum.
    Block(usize),
}

/// How many rows one request recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Budget {
    /// `ratio` of the eligible rows on every request (the paper's budget).
    Fixed,
    /// Per request, the fewest top-ranked rows that hold `share` of Stage
    /// I's score, kept between `floor` and `ceiling` of the eligible rows:
    /// a question whose attention is concentrated spends less than one
    /// spread over many documents. The ratio is unused.
    Mass {
        /// Share of the score mass the chosen rows must hold, in `(0, 1]`.
        share: f64,
        /// Fewest rows, as a fraction of the eligible ones.
        floor: f64,
        /// Most rows, as a fraction of the eligible ones.
        ceiling: f64,
    },
}

/// Recomputing part of the selection from a middle layer, so that the
/// budget (rows × layers) reaches more rows: a row started at `layer`
/// enters it with the hidden state its document kept there, which serves as
/// far as the row's first layers deviate little from full prefill (on Gemma
/// 3 270M they deviate too much: docs/RESULTS.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Resume {
    /// The layer those rows start at (its input is kept with the documents).
    pub layer: usize,
    /// Share of the budget spent on the top rows recomputed from layer 0;
    /// the rest goes to the next rows from `layer`.
    pub deep_share: f64,
}

/// ProphetKV's options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProphetOptions {
    /// Stage I mode.
    pub probe: Probe,
    /// What Stage I scores a row by (with [`Probe::Attend`]).
    pub signal: Signal,
    /// Layer fusion.
    pub fusion: Fusion,
    /// Layers whose scores count (`None`: all).
    pub score_layers: Option<Vec<usize>>,
    /// Selection unit.
    pub granularity: Granularity,
    /// A row also scores as high as any of the `spread` rows before it in
    /// its document, so an answer right after the words a question matches
    /// is chosen with them (0: off).
    pub spread: usize,
    /// How many rows a request recomputes.
    pub budget: Budget,
    /// Spend part of the budget on rows recomputed from a middle layer.
    pub resume: Option<Resume>,
    /// Stage I probes: with more than one, an even share of the budget is
    /// recomputed after each probe but the last, so that the next one scores
    /// the rows against a cache already partly repaired. (Those rows do not
    /// see the rows repaired after them, so at ratio 1 this is not `full`.)
    pub probes: usize,
}

impl Default for ProphetOptions {
    /// The selection for models with sliding-window layers (see
    /// [`ProphetOptions::for_model`]).
    fn default() -> Self {
        Self {
            probe: Probe::Attend,
            signal: Signal::Attention,
            fusion: Fusion::Max,
            score_layers: None,
            granularity: Granularity::Token,
            spread: 4,
            budget: Budget::Fixed,
            resume: None,
            probes: 1,
        }
    }
}

impl ProphetOptions {
    /// The default selection for a model, by its attention. With
    /// sliding-window layers (Gemma 3): max fusion and a spread of 4, so
    /// that rows a windowed layer attends to and an answer right after the
    /// matched words both rank high. With global attention in every layer
    /// (Llama, SmolLM2): the paper's mean fusion without spread, which wins
    /// there (docs/RESULTS.md, "The second family").
    pub fn for_model(config: &ModelConfig) -> Self {
        let windowed = config.layers.iter().any(|l| l.sliding_window.is_some());
        if windowed {
            Self::default()
        } else {
            Self {
                fusion: Fusion::Mean,
                spread: 0,
                ..Self::default()
            }
        }
    }
}

/// Everything a reuse run is configured with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReuseConfig {
    /// The strategy.
    pub strategy: StrategyKind,
    /// Fraction of eligible rows to recompute, in `[0, 1]`.
    pub ratio: f64,
    /// Whether a document directly after the anchor may be recomputed (its cache is exact).
    pub first_doc_eligible: bool,
    /// ProphetKV's options.
    pub prophet: ProphetOptions,
    /// EPIC: fixed rows per document; `None` spreads the ratio's budget over documents.
    pub epic_rows: Option<usize>,
    /// Seed of `random`.
    pub seed: u64,
}

impl Default for ReuseConfig {
    fn default() -> Self {
        Self {
            strategy: StrategyKind::ProphetKv,
            ratio: 0.2,
            first_doc_eligible: false,
            prophet: ProphetOptions::default(),
            epic_rows: None,
            seed: 0,
        }
    }
}

impl ReuseConfig {
    /// The defaults with the model's default selection
    /// ([`ProphetOptions::for_model`]).
    pub fn for_model(config: &ModelConfig) -> Self {
        Self {
            prophet: ProphetOptions::for_model(config),
            ..Self::default()
        }
    }

    /// Layers whose input the documents must keep for this configuration
    /// (see [`crate::compute_doc_cache_keeping`]): none unless ProphetKV
    /// resumes rows at a middle layer.
    pub fn hidden_layers(&self) -> Vec<usize> {
        match (self.strategy, self.prophet.resume) {
            (StrategyKind::ProphetKv, Some(r)) => vec![r.layer],
            _ => Vec::new(),
        }
    }

    /// Checks every value against a model with `num_layers` layers, naming
    /// the option that is wrong; the result is the only form [`crate::run`]
    /// accepts.
    pub fn validate(&self, num_layers: usize) -> Result<ValidReuseConfig> {
        if !(0.0..=1.0).contains(&self.ratio) || self.ratio.is_nan() {
            return Err(ReuseError::Ratio(self.ratio));
        }
        if let Budget::Mass {
            share,
            floor,
            ceiling,
        } = self.prophet.budget
        {
            if !(share > 0.0 && share <= 1.0) {
                return Err(ReuseError::Option {
                    name: "budget mass",
                    reason: format!("{share} is not in (0, 1]"),
                });
            }
            if !(0.0 <= floor && floor <= ceiling && ceiling <= 1.0) {
                return Err(ReuseError::Option {
                    name: "budget bounds",
                    reason: format!("need 0 <= floor <= ceiling <= 1, got {floor} and {ceiling}"),
                });
            }
        }
        if let Some(r) = self.prophet.resume {
            if r.layer == 0 || r.layer >= num_layers {
                return Err(ReuseError::Option {
                    name: "resume layer",
                    reason: format!("{} is not in 1..{num_layers}", r.layer),
                });
            }
            if !(0.0..=1.0).contains(&r.deep_share) {
                return Err(ReuseError::Option {
                    name: "resume deep share",
                    reason: format!("{} is not in [0, 1]", r.deep_share),
                });
            }
        }
        if self.prophet.signal != Signal::Attention && self.prophet.probe != Probe::Attend {
            return Err(ReuseError::Option {
                name: "signal",
                reason: "flow and oracle-deviation weigh the attention of the \
                         question over the assembled context: they need the attend probe"
                    .into(),
            });
        }
        if self.prophet.probes == 0 {
            return Err(ReuseError::Option {
                name: "probes",
                reason: "must be at least 1".into(),
            });
        }
        if let Granularity::Block(0) = self.prophet.granularity {
            return Err(ReuseError::Option {
                name: "block size",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(layers) = &self.prophet.score_layers {
            if layers.is_empty() {
                return Err(ReuseError::Option {
                    name: "score layers",
                    reason: "must name at least one layer".into(),
                });
            }
            if let Some(&l) = layers.iter().find(|&&l| l >= num_layers) {
                return Err(ReuseError::Option {
                    name: "score layers",
                    reason: format!("layer {l} does not exist (the model has {num_layers})"),
                });
            }
        }
        Ok(ValidReuseConfig {
            config: self.clone(),
            num_layers,
        })
    }
}

/// A [`ReuseConfig`] whose values were checked for a model with
/// [`ValidReuseConfig::num_layers`] layers. Only [`ReuseConfig::validate`]
/// builds one, so nothing downstream checks again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidReuseConfig {
    config: ReuseConfig,
    num_layers: usize,
}

impl ValidReuseConfig {
    /// The layer count of the model it was checked for.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Refuses a run on a model with another layer count than it was checked for.
    pub(crate) fn check_layers(&self, num_layers: usize) -> Result<()> {
        if self.num_layers != num_layers {
            return Err(ReuseError::Option {
                name: "config",
                reason: format!(
                    "validated for a model of {} layers, run on one of {num_layers}",
                    self.num_layers
                ),
            });
        }
        Ok(())
    }
}

impl std::ops::Deref for ValidReuseConfig {
    type Target = ReuseConfig;
    fn deref(&self) -> &ReuseConfig {
        &self.config
    }
}
