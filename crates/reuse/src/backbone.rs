//! The seam between reuse and the model: the few primitives strategies use.

use candle_core::Tensor;
use prophetkv_model::{Forward, Kv, Model, ModelError, RowsOutput};

/// What the strategies need from a transformer. Implemented by
/// [`prophetkv_model::Model`]; tests use the same type with tiny random weights.
pub trait Backbone {
    /// Transformer blocks.
    fn num_layers(&self) -> usize;
    /// Longest sequence the model supports.
    fn max_position(&self) -> usize;
    /// How far back a layer's queries see (`None`: the whole sequence).
    fn sliding_window(&self, layer: usize) -> Option<usize>;
    /// Runs rows through a range of layers against `kv` (see [`Forward`]).
    fn forward(&self, kv: &mut Kv, pass: &Forward<'_>) -> Result<RowsOutput, ModelError>;
    /// Rotated keys a layer would compute for hidden states entering it.
    fn layer_keys(
        &self,
        layer: usize,
        hidden: &Tensor,
        positions: &[u32],
    ) -> Result<Tensor, ModelError>;
    /// Logits of final-layer hidden states.
    fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError>;
    /// A cache from pre-RoPE keys and values placed at `positions`.
    fn kv_from_raw(
        &self,
        positions: Vec<u32>,
        layers: Vec<(Tensor, Tensor)>,
    ) -> Result<Kv, ModelError>;
    /// An empty cache.
    fn new_kv(&self) -> Result<Kv, ModelError>;
}

impl Backbone for Model {
    fn num_layers(&self) -> usize {
        self.config().num_layers()
    }
    fn max_position(&self) -> usize {
        self.config().max_position
    }
    fn sliding_window(&self, layer: usize) -> Option<usize> {
        self.config()
            .layers
            .get(layer)
            .and_then(|l| l.sliding_window)
    }
    fn forward(&self, kv: &mut Kv, pass: &Forward<'_>) -> Result<RowsOutput, ModelError> {
        Model::forward(self, kv, pass)
    }
    fn layer_keys(
        &self,
        layer: usize,
        hidden: &Tensor,
        positions: &[u32],
    ) -> Result<Tensor, ModelError> {
        Model::layer_keys(self, layer, hidden, positions)
    }
    fn logits(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Model::logits(self, hidden)
    }
    fn kv_from_raw(
        &self,
        positions: Vec<u32>,
        layers: Vec<(Tensor, Tensor)>,
    ) -> Result<Kv, ModelError> {
        Model::kv_from_raw(self, positions, layers)
    }
    fn new_kv(&self) -> Result<Kv, ModelError> {
        Model::new_kv(self)
    }
}
