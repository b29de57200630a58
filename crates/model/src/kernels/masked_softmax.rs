//! Attention's softmax on a GPU, with the position mask applied inside.
//!
//! candle's softmax gives each row one warp, whose dependent loads of a 16k-
//! or 32k-key row leave the GPU waiting on memory, and the additive mask
//! costs a pass of its own over every score. This kernel gives a row a block
//! of 256 threads, decides visibility from the query's and keys' positions
//! (causal, and the sliding window) as it reads, and accumulates in f32: three
//! reads and one write of each score. Rows that see no key get zeros.
//!
//! The source is compiled once per process with NVRTC (which the CUDA build
//! links anyway) and needs no CUDA headers: half-precision values are read
//! and written as their bits.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc::compile_ptx;
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use crate::{ModelError, Result};

/// Threads per row.
const BLOCK: u32 = 256;

const SOURCE: &str = r#"
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float load_f32(const float* p, size_t i) { return p[i]; }
__device__ __forceinline__ void store_f32(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ float load_bf16(const unsigned short* p, size_t i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void store_bf16(unsigned short* p, size_t i, float v) {
    unsigned int u = __float_as_uint(v);
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i] = (unsigned short)(u >> 16);
}
__device__ __forceinline__ float load_f16(const unsigned short* p, size_t i) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i]));
    return f;
}
__device__ __forceinline__ void store_f16(unsigned short* p, size_t i, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p[i] = h;
}

__device__ __forceinline__ float block_reduce(float v, float* shared, bool is_max) {
    for (int o = 16; o > 0; o >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, other) : v + other;
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    v = lane < warps ? shared[lane] : (is_max ? NEG_INF : 0.0f);
    for (int o = 16; o > 0; o >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, other) : v + other;
    }
    __syncthreads();
    return v;
}

__device__ __forceinline__ bool visible(unsigned int q, unsigned int k, unsigned int window) {
    return k <= q && (window == 0u || q - k < window);
}

#define MASKED_SOFTMAX(NAME, T, LOAD, STORE)                                              \
extern "C" __global__ void NAME(const T* x, T* y, const unsigned int* qpos,               \
                                const unsigned int* kpos, int n, int r,                   \
                                unsigned int window) {                                    \
    __shared__ float shared[32];                                                          \
    size_t row = blockIdx.x;                                                              \
    unsigned int q = qpos[row % (size_t)n];                                               \
    size_t base = row * (size_t)r;                                                        \
    float m = NEG_INF;                                                                    \
    for (int c = threadIdx.x; c < r; c += blockDim.x) {                                   \
        if (visible(q, kpos[c], window)) m = fmaxf(m, LOAD(x, base + c));                 \
    }                                                                                     \
    m = block_reduce(m, shared, true);                                                    \
    float s = 0.0f;                                                                       \
    for (int c = threadIdx.x; c < r; c += blockDim.x) {                                   \
        if (visible(q, kpos[c], window)) s += __expf(LOAD(x, base + c) - m);              \
    }                                                                                     \
    s = block_reduce(s, shared, false);                                                   \
    float inv = s > 0.0f ? 1.0f / s : 0.0f;                                               \
    for (int c = threadIdx.x; c < r; c += blockDim.x) {                                   \
        float p = visible(q, kpos[c], window) ? __expf(LOAD(x, base + c) - m) * inv : 0.0f; \
        STORE(y, base + c, p);                                                            \
    }                                                                                     \
}

MASKED_SOFTMAX(masked_softmax_f32, float, load_f32, store_f32)
MASKED_SOFTMAX(masked_softmax_bf16, unsigned short, load_bf16, store_bf16)
MASKED_SOFTMAX(masked_softmax_f16, unsigned short, load_f16, store_f16)
"#;

/// The kernels' PTX, compiled on first use.
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        compile_ptx(SOURCE)
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| ModelError::Device(format!("compiling the masked softmax: {e}")))
}

/// Softmax over the last dimension of `scores` `(heads, n, r)` where row
/// `(h, i)` sees key `j` only when `kpos[j] <= qpos[i]` and, with a window,
/// `qpos[i] - kpos[j] < window`. `qpos` `(n)` and `kpos` `(r)` are u32 on the
/// scores' device (a GPU).
pub(crate) fn masked_softmax(
    scores: &Tensor,
    qpos: &Tensor,
    kpos: &Tensor,
    window: Option<usize>,
) -> Result<Tensor> {
    let op = MaskedSoftmax {
        qpos: qpos.clone(),
        kpos: kpos.clone(),
        window: window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
    };
    Ok(scores.contiguous()?.apply_op1_no_bwd(&op)?)
}

struct MaskedSoftmax {
    qpos: Tensor,
    kpos: Tensor,
    window: u32,
}

/// The u32 device slice of a contiguous u32 tensor's storage (positions,
/// tile ranges), for the kernel named `kernel`.
pub(super) fn u32_view<'a>(
    storage: &'a Storage,
    layout: &Layout,
    kernel: &str,
) -> candle_core::Result<CudaView<'a, u32>> {
    let Storage::Cuda(cuda) = storage else {
        candle_core::bail!("{kernel}: positions must be on the GPU");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{kernel}: positions must be contiguous");
    };
    Ok(cuda.as_cuda_slice::<u32>()?.slice(start..end))
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("masked softmax runs on a GPU only")
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = storage.device();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("masked softmax: scores must be contiguous");
        };
        let dims = layout.dims();
        let (Some(&r), Some(&n)) = (dims.last(), dims.iter().rev().nth(1)) else {
            candle_core::bail!("masked softmax: scores need (.., n, r) dims, got {dims:?}");
        };
        if self.qpos.dims1()? != n || self.kpos.dims1()? != r {
            candle_core::bail!(
                "masked softmax: {n} x {r} scores, {:?} query and {:?} key positions",
                self.qpos.dims(),
                self.kpos.dims()
            );
        }
        let (q_storage, q_layout) = self.qpos.storage_and_layout();
        let (k_storage, k_layout) = self.kpos.storage_and_layout();
        let qpos = u32_view(&q_storage, q_layout, "masked softmax")?;
        let kpos = u32_view(&k_storage, k_layout, "masked softmax")?;
        let rows = (end - start) / r.max(1);
        let ptx = ptx().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n, r, window) = (n as i32, r as i32, self.window);
        macro_rules! launch {
            ($src:expr, $ty:ty, $name:literal, $variant:ident) => {{
                let src = $src.slice(start..end);
                let func = dev.get_or_load_custom_func($name, "prophetkv_masked_softmax", ptx)?;
                // SAFETY: every element is written by the kernel.
                let dst = unsafe { dev.alloc::<$ty>(end - start)? };
                let mut builder = func.builder();
                builder.arg(&src);
                builder.arg(&dst);
                builder.arg(&qpos);
                builder.arg(&kpos);
                candle_core::builder_arg!(builder, n, r, window);
                // SAFETY: the kernel reads `rows * r` scores, `n` and `r`
                // positions, and writes `rows * r` values.
                unsafe { builder.launch(cfg) }.w()?;
                CudaStorageSlice::$variant(dst)
            }};
        }
        let slice = match &storage.slice {
            CudaStorageSlice::F32(s) => launch!(s, f32, "masked_softmax_f32", F32),
            CudaStorageSlice::BF16(s) => launch!(s, half::bf16, "masked_softmax_bf16", BF16),
            CudaStorageSlice::F16(s) => launch!(s, half::f16, "masked_softmax_f16", F16),
            _ => candle_core::bail!("masked softmax: f32, bf16 or f16 scores only"),
        };
        let out = CudaStorage {
            slice,
            device: dev.clone(),
        };
        Ok((out, layout.shape().clone()))
    }
}
