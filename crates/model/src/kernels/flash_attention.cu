// Attention of query rows over a cache's keys in one pass, on tensor cores.
//
// Scores never reach global memory: each block keeps a 64-row tile of
// queries, walks its key range in tiles, computes the tile's scores with
// mma.sync (bf16 or f16 inputs, f32 sums), masks them by position (causal
// and the sliding window), and folds them into running row maxima, sums and
// outputs (the online softmax). Rows that see no key get zeros.
//
// Rows are (query, head in the KV group) pairs, `r = i * group + g`, so one
// block's K/V tiles serve every query head of its KV head (GQA), and a tile
// of rows covers `64 / group` consecutive queries. The host gives each tile
// its key range (the slots its queries can see), which skips the upper
// triangle and everything outside a sliding window.
//
// When few blocks would cover the GPU (a decode step: one tile of rows per
// KV head), `splits` blocks share each tile's key range (blockIdx.z), write
// unnormalised outputs with their row maxima and sums to `part_o` and
// `part_ml`, and flash_combine merges them.
//
// Layouts: q and out (n, heads, D) contiguous; k and v (slots, kv_heads, D)
// with rows `k_stride` / `v_stride` elements apart; positions u32.
// No CUDA headers: half-precision values move as their bits.

typedef unsigned short u16;
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)
#define LOG2E 1.4426950408889634f
#define FULL_MASK 0xffffffffu

struct __align__(16) Vec8 {
    u32 x, y, z, w;
};

template <bool BF16>
__device__ __forceinline__ void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    if (BF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
}

// Two f32 values as one register of two half-precision values, `lo` in the
// low half (the lower column of a fragment).
template <bool BF16>
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r;
    if (BF16) {
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    } else {
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    }
    return r;
}

__device__ __forceinline__ bool visible(u32 q, u32 k, u32 window) {
    return k <= q && (window == 0u || q - k < window);
}

__device__ __forceinline__ u32 load_u32(const u16* p) {
    return *reinterpret_cast<const u32*>(p);
}

// Four 8x8 matrices of 16-bit values from shared memory, transposed: lanes
// 8i..8i+7 give the row addresses of matrix i, and register i of lane T
// receives column T/4, rows 2(T%4) and 2(T%4)+1 of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(const u16* row, u32& r0, u32& r1, u32& r2, u32& r3) {
    u32 addr;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(addr) : "l"(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ float row_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 1));
    return fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 2));
}

__device__ __forceinline__ float row_sum(float v) {
    v += __shfl_xor_sync(FULL_MASK, v, 1);
    return v + __shfl_xor_sync(FULL_MASK, v, 2);
}

// Rows per block (4 warps of 16), keys per tile, shared-memory row strides
// (padded by 8 so that a fragment's 8 rows fall in different banks).
#define BM 64
#define THREADS 128

template <int D, int BN>
struct Tiles {
    static constexpr int QS = D + 8;
    static constexpr int Q_ELEMS = BM * QS;
    static constexpr int K_ELEMS = BN * QS;
    static constexpr int BYTES = 2 * (Q_ELEMS + 2 * K_ELEMS) + 4 * BN;
};

template <int D, int BN, bool BF16>
__device__ __forceinline__ void flash_attention(
    const u16* __restrict__ q, const u16* __restrict__ k, const u16* __restrict__ v,
    u16* __restrict__ out, const u32* __restrict__ qpos, const u32* __restrict__ kpos,
    const u32* __restrict__ tiles, int n, int group, int kv_heads, int k_stride,
    int v_stride, u32 window, float* __restrict__ part_o, float* __restrict__ part_ml,
    int splits) {
    typedef Tiles<D, BN> T;
    extern __shared__ __align__(16) unsigned char smem[];
    u16* qs = reinterpret_cast<u16*>(smem);
    u16* ks = qs + T::Q_ELEMS;
    u16* vs = ks + T::K_ELEMS;
    u32* kp = reinterpret_cast<u32*>(vs + T::K_ELEMS);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const int tile = blockIdx.x, kvh = blockIdx.y;
    const int rows = n * group, heads = kv_heads * group;
    const int r0 = tile * BM;
    u32 key_start = tiles[2 * tile], key_end = tiles[2 * tile + 1];
    if (splits > 1) {
        // This block's share: whole key tiles, in order.
        const u32 key_tiles = (key_end - key_start + BN - 1) / BN;
        const u32 share = (key_tiles + splits - 1) / splits * BN;
        const u32 lo = min(key_end, key_start + blockIdx.z * share);
        key_end = min(key_end, lo + share);
        key_start = lo;
    }

    for (int idx = tid; idx < BM * D / 8; idx += THREADS) {
        const int row = idx / (D / 8), c = (idx % (D / 8)) * 8, r = r0 + row;
        Vec8 val = {0u, 0u, 0u, 0u};
        if (r < rows) {
            const size_t at = ((size_t)(r / group) * heads + kvh * group + r % group) * D + c;
            val = *reinterpret_cast<const Vec8*>(q + at);
        }
        *reinterpret_cast<Vec8*>(qs + row * T::QS + c) = val;
    }

    // This thread's two rows of the warp's 16: `ra` and `ra + 8`.
    const int ra = warp * 16 + g, rb = ra + 8;
    const u32 qa = r0 + ra < rows ? qpos[(r0 + ra) / group] : 0u;
    const u32 qb = r0 + rb < rows ? qpos[(r0 + rb) / group] : 0u;

    float o[D / 8][4];
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++) {
        o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;
    }
    float ma = NEG_INF, mb = NEG_INF, la = 0.0f, lb = 0.0f;

    for (u32 kt = key_start; kt < key_end; kt += BN) {
        __syncthreads();
        for (int idx = tid; idx < BN * D / 8; idx += THREADS) {
            const int row = idx / (D / 8), c = (idx % (D / 8)) * 8;
            const u32 slot = kt + row;
            Vec8 kv = {0u, 0u, 0u, 0u}, vv = {0u, 0u, 0u, 0u};
            if (slot < key_end) {
                kv = *reinterpret_cast<const Vec8*>(k + (size_t)slot * k_stride + kvh * D + c);
                vv = *reinterpret_cast<const Vec8*>(v + (size_t)slot * v_stride + kvh * D + c);
            }
            *reinterpret_cast<Vec8*>(ks + row * T::QS + c) = kv;
            *reinterpret_cast<Vec8*>(vs + row * T::QS + c) = vv;
        }
        for (int j = tid; j < BN; j += THREADS) {
            kp[j] = kt + j < key_end ? kpos[kt + j] : 0xffffffffu;
        }
        __syncthreads();

        // Scores of the warp's 16 rows over the tile's BN keys.
        float s[BN / 8][4];
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const u16* qf = qs + ra * T::QS + kk * 16 + t4 * 2;
            const u32 a0 = load_u32(qf), a1 = load_u32(qf + 8 * T::QS);
            const u32 a2 = load_u32(qf + 8), a3 = load_u32(qf + 8 * T::QS + 8);
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                const u16* kf = ks + (j * 8 + g) * T::QS + kk * 16 + t4 * 2;
                mma16816<BF16>(s[j], a0, a1, a2, a3, load_u32(kf), load_u32(kf + 8));
            }
        }

        // Mask, then fold into the running softmax (base 2).
        float xa = NEG_INF, xb = NEG_INF;
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const u32 key = kp[j * 8 + t4 * 2 + e];
                s[j][e] = visible(qa, key, window) ? s[j][e] * LOG2E : NEG_INF;
                s[j][2 + e] = visible(qb, key, window) ? s[j][2 + e] * LOG2E : NEG_INF;
                xa = fmaxf(xa, s[j][e]);
                xb = fmaxf(xb, s[j][2 + e]);
            }
        }
        const float na = fmaxf(ma, row_max(xa)), nb = fmaxf(mb, row_max(xb));
        // While a row has seen no key its maximum is -inf; subtract 0 then.
        const float ua = na == NEG_INF ? 0.0f : na, ub = nb == NEG_INF ? 0.0f : nb;
        const float alpha_a = exp2f(ma - ua), alpha_b = exp2f(mb - ub);
        ma = na;
        mb = nb;
        la *= alpha_a;
        lb *= alpha_b;
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
            s[j][0] = exp2f(s[j][0] - ua);
            s[j][1] = exp2f(s[j][1] - ua);
            s[j][2] = exp2f(s[j][2] - ub);
            s[j][3] = exp2f(s[j][3] - ub);
            la += s[j][0] + s[j][1];
            lb += s[j][2] + s[j][3];
        }
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) {
            o[dn][0] *= alpha_a;
            o[dn][1] *= alpha_a;
            o[dn][2] *= alpha_b;
            o[dn][3] *= alpha_b;
        }

        // Outputs += probabilities x values; the score fragments are the
        // A fragments of this product, and ldmatrix's transpose turns rows
        // of values into B fragments: lane L names key 16kk + L%8 (+8 for
        // L%16 >= 8) at dimensions 8(dn + L/16).., two output tiles a load.
        const u16* v_row = vs + (lane & 15) * T::QS + (lane >> 4) * 8;
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            const u32 a0 = pack2<BF16>(s[2 * kk][0], s[2 * kk][1]);
            const u32 a1 = pack2<BF16>(s[2 * kk][2], s[2 * kk][3]);
            const u32 a2 = pack2<BF16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            const u32 a3 = pack2<BF16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dn = 0; dn < D / 8; dn += 2) {
                u32 b0, b1, b2, b3;
                ldmatrix_x4_trans(v_row + kk * 16 * T::QS + dn * 8, b0, b1, b2, b3);
                mma16816<BF16>(o[dn], a0, a1, a2, a3, b0, b1);
                mma16816<BF16>(o[dn + 1], a0, a1, a2, a3, b2, b3);
            }
        }
    }

    const float sa = row_sum(la), sb = row_sum(lb);
    if (splits > 1) {
        const size_t base = ((size_t)blockIdx.z * kv_heads + kvh) * gridDim.x * BM + r0;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int rr = half ? rb : ra;
            if (r0 + rr >= rows) continue;
            float* po = part_o + (base + rr) * D + t4 * 2;
#pragma unroll
            for (int dn = 0; dn < D / 8; dn++) {
                po[dn * 8] = o[dn][2 * half];
                po[dn * 8 + 1] = o[dn][2 * half + 1];
            }
            if (t4 == 0) {
                part_ml[(base + rr) * 2] = half ? mb : ma;
                part_ml[(base + rr) * 2 + 1] = half ? sb : sa;
            }
        }
        return;
    }
    const float ia = sa > 0.0f ? 1.0f / sa : 0.0f, ib = sb > 0.0f ? 1.0f / sb : 0.0f;
    if (r0 + ra < rows) {
        const int r = r0 + ra;
        u16* dst = out + ((size_t)(r / group) * heads + kvh * group + r % group) * D + t4 * 2;
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) {
            *reinterpret_cast<u32*>(dst + dn * 8) = pack2<BF16>(o[dn][0] * ia, o[dn][1] * ia);
        }
    }
    if (r0 + rb < rows) {
        const int r = r0 + rb;
        u16* dst = out + ((size_t)(r / group) * heads + kvh * group + r % group) * D + t4 * 2;
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) {
            *reinterpret_cast<u32*>(dst + dn * 8) = pack2<BF16>(o[dn][2] * ib, o[dn][3] * ib);
        }
    }
}

// Merges the splits of flash_attention: one block per (row, KV head), one
// thread per output dimension.
template <int D, bool BF16>
__device__ __forceinline__ void flash_combine(const float* __restrict__ part_o,
                                              const float* __restrict__ part_ml,
                                              u16* __restrict__ out, int n, int group,
                                              int kv_heads, int splits, int rows_pad) {
    const int r = blockIdx.x, kvh = blockIdx.y, d = threadIdx.x;
    if (r >= n * group || d >= D) return;
    float m = NEG_INF;
    for (int z = 0; z < splits; z++) {
        m = fmaxf(m, part_ml[(((size_t)z * kv_heads + kvh) * rows_pad + r) * 2]);
    }
    float l = 0.0f, acc = 0.0f;
    for (int z = 0; z < splits; z++) {
        const size_t at = ((size_t)z * kv_heads + kvh) * rows_pad + r;
        const float mz = part_ml[at * 2];
        if (mz == NEG_INF) continue;
        const float w = exp2f(mz - m);
        l += part_ml[at * 2 + 1] * w;
        acc += part_o[at * D + d] * w;
    }
    const float value = l > 0.0f ? acc / l : 0.0f;
    const int heads = kv_heads * group;
    out[((size_t)(r / group) * heads + kvh * group + r % group) * D + d] =
        (u16)(pack2<BF16>(value, 0.0f) & 0xffffu);
}

#define FLASH(NAME, COMBINE, D, BN, BF16)                                                     \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(                             \
        const u16* q, const u16* k, const u16* v, u16* out, const u32* qpos,                \
        const u32* kpos, const u32* tiles, int n, int group, int kv_heads, int k_stride,    \
        int v_stride, u32 window, float* part_o, float* part_ml, int splits) {              \
        flash_attention<D, BN, BF16>(q, k, v, out, qpos, kpos, tiles, n, group, kv_heads,   \
                                     k_stride, v_stride, window, part_o, part_ml, splits);  \
    }                                                                                       \
    extern "C" __global__ void COMBINE(const float* part_o, const float* part_ml, u16* out, \
                                       int n, int group, int kv_heads, int splits,          \
                                       int rows_pad) {                                      \
        flash_combine<D, BF16>(part_o, part_ml, out, n, group, kv_heads, splits, rows_pad); \
    }

FLASH(flash_attention_bf16_64, flash_combine_bf16_64, 64, 64, true)
FLASH(flash_attention_bf16_128, flash_combine_bf16_128, 128, 64, true)
FLASH(flash_attention_bf16_256, flash_combine_bf16_256, 256, 32, true)
FLASH(flash_attention_f16_64, flash_combine_f16_64, 64, 64, false)
FLASH(flash_attention_f16_128, flash_combine_f16_128, 128, 64, false)
FLASH(flash_attention_f16_256, flash_combine_f16_256, 256, 32, false)
