//! Attention on a GPU in one kernel, with the scores kept on chip.
//!
//! The chunked path writes every chunk's `(heads, rows, keys)` scores to
//! memory, reads them back for the softmax and again for the product with
//! the values: at 32 heads and 16k keys that traffic, not arithmetic, bounds
//! long prefills of 8B-class models. This kernel (`flash_attention.cu`)
//! computes scores tile by tile on tensor cores and folds them into an online
//! softmax, so it reads each key and value once per 64 rows and writes only
//! the output. It reads the cache in place (no head-major copies) and runs a
//! whole layer's rows, scattered or not, in one launch.
//!
//! bf16 and f16, head sizes 64, 128 and 256; compiled once per process with
//! NVRTC for compute capability 8.0 (Ampere) and newer.
//! `scripts/flash_attention_emulate.py` runs the kernel's index logic lane by
//! lane on the CPU against plain attention: the check to run after changing
//! the source, before a GPU is at hand.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Shape, Tensor};

use super::masked_softmax::u32_view;
use super::{FLASH_HEAD_DIMS as HEAD_DIMS, FLASH_TILE_ROWS as ROWS_PER_TILE};
use crate::{ModelError, Result};

const SOURCE: &str = include_str!("flash_attention.cu");

/// Threads per block; `THREADS` in the source.
const THREADS: u32 = 128;

/// Blocks below which a launch splits each tile's keys over several blocks:
/// about the SMs of a large GPU, so that a decode step's one tile per KV
/// head does not stream its keys through one SM.
const SPLIT_BELOW_BLOCKS: usize = 128;

/// How many blocks share each tile's keys, for `blocks` tiles × KV heads
/// whose longest key range is `max_keys` slots: enough to fill
/// [`SPLIT_BELOW_BLOCKS`], at least two key tiles a block.
fn key_splits(blocks: usize, max_keys: usize, head_dim: usize) -> usize {
    if blocks == 0 || blocks >= SPLIT_BELOW_BLOCKS {
        return 1;
    }
    let key_tiles = max_keys.div_ceil(keys_per_tile(head_dim));
    SPLIT_BELOW_BLOCKS
        .div_ceil(blocks)
        .min(key_tiles / 2)
        .max(1)
}

/// Keys per tile for a head size; `BN` in the source's instantiations.
fn keys_per_tile(head_dim: usize) -> usize {
    if head_dim == 256 {
        32
    } else {
        64
    }
}

/// Shared memory a block of head size `d` uses (`Tiles::BYTES` in the source).
fn shared_bytes(d: usize) -> u32 {
    let bn = keys_per_tile(d);
    let elems = (ROWS_PER_TILE + 2 * bn) * (d + 8);
    (2 * elems + 4 * bn) as u32
}

/// Whether `device` runs the kernels: `mma.sync` on bf16 and `ldmatrix`
/// need compute capability 8.0 (Ampere) or newer.
pub(crate) fn runs_on(device: &candle_core::Device) -> bool {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
    let candle_core::Device::Cuda(cuda) = device else {
        return false;
    };
    cuda.cuda_stream()
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .is_ok_and(|major| major >= 8)
}

/// The kernels' PTX, compiled on first use.
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        let opts = CompileOptions {
            arch: Some("compute_80"),
            ..Default::default()
        };
        compile_ptx_with_opts(SOURCE, opts)
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| ModelError::Device(format!("compiling flash attention: {e}")))
}

/// Attention of `q` `(n, heads, d)` (rotated, scaled) over `k`, `v`
/// `(slots, kv_heads, d)`: row `i` sees slot `j` when `kpos[j] <= qpos[i]`
/// and, with a window, `qpos[i] - kpos[j] < window`, reading only the slots
/// of its tile's range in `tiles` (two u32 per tile of
/// [`ROWS_PER_TILE`] rows `i * group + g`), the longest `max_keys` slots,
/// none reaching past `max_end`.
/// `qpos`, `kpos` and `tiles` are u32 on the GPU. Returns `(n, heads * d)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    qpos: &Tensor,
    kpos: &Tensor,
    tiles: &Tensor,
    max_keys: usize,
    max_end: usize,
    window: Option<usize>,
) -> Result<Tensor> {
    let (n, heads, d) = q.dims3()?;
    let op = FlashAttention {
        qpos: qpos.clone(),
        kpos: kpos.clone(),
        tiles: tiles.clone(),
        max_keys,
        max_end,
        window: window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
    };
    let out = q.contiguous()?.apply_op3_no_bwd(k, v, &op)?;
    Ok(out.reshape((n, heads * d))?)
}

struct FlashAttention {
    qpos: Tensor,
    kpos: Tensor,
    tiles: Tensor,
    max_keys: usize,
    /// The largest end of any tile's range: the kernel reads slots below it.
    max_end: usize,
    window: u32,
}

/// Start offset and row stride of a `(slots, kv_heads, d)` cache whose rows
/// are contiguous and 16-byte aligned, as the kernel reads them.
fn cache_rows(layout: &Layout, what: &str) -> candle_core::Result<(usize, usize)> {
    let stride = layout.stride();
    let dims = layout.dims();
    if dims.len() != 3 || stride[2] != 1 || stride[1] != dims[2] {
        candle_core::bail!(
            "flash attention: {what} rows must be contiguous ({dims:?}, {stride:?})"
        );
    }
    let (offset, row) = (layout.start_offset(), stride[0]);
    if offset % 8 != 0 || row % 8 != 0 || row > i32::MAX as usize {
        candle_core::bail!("flash attention: {what} rows must be 16-byte aligned");
    }
    Ok((offset, row))
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("flash attention runs on a GPU only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        q_layout: &Layout,
        k: &CudaStorage,
        k_layout: &Layout,
        v: &CudaStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = q.device();
        let (n, heads, d) = q_layout.shape().dims3()?;
        let (slots, kv_heads, k_dim) = k_layout.shape().dims3()?;
        if k_dim != d
            || v_layout.dims() != k_layout.dims()
            || kv_heads == 0
            || heads % kv_heads != 0
            || !HEAD_DIMS.contains(&d)
        {
            candle_core::bail!(
                "flash attention: q {:?}, k {:?}, v {:?}",
                q_layout.dims(),
                k_layout.dims(),
                v_layout.dims()
            );
        }
        let Some((q_start, q_end)) = q_layout.contiguous_offsets() else {
            candle_core::bail!("flash attention: q must be contiguous");
        };
        if q_start % 8 != 0 {
            candle_core::bail!("flash attention: q must be 16-byte aligned");
        }
        let (k_start, k_row) = cache_rows(k_layout, "key")?;
        let (v_start, v_row) = cache_rows(v_layout, "value")?;
        let group = heads / kv_heads;
        let num_tiles = (n * group).div_ceil(ROWS_PER_TILE);
        if self.qpos.dims1()? != n
            || self.kpos.dims1()? != slots
            || self.tiles.dims1()? != 2 * num_tiles
        {
            candle_core::bail!(
                "flash attention: {n} queries over {slots} slots, {:?} query and {:?} key positions, {:?} tile ranges",
                self.qpos.dims(),
                self.kpos.dims(),
                self.tiles.dims()
            );
        }
        if self.max_end > slots {
            candle_core::bail!(
                "flash attention: a tile reads up to slot {}, beyond the {slots} slots",
                self.max_end
            );
        }
        let (qp_storage, qp_layout) = self.qpos.storage_and_layout();
        let (kp_storage, kp_layout) = self.kpos.storage_and_layout();
        let (t_storage, t_layout) = self.tiles.storage_and_layout();
        let qpos = u32_view(&qp_storage, qp_layout, "flash attention")?;
        let kpos = u32_view(&kp_storage, kp_layout, "flash attention")?;
        let tiles = u32_view(&t_storage, t_layout, "flash attention")?;
        let ptx = ptx().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let shared = shared_bytes(d);
        let splits = key_splits(num_tiles * kv_heads, self.max_keys, d);
        let cfg = LaunchConfig {
            grid_dim: (num_tiles as u32, kv_heads as u32, splits as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: shared,
        };
        let rows_pad = num_tiles * ROWS_PER_TILE;
        let combine_cfg = LaunchConfig {
            grid_dim: ((n * group) as u32, kv_heads as u32, 1),
            block_dim: (d as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n_arg, group_arg, kv_arg) = (n as i32, group as i32, kv_heads as i32);
        let (k_stride, v_stride, window) = (k_row as i32, v_row as i32, self.window);
        let (splits_arg, rows_pad_arg) = (splits as i32, rows_pad as i32);
        let out_len = n * heads * d;
        // Partial outputs and (max, sum) per split and row; one element each
        // when unsplit (the kernel does not touch them then).
        let parts = if splits > 1 {
            splits * kv_heads * rows_pad
        } else {
            1
        };
        // SAFETY: a split launch writes every (split, KV head, row) its
        // combine reads; an unsplit one neither writes nor reads them.
        let part_o = unsafe { dev.alloc::<f32>(parts * d)? };
        let part_ml = unsafe { dev.alloc::<f32>(parts * 2)? };
        macro_rules! launch {
            ($ty:ty, $prefix:literal, $variant:ident) => {{
                let (
                    CudaStorageSlice::$variant(qs),
                    CudaStorageSlice::$variant(ks),
                    CudaStorageSlice::$variant(vs),
                ) = (&q.slice, &k.slice, &v.slice)
                else {
                    candle_core::bail!("flash attention: q, k and v must share one dtype");
                };
                let name = format!("flash_attention_{}_{d}", $prefix);
                let func = dev.get_or_load_custom_func(&name, "prophetkv_flash_attention", ptx)?;
                func.set_attribute(
                    CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared as i32,
                )
                .w()?;
                let (qs, ks, vs) = (
                    qs.slice(q_start..q_end),
                    ks.slice(k_start..),
                    vs.slice(v_start..),
                );
                // SAFETY: the kernel (or, split, the combine) writes every
                // row of the output.
                let dst = unsafe { dev.alloc::<$ty>(out_len)? };
                if num_tiles > 0 {
                    let mut builder = func.builder();
                    builder.arg(&qs);
                    builder.arg(&ks);
                    builder.arg(&vs);
                    builder.arg(&dst);
                    builder.arg(&qpos);
                    builder.arg(&kpos);
                    builder.arg(&tiles);
                    candle_core::builder_arg!(
                        builder, n_arg, group_arg, kv_arg, k_stride, v_stride, window
                    );
                    builder.arg(&part_o);
                    builder.arg(&part_ml);
                    builder.arg(&splits_arg);
                    // SAFETY: the kernel reads `n * heads * d` query values,
                    // the slots its tiles name (below `max_end <= slots`,
                    // checked above), `n` and `slots` positions,
                    // and writes `n * heads * d` values or, split, `parts`
                    // partial rows.
                    unsafe { builder.launch(cfg) }.w()?;
                    if splits > 1 {
                        let name = format!("flash_combine_{}_{d}", $prefix);
                        let func =
                            dev.get_or_load_custom_func(&name, "prophetkv_flash_attention", ptx)?;
                        let mut builder = func.builder();
                        builder.arg(&part_o);
                        builder.arg(&part_ml);
                        builder.arg(&dst);
                        candle_core::builder_arg!(
                            builder,
                            n_arg,
                            group_arg,
                            kv_arg,
                            splits_arg,
                            rows_pad_arg
                        );
                        // SAFETY: reads the partial rows the split launch
                        // wrote, writes `n * heads * d` values.
                        unsafe { builder.launch(combine_cfg) }.w()?;
                    }
                }
                CudaStorageSlice::$variant(dst)
            }};
        }
        let slice = match &q.slice {
            CudaStorageSlice::BF16(_) => launch!(half::bf16, "bf16", BF16),
            CudaStorageSlice::F16(_) => launch!(half::f16, "f16", F16),
            _ => candle_core::bail!("flash attention: bf16 or f16 only"),
        };
        let out = CudaStorage {
            slice,
            device: dev.clone(),
        };
        Ok((out, Shape::from((n, heads, d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_launches_too_small_for_the_gpu_split_their_keys() {
        // A decode step of a model with one KV head over 1,024 keys.
        assert_eq!(key_splits(1, 1024, 256), 16);
        // Eight KV heads: 16 blocks a split, at least two key tiles each.
        assert_eq!(key_splits(8, 1024, 128), 8);
        assert_eq!(key_splits(8, 100, 128), 1);
        assert_eq!(key_splits(256, 1 << 15, 128), 1);
        assert_eq!(key_splits(0, 1024, 128), 1);
    }

    #[test]
    fn the_source_compiles_with_nvrtc_without_a_gpu() {
        // NVRTC is a library: this needs the CUDA wheels on the library
        // path (scripts/cuda-build.sh), not a GPU.
        let ptx = ptx().unwrap();
        for d in HEAD_DIMS {
            for kind in ["bf16", "f16"] {
                assert!(ptx.contains(&format!(".entry flash_attention_{kind}_{d}(")));
                assert!(ptx.contains(&format!(".entry flash_combine_{kind}_{d}(")));
            }
        }
    }

    #[test]
    fn shared_memory_fits_a_block_on_ampere_and_later() {
        for d in HEAD_DIMS {
            assert!(
                shared_bytes(d) <= 99 * 1024,
                "head size {d}: {}",
                shared_bytes(d)
            );
        }
    }
}
