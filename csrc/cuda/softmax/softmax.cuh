// Masked softmax kernels, forward and backward (SPEC §3).
//
//   forward:  y = softmax(scale * x) over the last axis, masked elements excluded, rows whose
//             every element is masked give exactly 0.
//   backward: d_x = scale * y * (d_y - sum(d_y * y)).
//
// x, y, d_y, d_x: contiguous [b, h, s_q, s_kv]; mask: bool [b or 1, 1, s_q, s_kv], True = masked.
// A causal variant masks key j of query i when j > i + delta, delta = 0 (top-left) or
// s_kv - s_q (bottom-right).
//
// Two kernel families, both memory bound (every byte read once and written once is the floor):
// * RowReg<TPR, NV>: a row is held in registers. TPR threads share one row (TPR <= 32: several
//   rows per 128-thread block, reductions by warp shuffles within the row group; TPR > 32: one
//   row per block of TPR threads, reductions through shared memory). Each thread owns NV 16-byte
//   vectors at column vectors k*TPR + t (k < NV), so every warp load is contiguous. All loads of a
//   row are issued before the first use. Needs s_kv to be a multiple of the vector width and
//   16-byte aligned pointers; covers rows up to 4096 vectors (32768 fp16/bf16, 16384 fp32).
// * RowStream<VEC>: any s_kv and any alignment (VEC = 1 when unaligned). One row per block, two
//   passes over global memory: an online max/sum (forward) or dot product (backward), then the
//   output. The second read of a row mostly hits L2.
// The row -> (batch, head, query) mapping puts the heads of one (batch, query) next to each
// other when a mask is present, so the h reads of one mask row run together and hit L2.
#pragma once

#include <cfloat>
#include <cstdint>

#include "core/kernels.h"
#include "cuda/common.cuh"

namespace pte {
namespace cuda {
namespace softmax {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kSmallRowsBlock = 128;  // threads of a block that holds several rows (TPR <= 32)
constexpr int kStreamThreads = 512;   // threads of a RowStream block (one row per block)

// Division by a run-time constant with a multiply and a shift (Granlund & Montgomery, PLDI'94):
// the row -> (batch, head, query) mapping divides every work item, and a 64-bit division is a
// ~70-instruction subroutine, enough to compete with the memory stream for short rows.
// Exact for numerators and divisors below 2^31.
struct FastDiv {
  uint32_t d = 1, mul = 0, shift = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    while ((uint64_t(1) << shift) < d) ++shift;
    mul = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return (__umulhi(n, mul) + n) >> shift;
  }
};

struct Args {
  const void* x;    // fwd: x;   bwd: y
  const void* x2;   // fwd: -;   bwd: d_y
  void* out;        // fwd: y;   bwd: d_x
  const uint8_t* mask;
  int64_t rows;     // b * h * s_q
  int64_t s_kv;
  int64_t s_q;
  int64_t h;
  int64_t mask_batch_stride;  // s_q * s_kv, or 0 when the mask is broadcast over the batch
  float scale;                // bwd: scale; fwd: scale * log2(e) (the kernels use exp2)
  int32_t causal;             // pte_softmax_causal_t
  int64_t delta;              // causal: key j visible iff j <= i + delta
  bool head_inner;            // work order (b, i, head) instead of (b, head, i)
  int32_t heads_per_item;     // head_inner: consecutive heads one work item runs (mask reuse)
  bool small;                 // rows and every dimension < 2^31: 32-bit index math
  // rows counts work items: b * h * s_q / heads_per_item.
  FastDiv div_hg, div_sq, div_hsq;  // by h / heads_per_item, s_q, h * s_q (valid when small)
};

// Where work item w lives: memory row, query index i, batch index, and the end (exclusive) of
// the visible key columns of that row.
struct RowInfo {
  int64_t row;
  int64_t end;
  const uint8_t* mask;  // the row's mask, or null
};

__device__ __forceinline__ RowInfo row_info(const Args& a, int64_t w) {
  // head_inner: w enumerates (batch, query, head group); `row` is the group's first head.
  int64_t row, i, bi;
  if (a.small) {
    const uint32_t w32 = uint32_t(w);
    if (a.head_inner) {
      const uint32_t bq = a.div_hg.div(w32);
      const uint32_t head = (w32 - bq * a.div_hg.d) * uint32_t(a.heads_per_item);
      bi = a.div_sq.div(bq);
      i = bq - uint32_t(bi) * a.div_sq.d;
      row = (bi * a.h + head) * a.s_q + i;
    } else {
      row = w;
      const uint32_t r = a.div_sq.div(w32);
      i = w32 - r * a.div_sq.d;
      bi = a.div_hsq.div(w32);
    }
  } else if (a.head_inner) {
    const int64_t groups = a.h / a.heads_per_item;
    const int64_t head = (w % groups) * a.heads_per_item;
    const int64_t bq = w / groups;
    i = bq % a.s_q;
    bi = bq / a.s_q;
    row = (bi * a.h + head) * a.s_q + i;
  } else {
    row = w;
    i = w % a.s_q;
    bi = w / (a.s_q * a.h);
  }
  RowInfo r;
  r.row = row;
  r.end = a.s_kv;
  if (a.causal != PTE_SOFTMAX_NO_CAUSAL) {
    const int64_t e = i + a.delta + 1;
    r.end = e < 0 ? 0 : (e > a.s_kv ? a.s_kv : e);
  }
  r.mask = a.mask ? a.mask + bi * a.mask_batch_stride + i * a.s_kv : nullptr;
  return r;
}

// ---- reductions over the TPR threads of a row ----------------------------------------------

template <int TPR>
struct RowReduce {
  // Shared scratch for TPR > 32 (one slot per warp of the block); unused otherwise.
  float* smem_max;
  float* smem_sum;

  template <bool IS_MAX>
  __device__ __forceinline__ float reduce(float v, float* smem) const {
    constexpr int width = TPR < 32 ? TPR : 32;
#pragma unroll
    for (int o = width / 2; o > 0; o /= 2) {
      const float other = __shfl_xor_sync(0xffffffffu, v, o);
      v = IS_MAX ? fmaxf(v, other) : v + other;
    }
    if constexpr (TPR > 32) {
      // Warps of one row are consecutive: row group g owns slots [g * kWarps, (g+1) * kWarps).
      constexpr int kWarps = TPR / 32;
      const int warp = threadIdx.x / 32;
      const int first = warp - warp % kWarps;
      if (threadIdx.x % 32 == 0) smem[warp] = v;
      __syncthreads();
      v = smem[first];
#pragma unroll
      for (int k = 1; k < kWarps; ++k) v = IS_MAX ? fmaxf(v, smem[first + k]) : v + smem[first + k];
    }
    return v;
  }
  __device__ __forceinline__ float max(float v) const { return reduce<true>(v, smem_max); }
  __device__ __forceinline__ float sum(float v) const { return reduce<false>(v, smem_sum); }
};

template <typename T>
struct VecTraits {
  static constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte vector
  union V {
    uint4 u;
    T e[kVec];
  };
  // The mask bytes of one vector (kVec bytes).
  using MaskWord = typename std::conditional<kVec == 8, uint2, uint32_t>::type;
  union M {
    MaskWord w;
    uint8_t b[kVec];
  };
};

// Threads of a register-kernel block: at least 128 (several rows per block for TPR < 128).
template <int TPR>
__host__ __device__ constexpr int block_threads() {
  return TPR > kSmallRowsBlock ? TPR : kSmallRowsBlock;
}
// Resident blocks asked of the compiler: 1024 threads per SM caps registers at 64 per thread.
// The row kernels need that occupancy (32 warps) to keep enough loads in flight; measured on the
// H100: 78 registers (one 512-thread block per SM) gave 1.6 TB/s instead of 3.
template <int TPR>
__host__ __device__ constexpr int min_blocks() {
  return 1024 / block_threads<TPR>();
}

// ---- one-pass kernels: the row in registers -------------------------------------------------

template <typename T, int TPR, int NV, bool HAS_MASK>
__global__ void __launch_bounds__(block_threads<TPR>(), min_blocks<TPR>())
    fwd_reg_kernel(const Args a) {
  using VT = VecTraits<T>;
  constexpr int VEC = VT::kVec;
  constexpr int RPB = block_threads<TPR>() / TPR;  // rows per block
  __shared__ float smem[2][TPR > 32 ? block_threads<TPR>() / 32 : 1];
  const RowReduce<TPR> red{smem[0], smem[1]};

  const int g = threadIdx.x / TPR;
  const int t = threadIdx.x % TPR;
  const int64_t nvec = a.s_kv / VEC;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  T* __restrict__ y = static_cast<T*>(a.out);

  // The loop bound is uniform over the block, so every thread reaches every shuffle/barrier.
  for (int64_t base = int64_t(blockIdx.x) * RPB; base < a.rows; base += int64_t(gridDim.x) * RPB) {
    const int64_t w = base + g;
    const bool valid = w < a.rows;
    const RowInfo r = row_info(a, valid ? w : 0);

    // The mask row is shared by the heads of this work item: read it once and keep it as one
    // bit per element (bit k*VEC+e), so it costs one register across the head loop.
    static_assert(NV * VEC <= 32, "the mask bits of a thread must fit one register");
    uint32_t mbits = 0;
    if constexpr (HAS_MASK) {
      typename VT::M mraw[NV];
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int64_t cv = int64_t(k) * TPR + t;
        mraw[k].w = typename VT::MaskWord{};  // outside the row: not masked (not used)
        if (valid && cv < nvec && cv * VEC < r.end)
          mraw[k].w = __ldg(reinterpret_cast<const typename VT::MaskWord*>(r.mask) + cv);
      }
#pragma unroll
      for (int k = 0; k < NV; ++k)
#pragma unroll
        for (int e = 0; e < VEC; ++e) mbits |= uint32_t(mraw[k].b[e] != 0) << (k * VEC + e);
    }

    const int heads = HAS_MASK ? a.heads_per_item : 1;  // a constant 1 without a mask
#pragma unroll 1
    for (int hh = 0; hh < heads; ++hh) {
      const int64_t row = r.row + hh * a.s_q;
      const T* xr = x + row * a.s_kv;
      typename VT::V raw[NV];
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int64_t cv = int64_t(k) * TPR + t;
        // Vectors past the causal end are not read at all: their outputs are 0.
        if (valid && cv < nvec && cv * VEC < r.end)
          raw[k].u = __ldcs(reinterpret_cast<const uint4*>(xr) + cv);
      }

      float v[NV][VEC];
      float m = -INFINITY;
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int64_t cv = int64_t(k) * TPR + t;
        const bool in = valid && cv < nvec && cv * VEC < r.end;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          bool vis = in && cv * VEC + e < r.end;
          if constexpr (HAS_MASK) vis = vis && ((mbits >> (k * VEC + e)) & 1u) == 0;
          v[k][e] = vis ? to_float(raw[k].e[e]) * a.scale : -INFINITY;
          m = fmaxf(m, v[k][e]);
        }
      }
      m = red.max(m);
      // A fully masked row has m = -inf; subtracting 0 instead keeps exp2(-inf) = 0 (no NaN).
      const float m0 = m == -INFINITY ? 0.f : m;
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < NV; ++k)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          v[k][e] = exp2f(v[k][e] - m0);
          s += v[k][e];
        }
      s = red.sum(s);
      const float inv = s > 0.f ? 1.f / s : 0.f;

      T* yr = y + row * a.s_kv;
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int64_t cv = int64_t(k) * TPR + t;
        if (valid && cv < nvec) {
          typename VT::V o;
#pragma unroll
          for (int e = 0; e < VEC; ++e) o.e[e] = from_float<T>(v[k][e] * inv);
          reinterpret_cast<uint4*>(yr)[cv] = o.u;
        }
      }
    }
  }
}

// No register cap for the backward: it keeps y and d_y packed (16-bit) until the row sum is
// known, and with two input streams it reaches 2.8-3.0 TB/s even at 12 warps per SM (docs/
// performance.md, "Masked softmax"), while a 64-register cap spills.
template <typename T, int TPR, int NV>
__global__ void __launch_bounds__(block_threads<TPR>())
    bwd_reg_kernel(const Args a) {
  using VT = VecTraits<T>;
  constexpr int VEC = VT::kVec;
  constexpr int RPB = block_threads<TPR>() / TPR;
  __shared__ float smem[2][TPR > 32 ? block_threads<TPR>() / 32 : 1];
  const RowReduce<TPR> red{smem[0], smem[1]};

  const int g = threadIdx.x / TPR;
  const int t = threadIdx.x % TPR;
  const int64_t nvec = a.s_kv / VEC;
  const T* __restrict__ y = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.x2);
  T* __restrict__ dx = static_cast<T*>(a.out);

  for (int64_t base = int64_t(blockIdx.x) * RPB; base < a.rows; base += int64_t(gridDim.x) * RPB) {
    const int64_t w = base + g;
    const bool valid = w < a.rows;
    const int64_t off = (valid ? w : 0) * a.s_kv;  // backward rows need no mapping

    typename VT::V ry[NV], rdy[NV];
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int64_t cv = int64_t(k) * TPR + t;
      if (valid && cv < nvec) {
        ry[k].u = __ldcs(reinterpret_cast<const uint4*>(y + off) + cv);
        rdy[k].u = __ldcs(reinterpret_cast<const uint4*>(dy + off) + cv);
      } else {
        ry[k].u = make_uint4(0, 0, 0, 0);  // +0 in every storage type
        rdy[k].u = make_uint4(0, 0, 0, 0);
      }
    }
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < NV; ++k)
#pragma unroll
      for (int e = 0; e < VEC; ++e) dot += to_float(ry[k].e[e]) * to_float(rdy[k].e[e]);
    dot = red.sum(dot);

#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int64_t cv = int64_t(k) * TPR + t;
      if (valid && cv < nvec) {
        typename VT::V o;
#pragma unroll
        for (int e = 0; e < VEC; ++e)
          o.e[e] = from_float<T>(a.scale * to_float(ry[k].e[e]) * (to_float(rdy[k].e[e]) - dot));
        reinterpret_cast<uint4*>(dx + off)[cv] = o.u;
      }
    }
  }
}

// ---- two-pass kernels: any row length --------------------------------------------------------

// Loads VEC consecutive elements (VEC == 1: a scalar) as floats.
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, int64_t cv, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = to_float(p[cv]);
  } else {
    typename VecTraits<T>::V raw;
    raw.u = reinterpret_cast<const uint4*>(p)[cv];
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = to_float(raw.e[e]);
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* p, int64_t cv, const float (&in)[VEC]) {
  if constexpr (VEC == 1) {
    p[cv] = from_float<T>(in[0]);
  } else {
    typename VecTraits<T>::V raw;
#pragma unroll
    for (int e = 0; e < VEC; ++e) raw.e[e] = from_float<T>(in[e]);
    reinterpret_cast<uint4*>(p)[cv] = raw.u;
  }
}

template <typename T, int VEC, bool HAS_MASK>
__device__ __forceinline__ void load_scaled(const Args& a, const T* xr, const RowInfo& r,
                                            int64_t cv, float (&v)[VEC]) {
  load_vec<T, VEC>(xr, cv, v);
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    const int64_t j = cv * VEC + e;
    bool vis = j < r.end;
    if constexpr (HAS_MASK) vis = vis && r.mask[j] == 0;
    v[e] = vis ? v[e] * a.scale : -INFINITY;
  }
}

// Merge two (max, sum of exp2(v - max)) pairs.
__device__ __forceinline__ void merge_ms(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty
  s = s * exp2f(m - mn) + s2 * exp2f(m2 - mn);
  m = mn;
}

template <typename T, int VEC, bool HAS_MASK>
__global__ void __launch_bounds__(kStreamThreads) fwd_stream_kernel(const Args a) {
  constexpr int warps = kStreamThreads / 32;
  __shared__ float sm[warps], ss[warps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t nvec = a.s_kv / VEC;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.out);

  for (int64_t w = blockIdx.x; w < a.rows; w += gridDim.x) {
    const RowInfo r = row_info(a, w);
    const T* xr = x + r.row * a.s_kv;
    const int64_t nvis = (r.end + VEC - 1) / VEC;  // vectors holding a visible column

    // Pass 1: online max and sum of exp2.
    float m = -INFINITY, s = 0.f;
    for (int64_t cv = threadIdx.x; cv < nvis; cv += kStreamThreads) {
      float v[VEC];
      load_scaled<T, VEC, HAS_MASK>(a, xr, r, cv, v);
      float vm = v[0];
#pragma unroll
      for (int e = 1; e < VEC; ++e) vm = fmaxf(vm, v[e]);
      if (vm == -INFINITY) continue;
      if (vm > m) {
        s *= exp2f(m - vm);
        m = vm;
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) s += exp2f(v[e] - m);
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
      merge_ms(m, s, m2, s2);
    }
    if (lane == 0) {
      sm[warp] = m;
      ss[warp] = s;
    }
    __syncthreads();
    m = sm[0];
    s = ss[0];
    for (int k = 1; k < warps; ++k) merge_ms(m, s, sm[k], ss[k]);
    __syncthreads();  // sm/ss are rewritten by the next row
    const float m0 = m == -INFINITY ? 0.f : m;
    const float inv = s > 0.f ? 1.f / s : 0.f;

    // Pass 2: the output (zeros past the causal end without reading x).
    T* yr = y + r.row * a.s_kv;
    for (int64_t cv = threadIdx.x; cv < nvec; cv += kStreamThreads) {
      float v[VEC];
      if (cv < nvis) {
        load_scaled<T, VEC, HAS_MASK>(a, xr, r, cv, v);
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[e] = exp2f(v[e] - m0) * inv;
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[e] = 0.f;
      }
      store_vec<T, VEC>(yr, cv, v);
    }
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kStreamThreads) bwd_stream_kernel(const Args a) {
  constexpr int warps = kStreamThreads / 32;
  __shared__ float sd[warps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t nvec = a.s_kv / VEC;
  const T* y = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.x2);
  T* dx = static_cast<T*>(a.out);

  for (int64_t w = blockIdx.x; w < a.rows; w += gridDim.x) {
    const int64_t off = w * a.s_kv;
    float dot = 0.f;
    for (int64_t cv = threadIdx.x; cv < nvec; cv += kStreamThreads) {
      float vy[VEC], vd[VEC];
      load_vec<T, VEC>(y + off, cv, vy);
      load_vec<T, VEC>(dy + off, cv, vd);
#pragma unroll
      for (int e = 0; e < VEC; ++e) dot += vy[e] * vd[e];
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) sd[warp] = dot;
    __syncthreads();
    dot = 0.f;
    for (int k = 0; k < warps; ++k) dot += sd[k];
    __syncthreads();
    for (int64_t cv = threadIdx.x; cv < nvec; cv += kStreamThreads) {
      float vy[VEC], vd[VEC];
      load_vec<T, VEC>(y + off, cv, vy);
      load_vec<T, VEC>(dy + off, cv, vd);
#pragma unroll
      for (int e = 0; e < VEC; ++e) vy[e] = a.scale * vy[e] * (vd[e] - dot);
      store_vec<T, VEC>(dx + off, cv, vy);
    }
  }
}

// ---- dispatch -------------------------------------------------------------------------------

// Grid size for `rows` work items at `per_block` rows per block. Blocks loop (grid stride), so
// capping the grid is always correct; the cap is far above what fills the chip.
inline unsigned grid_for(int64_t rows, int64_t per_block) {
  constexpr int64_t kMaxGrid = int64_t(1) << 30;
  const int64_t g = (rows + per_block - 1) / per_block;
  return unsigned(g < 1 ? 1 : (g > kMaxGrid ? kMaxGrid : g));
}

// Row-size buckets of the register kernels, in 16-byte vectors per row: the smallest bucket
// that holds the row runs it. Up to 32 vectors a row group is at most a warp; beyond, at most 4
// vectors (32 floats) per thread so that 64 registers hold the row (see min_blocks), with 2 to
// 32 warps per row. (A warp per row with 8 vectors per thread needed 128 registers: 2.76 TB/s
// instead of 3.0 at s_kv = 2048.)
#define PTE_SOFTMAX_BUCKETS(X) \
  X(1, 1, 1)                   \
  X(2, 2, 1)                   \
  X(4, 4, 1)                   \
  X(8, 8, 1)                   \
  X(16, 16, 1)                 \
  X(32, 32, 1)                 \
  X(64, 32, 2)                 \
  X(128, 32, 4)                \
  X(256, 64, 4)                \
  X(512, 128, 4)               \
  X(1024, 256, 4)              \
  X(2048, 512, 4)              \
  X(4096, 1024, 4)
constexpr int64_t kMaxRegVecs = 4096;

// Work items of kHeadsPerItem heads for the register kernels with a mask: the mask row is read
// once (from L2) for that many heads instead of once per head (measured: 2.45 -> 2.83 TB/s at
// [8,16,2048,2048], with the register cap). It divides the blocks by kHeadsPerItem, so it needs
// h % kHeadsPerItem == 0 and at least one full wave of blocks left (kWaveSMs SMs, the H100's
// count: a heuristic; on a smaller GPU it only makes the grouping more conservative).
constexpr int kHeadsPerItem = 4;
constexpr int64_t kWaveSMs = 132;

template <int TPR>
Args with_head_groups(const Args& a) {
  constexpr int64_t rows_per_block = block_threads<TPR>() / TPR;
  Args g = a;
  const int64_t blocks = a.rows / kHeadsPerItem / rows_per_block;
  if (a.head_inner && a.h % kHeadsPerItem == 0 && blocks >= kWaveSMs * min_blocks<TPR>()) {
    g.heads_per_item = kHeadsPerItem;
    g.rows = a.rows / kHeadsPerItem;
    if (g.small) g.div_hg = FastDiv(uint32_t(a.h / kHeadsPerItem));
  }
  return g;
}

template <typename T, bool HAS_MASK>
void launch_fwd_typed(const Args& a, cudaStream_t st) {
  constexpr int VEC = VecTraits<T>::kVec;
  const int64_t nvec = a.s_kv / VEC;
  const bool vec_ok = a.s_kv % VEC == 0 && is_aligned(a.x, 16) && is_aligned(a.out, 16) &&
                      (!HAS_MASK || is_aligned(a.mask, VEC));
  if (vec_ok && nvec <= kMaxRegVecs) {
#define PTE_LAUNCH(CAP, TPR, NV)                                                    \
  if (nvec <= CAP) {                                                                \
    constexpr int threads = block_threads<TPR>();                                   \
    const Args ag = with_head_groups<TPR>(a);                                       \
    fwd_reg_kernel<T, TPR, NV, HAS_MASK>                                            \
        <<<grid_for(ag.rows, threads / TPR), threads, 0, st>>>(ag);                 \
    PTE_CUDA_CHECK_LAUNCH();                                                        \
    return;                                                                         \
  }
    PTE_SOFTMAX_BUCKETS(PTE_LAUNCH)
#undef PTE_LAUNCH
  }
  if (vec_ok)
    fwd_stream_kernel<T, VEC, HAS_MASK><<<grid_for(a.rows, 1), kStreamThreads, 0, st>>>(a);
  else
    fwd_stream_kernel<T, 1, HAS_MASK><<<grid_for(a.rows, 1), kStreamThreads, 0, st>>>(a);
  PTE_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_bwd_typed(const Args& a, cudaStream_t st) {
  constexpr int VEC = VecTraits<T>::kVec;
  const int64_t nvec = a.s_kv / VEC;
  const bool vec_ok = a.s_kv % VEC == 0 && is_aligned(a.x, 16) && is_aligned(a.x2, 16) &&
                      is_aligned(a.out, 16);
  if (vec_ok && nvec <= kMaxRegVecs) {
#define PTE_LAUNCH(CAP, TPR, NV)                                                             \
  if (nvec <= CAP) {                                                                         \
    constexpr int threads = block_threads<TPR>();                                            \
    bwd_reg_kernel<T, TPR, NV><<<grid_for(a.rows, threads / TPR), threads, 0, st>>>(a);      \
    PTE_CUDA_CHECK_LAUNCH();                                                                 \
    return;                                                                                  \
  }
    PTE_SOFTMAX_BUCKETS(PTE_LAUNCH)
#undef PTE_LAUNCH
  }
  if (vec_ok)
    bwd_stream_kernel<T, VEC><<<grid_for(a.rows, 1), kStreamThreads, 0, st>>>(a);
  else
    bwd_stream_kernel<T, 1><<<grid_for(a.rows, 1), kStreamThreads, 0, st>>>(a);
  PTE_CUDA_CHECK_LAUNCH();
}

// Entry points of one storage type, instantiated in fwd_<dtype>.cu / bwd.cu.
template <typename T>
void launch_fwd(const Args& a, cudaStream_t st) {
  if (a.mask)
    launch_fwd_typed<T, true>(a, st);
  else
    launch_fwd_typed<T, false>(a, st);
}

template <typename T>
void launch_bwd(const Args& a, cudaStream_t st) {
  launch_bwd_typed<T>(a, st);
}

extern template void launch_fwd<float>(const Args&, cudaStream_t);
extern template void launch_fwd<__half>(const Args&, cudaStream_t);
extern template void launch_fwd<__nv_bfloat16>(const Args&, cudaStream_t);
extern template void launch_bwd<float>(const Args&, cudaStream_t);
extern template void launch_bwd<__half>(const Args&, cudaStream_t);
extern template void launch_bwd<__nv_bfloat16>(const Args&, cudaStream_t);

}  // namespace softmax
}  // namespace cuda
}  // namespace pte
