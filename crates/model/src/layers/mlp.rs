//! The gated MLP: `down(act(gate(x)) * up(x))`.

use candle_core::Tensor;

use super::activation::gated;
use super::linear::{Linear, PassKind};
use crate::config::Activation;
use crate::Result;

#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
    pub(crate) activation: Activation,
}

impl Mlp {
    pub(crate) fn forward(&self, x: &Tensor, kind: PassKind) -> Result<Tensor> {
        let gate = self.gate.forward(x, kind)?;
        let up = self.up.forward(x, kind)?;
        self.down
            .forward(&gated(&gate, &up, self.activation)?, kind)
    }
}
