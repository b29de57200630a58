//! One request through assembly, selection and recomputation.
//!
//! Every strategy ends the same way: the chosen rows, the fresh rows and the
//! question run through the layers against the assembled cache, overwriting
//! their slots; the last question row gives the first answer token's logits
//! and the cache is ready for decoding.

use std::time::Instant;

use candle_core::{Device, Tensor};
use prophetkv_model::{Forward, Kv, Observe, Rows};

use crate::backbone::Backbone;
use crate::deviation::kv_gaps;
use crate::layout::{assemble, Layout, Piece};
use crate::select::{
    budget, fuse, leading_rows, normalise, random_rows, rows_for_mass, spread_forward, top_blocks,
    top_k_stable, LayerScores,
};
use crate::stats::{ReuseStats, StageTimings};
use crate::strategy::{
    Budget, Granularity, Probe, ReuseConfig, Signal, StrategyKind, ValidReuseConfig,
};
use crate::{Result, ReuseError};
use prophetkv_model::DocCache;

/// A request: anchor, documents and fresh pieces in order, then the question.
#[derive(Debug, Clone, Copy)]
pub struct ReuseRequest<'a> {
    /// BOS + instruction prefix, cached once.
    pub anchor: &'a DocCache,
    /// Documents and fresh segments between the anchor and the question.
    pub pieces: &'a [Piece<'a>],
    /// The question; the answer starts after its last token.
    pub query: &'a [u32],
}

/// The outcome of [`run`].
#[derive(Debug)]
pub struct ReuseOutput {
    /// The corrected cache, ready for decoding.
    pub kv: Kv,
    /// Logits `(1, vocab)` of the first answer token.
    pub logits: Tensor,
    /// Where every row lives.
    pub layout: Layout,
    /// Stage I's fused score of every eligible row (ProphetKV and CacheBlend).
    pub scores: Option<Vec<f32>>,
    /// Counts, choices and timings.
    pub stats: ReuseStats,
}

/// Milliseconds since `since`, once `device` has finished the work queued so
/// far (a GPU runs ahead of the host: without the wait a stage's time would
/// land in the next one's).
fn ms(since: Instant, device: &Device) -> Result<f64> {
    device.synchronize()?;
    Ok(since.elapsed().as_secs_f64() * 1e3)
}

/// Layer-0 outputs of CacheBlend's selection pass, by slot (ascending).
struct LayerZero {
    hidden: Tensor,
    slots: Vec<usize>,
}

/// What a strategy chose before the recompute.
struct Selection {
    /// Eligible slots to recompute through every layer, ascending.
    slots: Vec<usize>,
    /// Eligible slots to recompute from a middle layer on, ascending, and
    /// that layer (ProphetKV with [`crate::Resume`]).
    resumed: (Vec<usize>, usize),
    /// Eligible slots already recomputed through every layer while choosing
    /// (ProphetKV between probes), ascending.
    repaired: Vec<usize>,
    /// Stage I score of every eligible row, when the strategy scores.
    scores: Option<Vec<f32>>,
    /// CacheBlend: the recompute continues from layer 1 with these.
    layer_zero: Option<LayerZero>,
}

impl Selection {
    /// Eligible `slots` recomputed through every layer, nothing else.
    fn rows(slots: Vec<usize>) -> Self {
        Self {
            slots,
            resumed: (Vec::new(), 0),
            repaired: Vec::new(),
            scores: None,
            layer_zero: None,
        }
    }
}

/// Runs `request` with `config`'s strategy.
pub fn run(
    model: &impl Backbone,
    request: &ReuseRequest<'_>,
    config: &ValidReuseConfig,
    device: &Device,
) -> Result<ReuseOutput> {
    let num_layers = model.num_layers();
    config.check_layers(num_layers)?;
    let started = Instant::now();
    let layout = Layout::new(
        request.anchor,
        request.pieces,
        request.query,
        config.first_doc_eligible,
    )?;
    if layout.len() > model.max_position() {
        return Err(ReuseError::ContextOverflow {
            len: layout.len(),
            max: model.max_position(),
        });
    }
    let mut timings = StageTimings::default();
    let mut rows_per_layer = vec![0usize; num_layers];

    let (kv, selection, hidden) = if config.strategy == StrategyKind::Full {
        // The reference: a plain prefill of the same ids, no cache involved.
        let mut kv = model.new_kv()?;
        let slots: Vec<usize> = (0..layout.len()).collect();
        let t = Instant::now();
        let hidden = forward_slots(
            model,
            &mut kv,
            &layout,
            &slots,
            None,
            0..num_layers,
            &mut rows_per_layer,
        )?;
        timings.recompute_ms = ms(t, device)?;
        let selection = Selection::rows(layout.eligible.clone());
        (kv, selection, hidden)
    } else {
        let mut kv = assemble(model, &layout, request.anchor, request.pieces, device)?;
        timings.assembly_ms = ms(started, device)?;
        let t = Instant::now();
        let selection = select(model, &mut kv, &layout, config, &mut rows_per_layer)?;
        timings.probe_ms = ms(t, device)?;
        let t = Instant::now();
        let docs: Vec<&DocCache> = request
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Document(d) => Some(*d),
                Piece::Fresh(_) => None,
            })
            .collect();
        let hidden = recompute(
            model,
            &mut kv,
            &layout,
            &selection,
            &docs,
            &mut rows_per_layer,
        )?;
        timings.recompute_ms = ms(t, device)?;
        (kv, selection, hidden)
    };

    let t = Instant::now();
    let logits = model.logits(&hidden)?;
    timings.first_token_ms = ms(t, device)?;
    let stats = stats(
        config,
        &layout,
        &selection,
        num_layers,
        rows_per_layer,
        timings,
    );
    Ok(ReuseOutput {
        kv,
        logits,
        layout,
        scores: selection.scores,
        stats,
    })
}

/// The strategy's choice of eligible rows (Stage I where it has one).
fn select(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    config: &ReuseConfig,
    rows_per_layer: &mut [usize],
) -> Result<Selection> {
    let eligible = layout.eligible.len();
    // The most rows the request may recompute (a mass budget decides its
    // count once Stage I has scored the rows).
    let k = match (config.strategy, config.prophet.budget) {
        (StrategyKind::ProphetKv, Budget::Mass { ceiling, .. }) => budget(ceiling, eligible),
        _ => budget(config.ratio, eligible),
    };
    let plain = |chosen: Vec<usize>| Selection::rows(pick(&layout.eligible, &chosen));
    if k == 0 {
        // Nothing to choose (no eligible rows, or a ratio of 0): no probe.
        return Ok(plain(Vec::new()));
    }
    Ok(match config.strategy {
        StrategyKind::Full | StrategyKind::Naive => plain(Vec::new()),
        StrategyKind::ProphetKv => prophet_select(model, kv, layout, config, k, rows_per_layer)?,
        StrategyKind::CacheBlend => {
            let (scores, layer_zero) = key_deviation(model, kv, layout, rows_per_layer)?;
            let chosen = pick(&layout.eligible, &top_k_stable(&scores, k));
            Selection {
                scores: Some(scores),
                layer_zero: Some(layer_zero),
                ..Selection::rows(chosen)
            }
        }
        StrategyKind::Epic => plain(leading_rows(&eligible_groups(layout), config.epic_rows, k)),
        StrategyKind::Random => plain(random_rows(layout.eligible.len(), k, config.seed)),
    })
}

/// ProphetKV's choice of at most `k` eligible rows: Stage I's scores, the
/// budget they set (a mass budget) and, with several probes, a repair of
/// an even share of the rows between probes, so that each later probe sees
/// the question's attention over a cache already partly corrected.
fn prophet_select(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    config: &ReuseConfig,
    mut k: usize,
    rows_per_layer: &mut [usize],
) -> Result<Selection> {
    let eligible = layout.eligible.len();
    let groups = eligible_groups(layout);
    let options = &config.prophet;
    let choose = |scores: &[f32], n: usize| match options.granularity {
        Granularity::Token => top_k_stable(scores, n),
        Granularity::Block(b) => top_blocks(scores, &groups, b, n),
    };
    // Scores of the rows not yet repaired (the repaired rank last).
    let score = |kv: &mut Kv, rows_per_layer: &mut [usize], repaired: &[usize]| {
        let fused = probe(model, kv, layout, config, rows_per_layer)?;
        let mut scores = spread_forward(&fused, &groups, options.spread);
        for &i in repaired {
            scores[i] = f32::NEG_INFINITY;
        }
        Ok::<_, ReuseError>(scores)
    };
    let mut repaired: Vec<usize> = Vec::new();
    let mut scores = score(kv, rows_per_layer, &repaired)?;
    if let Budget::Mass { share, floor, .. } = options.budget {
        k = rows_for_mass(&scores, share).clamp(budget(floor, eligible), k);
    }
    for round in 1..options.probes {
        let n = k * round / options.probes - repaired.len();
        let chosen = choose(&scores, n);
        if !chosen.is_empty() {
            let slots = pick(&layout.eligible, &chosen);
            let layers = 0..model.num_layers();
            forward_slots(model, kv, layout, &slots, None, layers, rows_per_layer)?;
        }
        repaired.extend(chosen);
        repaired.sort_unstable();
        scores = score(kv, rows_per_layer, &repaired)?;
    }
    let k = k - repaired.len();
    let (deep, resumed) = match options.resume {
        None => (choose(&scores, k), (Vec::new(), 0)),
        Some(r) => {
            // The top rows through every layer; the rest of the budget
            // (rows × layers) on the next rows from r.layer.
            let layers = model.num_layers();
            let deep_rows = (k as f64 * r.deep_share).floor() as usize;
            let shallow_rows = (k - deep_rows) * layers / (layers - r.layer);
            let deep = choose(&scores, deep_rows);
            let all = choose(
                &scores,
                (deep_rows + shallow_rows).min(eligible - repaired.len()),
            );
            let rest: Vec<usize> = all
                .into_iter()
                .filter(|i| deep.binary_search(i).is_err())
                .collect();
            (deep, (pick(&layout.eligible, &rest), r.layer))
        }
    };
    let slots = pick(&layout.eligible, &deep);
    Ok(Selection {
        resumed,
        repaired: pick(&layout.eligible, &repaired),
        scores: Some(scores),
        ..Selection::rows(slots)
    })
}

/// Stage II: the selection, the fresh rows and the question through the
/// layers; returns the last question row's final hidden state.
fn recompute(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    selection: &Selection,
    docs: &[&DocCache],
    rows_per_layer: &mut [usize],
) -> Result<Tensor> {
    let num_layers = model.num_layers();
    let mut slots: Vec<usize> = selection
        .slots
        .iter()
        .copied()
        .chain(layout.fresh.iter().copied())
        .chain(layout.query.clone())
        .collect();
    slots.sort_unstable();
    let (resumed, resume_layer) = &selection.resumed;
    if !resumed.is_empty() {
        return recompute_resuming(
            model,
            kv,
            layout,
            (&slots, resumed, *resume_layer),
            docs,
            rows_per_layer,
        );
    }
    let Some(zero) = &selection.layer_zero else {
        return forward_slots(
            model,
            kv,
            layout,
            &slots,
            None,
            0..num_layers,
            rows_per_layer,
        );
    };
    if num_layers == 1 {
        // A one-layer model: the layer-0 pass already computed every row.
        return Ok(zero.hidden.narrow(0, zero.slots.len() - 1, 1)?);
    }
    // CacheBlend continues from layer 1 with the layer-0 outputs.
    let index = slots
        .iter()
        .map(|s| zero.slots.binary_search(s).map(|i| i as u32))
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| ReuseError::Option {
            name: "cacheblend",
            reason: "a recomputed row is missing from the layer-0 pass".into(),
        })?;
    let pass = Continued {
        slots: &slots,
        from: &zero.hidden,
        index,
        layers: 1..num_layers,
    };
    forward_continued(model, kv, layout, pass, rows_per_layer)
}

/// Rows entering a middle layer with hidden states gathered from `from`.
struct Continued<'a> {
    /// The rows' slots, ascending.
    slots: &'a [usize],
    /// Hidden states the rows' inputs are taken from.
    from: &'a Tensor,
    /// Row of `from` for each slot.
    index: Vec<u32>,
    /// The layers to run, from the one those states enter.
    layers: std::ops::Range<usize>,
}

/// Runs a [`Continued`] pass; returns the last row's hidden state.
fn forward_continued(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    pass: Continued<'_>,
    rows_per_layer: &mut [usize],
) -> Result<Tensor> {
    let input = pass
        .from
        .index_select(&Tensor::new(pass.index, pass.from.device())?, 0)?;
    forward_slots(
        model,
        kv,
        layout,
        pass.slots,
        Some(&input),
        pass.layers,
        rows_per_layer,
    )
}

/// Stage II with rows starting at a middle layer: `full` (ascending: the
/// deep selection, fresh rows and the question) run the layers below
/// `layer`, then join `resumed` (ascending), which enter `layer` with the
/// hidden states their documents kept, for the layers from it.
fn recompute_resuming(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    (full, resumed, layer): (&[usize], &[usize], usize),
    docs: &[&DocCache],
    rows_per_layer: &mut [usize],
) -> Result<Tensor> {
    let rows = rows_at(layout, full);
    let mut pass = Forward::new(&rows, model.num_layers());
    pass.layers = 0..layer;
    let early = model.forward(kv, &pass)?.hidden;
    for r in &mut rows_per_layer[..layer] {
        *r += full.len();
    }
    let kept = kept_hidden(layout, docs, resumed, layer)?.to_dtype(early.dtype())?;
    // Both lists ascend: merge them, indexing into [early; kept].
    let (mut slots, mut index) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < full.len() || j < resumed.len() {
        if j == resumed.len() || (i < full.len() && full[i] < resumed[j]) {
            slots.push(full[i]);
            index.push(i as u32);
            i += 1;
        } else {
            slots.push(resumed[j]);
            index.push((full.len() + j) as u32);
            j += 1;
        }
    }
    let pass = Continued {
        slots: &slots,
        from: &Tensor::cat(&[&early, &kept], 0)?,
        index,
        layers: layer..model.num_layers(),
    };
    forward_continued(model, kv, layout, pass, rows_per_layer)
}

/// The hidden states entering `layer` that the documents kept for the rows
/// at `slots` (ascending, all in documents), `(slots, hidden)`.
fn kept_hidden(
    layout: &Layout,
    docs: &[&DocCache],
    slots: &[usize],
    layer: usize,
) -> Result<Tensor> {
    let mut parts = Vec::new();
    for (d, (range, doc)) in layout.documents.iter().zip(docs).enumerate() {
        let rows: Vec<u32> = slots
            .iter()
            .filter(|s| range.contains(s))
            .map(|&s| (s - range.start) as u32)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let hidden = doc.hidden(layer).ok_or_else(|| ReuseError::Option {
            name: "resume layer",
            reason: format!(
                "document {d} was cached without the hidden states entering layer {layer}"
            ),
        })?;
        parts.push(hidden.index_select(&Tensor::new(rows, hidden.device())?, 0)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Runs the rows at `slots` (ascending) through `layers`; returns the hidden
/// state of the last one, `(1, hidden)`.
fn forward_slots(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    slots: &[usize],
    input: Option<&Tensor>,
    layers: std::ops::Range<usize>,
    rows_per_layer: &mut [usize],
) -> Result<Tensor> {
    let rows = rows_at(layout, slots);
    let mut pass = Forward::new(&rows, model.num_layers());
    pass.input = input;
    pass.layers = layers.clone();
    let out = model.forward(kv, &pass)?;
    for l in layers {
        rows_per_layer[l] += slots.len();
    }
    Ok(out.hidden.narrow(0, slots.len() - 1, 1)?)
}

fn rows_at(layout: &Layout, slots: &[usize]) -> Rows {
    Rows {
        tokens: slots.iter().map(|&s| layout.tokens[s]).collect(),
        positions: slots.iter().map(|&s| s as u32).collect(),
        slots: slots.to_vec(),
    }
}

/// `eligible[i]` for each chosen index `i`.
fn pick(eligible: &[usize], chosen: &[usize]) -> Vec<usize> {
    chosen.iter().map(|&i| eligible[i]).collect()
}

/// Number of eligible rows in each eligible document, in order.
fn eligible_groups(layout: &Layout) -> Vec<usize> {
    layout
        .documents
        .iter()
        .map(|d| layout.eligible.iter().filter(|s| d.contains(s)).count())
        .filter(|&n| n > 0)
        .collect()
}

/// ProphetKV Stage I: the question's attention over the uncorrected context,
/// per layer summed over question rows, restricted to eligible rows,
/// normalised, then fused over the scoring layers.
fn probe(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    config: &ReuseConfig,
    rows_per_layer: &mut [usize],
) -> Result<Vec<f32>> {
    let num_layers = model.num_layers();
    let q = layout.query.len();
    let (slots, observe, attend): (Vec<usize>, Observe, Option<std::ops::Range<usize>>) =
        match config.prophet.probe {
            Probe::Attend => {
                let slots = layout
                    .fresh
                    .iter()
                    .copied()
                    .chain(layout.query.clone())
                    .collect();
                let keys = 0..layout.len();
                let observe = match config.prophet.signal {
                    Signal::Attention | Signal::OracleDeviation => Observe::Attention(keys),
                    Signal::Flow => Observe::Flow(keys),
                };
                (slots, observe, None)
            }
            Probe::Isolated => (
                layout.query.clone().collect(),
                Observe::Scores(0..layout.query.start),
                Some(layout.query.clone()),
            ),
        };
    let rows = rows_at(layout, &slots);
    let mut pass = Forward::new(&rows, num_layers);
    pass.observe = observe;
    pass.attend = attend;
    let started = Instant::now();
    let out = model.forward(kv, &pass)?;
    let forward_ms = ms(started, out.hidden.device())?;
    rows_per_layer.iter_mut().for_each(|r| *r += slots.len());
    let attention = out.attention.unwrap_or_default();
    let deviation = match config.prophet.signal {
        Signal::OracleDeviation => Some(deviation_from_full(model, kv, layout)?),
        Signal::Attention | Signal::Flow => None,
    };
    let layers: Vec<usize> = match &config.prophet.score_layers {
        Some(list) => list.clone(),
        None => (0..num_layers).collect(),
    };
    // A windowed layer shows a row when any question row sees it; the first
    // question row reaches furthest back. Positions are slots, and every
    // eligible row lies before the question.
    let first_question_row = layout.query.start;
    let mut per_layer = Vec::with_capacity(layers.len());
    for l in layers {
        let mass = &attention[l];
        let n = mass.dim(0)?;
        let summed: Vec<f32> = mass.narrow(0, n - q, q)?.sum(0)?.to_vec1()?;
        let mut scores: Vec<f32> = layout.eligible.iter().map(|&s| summed[s]).collect();
        if let Some(deviation) = &deviation {
            scores
                .iter_mut()
                .zip(&deviation[l])
                .for_each(|(s, d)| *s *= d);
        }
        normalise(&mut scores);
        let first_visible = match model.sliding_window(l) {
            Some(w) => layout
                .eligible
                .partition_point(|&s| first_question_row.saturating_sub(s) >= w),
            None => 0,
        };
        per_layer.push(LayerScores {
            scores,
            first_visible,
        });
    }
    let fused = fuse(&per_layer, config.prophet.fusion);
    // Where Stage I's time goes: the probe's pass on the device, or reading
    // and fusing its attention on the host.
    tracing::debug!(
        rows = slots.len(),
        forward_ms,
        scoring_ms = started.elapsed().as_secs_f64() * 1e3 - forward_ms,
        "stage I"
    );
    Ok(fused)
}

/// How far each eligible row's cached key and value lie from a full
/// prefill's, per layer (`[layer][eligible row]`, as [`kv_gaps`] measures
/// it). Runs that prefill on its own cache; counts nothing as recomputed.
fn deviation_from_full(model: &impl Backbone, kv: &Kv, layout: &Layout) -> Result<Vec<Vec<f32>>> {
    let mut full = model.new_kv()?;
    let slots: Vec<usize> = (0..layout.len()).collect();
    let rows = rows_at(layout, &slots);
    let out = model.forward(&mut full, &Forward::new(&rows, model.num_layers()))?;
    let eligible: Vec<u32> = layout.eligible.iter().map(|&s| s as u32).collect();
    let index = Tensor::new(eligible, out.hidden.device())?;
    let at = |t: Tensor| t.index_select(&index, 0);
    (0..model.num_layers())
        .map(|l| {
            let reference = (&at(full.k_raw(l)?)?, &at(full.v(l)?)?);
            kv_gaps(reference, (&at(kv.k_raw(l)?)?, &at(kv.v(l)?)?))
        })
        .collect()
}

/// CacheBlend's selection pass: layer 0 for every document, fresh and
/// question row; then each row's layer-1 key deviation from its cached key
/// (squared L2, summed over heads). Returns the deviation of every eligible
/// row and the layer-0 outputs with their slots.
fn key_deviation(
    model: &impl Backbone,
    kv: &mut Kv,
    layout: &Layout,
    rows_per_layer: &mut [usize],
) -> Result<(Vec<f32>, LayerZero)> {
    let mut slots: Vec<usize> = layout
        .documents
        .iter()
        .flat_map(|d| d.clone())
        .chain(layout.fresh.iter().copied())
        .chain(layout.query.clone())
        .collect();
    slots.sort_unstable();
    let rows = rows_at(layout, &slots);
    let mut pass = Forward::new(&rows, model.num_layers());
    pass.layers = 0..1;
    let h1 = model.forward(kv, &pass)?.hidden;
    rows_per_layer[0] += slots.len();
    if model.num_layers() < 2 {
        let zero = LayerZero { hidden: h1, slots };
        return Ok((vec![0.0; layout.eligible.len()], zero));
    }
    let new_k = model.layer_keys(1, &h1, &rows.positions)?;
    let index = Tensor::new(
        slots.iter().map(|&s| s as u32).collect::<Vec<_>>(),
        h1.device(),
    )?;
    let cached = kv.k(1)?.index_select(&index, 0)?;
    let deviation: Vec<f32> = (new_k - cached)?
        .to_dtype(candle_core::DType::F32)?
        .sqr()?
        .flatten_from(1)?
        .sum(1)?
        .to_vec1()?;
    let scores = layout
        .eligible
        .iter()
        .map(|s| slots.binary_search(s).map(|i| deviation[i]).unwrap_or(0.0))
        .collect();
    Ok((scores, LayerZero { hidden: h1, slots }))
}

fn stats(
    config: &ReuseConfig,
    layout: &Layout,
    selection: &Selection,
    num_layers: usize,
    rows_per_layer: Vec<usize>,
    timings: StageTimings,
) -> ReuseStats {
    let full = config.strategy == StrategyKind::Full;
    let (resumed, layer) = &selection.resumed;
    let mut selected: Vec<usize> = selection
        .slots
        .iter()
        .chain(resumed)
        .chain(&selection.repaired)
        .copied()
        .collect();
    selected.sort_unstable();
    // A row resumed at a middle layer counts for the layers it ran.
    let spent = (selection.slots.len() + selection.repaired.len()) as f64
        + resumed.len() as f64 * (num_layers - layer) as f64 / num_layers as f64;
    let recompute_share = if layout.eligible.is_empty() {
        0.0
    } else {
        spent / layout.eligible.len() as f64
    };
    let selected_positions = layout
        .documents
        .iter()
        .map(|d| {
            selected
                .iter()
                .filter(|s| d.contains(s))
                .map(|&s| s as u32)
                .collect()
        })
        .collect();
    let doc_rows = layout.document_rows();
    let recomputed = if full {
        layout.len()
    } else {
        selected.len() + layout.fresh.len() + layout.query.len()
    };
    ReuseStats {
        strategy: config.strategy,
        ratio: config.ratio,
        context_tokens: layout.len(),
        eligible: layout.eligible.len(),
        selected: selected.len(),
        fresh: layout.fresh.len(),
        query: layout.query.len(),
        reused: if full { 0 } else { doc_rows - selected.len() },
        recomputed,
        recompute_share,
        selected_positions,
        rows_per_layer,
        timings,
    }
}
