//! `act(gate) * up`, fused and parallel on the CPU.
//!
//! candle's element-wise GELU runs on one thread and the product needs a
//! second pass; on the MLP's `(rows, intermediate)` tensors that was ~10% of
//! prefill. Other devices use candle's ops.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::config::Activation;
use crate::kernels;
use crate::Result;

const CHUNK: usize = 8192;

/// `act(gate) * up` for two tensors of the same shape.
pub(crate) fn gated(gate: &Tensor, up: &Tensor, activation: Activation) -> Result<Tensor> {
    if gate.device().is_cpu() && gate.dtype() == candle_core::DType::F32 {
        let (gate, up) = (gate.contiguous()?, up.contiguous()?);
        return Ok(gate.apply_op2_no_bwd(&up, &GatedActivation(activation))?);
    }
    let g = match activation {
        Activation::GeluTanh => gate.gelu()?,
        Activation::Silu => candle_nn::ops::silu(gate)?,
    };
    Ok((g * up)?)
}

struct GatedActivation(Activation);

impl CustomOp2 for GatedActivation {
    fn name(&self) -> &'static str {
        "gated-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(g), CpuStorage::F32(u)) = (s1, s2) else {
            candle_core::bail!("gated-activation: f32 inputs only");
        };
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "gated-activation: shapes {:?} and {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let (Some((g0, g1)), Some((u0, u1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("gated-activation: inputs must be contiguous");
        };
        let (g, u) = (&g[g0..g1], &u[u0..u1]);
        let activation = self.0;
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| match activation {
                Activation::GeluTanh => kernels::gelu_tanh_mul(g, u, o),
                Activation::Silu => kernels::silu_mul(g, u, o),
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_activation_matches_candle_ops() {
        let g = Tensor::randn(0f32, 2.0, (7, 300), &Device::Cpu).unwrap();
        let u = Tensor::randn(0f32, 2.0, (7, 300), &Device::Cpu).unwrap();
        for (act, reference) in [
            (Activation::GeluTanh, (g.gelu().unwrap() * &u).unwrap()),
            (
                Activation::Silu,
                (candle_nn::ops::silu(&g).unwrap() * &u).unwrap(),
            ),
        ] {
            let fused = gated(&g, &u, act).unwrap();
            let d = (fused - reference)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "{act:?}: {d}");
        }
    }
}
