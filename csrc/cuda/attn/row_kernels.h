// The small kernels around the attention kernels of every family (sm80/, sm90/), a few lanes
// per row: the backward's preprocess (Dsum = rowsum(dO o O)) and, in the atomic-dQ mode, the
// conversion of the fp32 dQ accumulator; the zeroing of a thd tensor's tail; and where a row
// statistic (lse, Dsum) lives. Plain CUDA, no arch-specific instruction, so every family's
// launchers share them (launch_impl.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/problem.h"
#include "cuda/attn/seqlen_mask.h"
#include "cuda/common.cuh"

namespace pte {
namespace flash {

// Index of the lse / row-statistic element of (sequence bi, head, position i).
__device__ __forceinline__ int64_t row_stat_index(const AttnProblem& p, const SeqInfo& si,
                                                  int64_t bi, int64_t head, int64_t i) {
  return p.thd ? head * p.t_q + si.q_start + i : (bi * p.h + head) * p.s_q + i;
}

// Store one accumulator row segment (2 columns) of a 16-bit tensor, rounded to nearest.
template <typename T>
__device__ __forceinline__ void store_pair(T* dst, float a, float b);
template <>
__device__ __forceinline__ void store_pair<__half>(__half* dst, float a, float b) {
  *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(a, b);
}
template <>
__device__ __forceinline__ void store_pair<__nv_bfloat16>(__nv_bfloat16* dst, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(a, b);
}

// Threads per block of the row kernels (Dsum, the dQ conversion).
constexpr int kRowThreads = 256;

// The row kernels give each row kLanes lanes of a warp (32 / kLanes rows per warp), each lane
// 16-byte chunks of 8 columns: the flash backend takes head dims that are multiples of 8 and
// 16-byte aligned rows (flash_api.cu), so every chunk is whole. 8 lanes serve d <= 64, 16 lanes
// d <= 128, 32 lanes the rest; the narrow rows keep several rows' loads in flight per warp, which
// a memory-bound pass needs (one warp per row of 64 columns ran these passes at half of HBM's rate).
inline int row_lanes(int64_t d) { return d <= 64 ? 8 : d <= 128 ? 16 : 32; }

template <int kLanes>
__device__ __forceinline__ float sum_over_row_lanes(float x) {
#pragma unroll
  for (int off = kLanes / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// 8 16-bit values as floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&f)[8]) {
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < 8; ++k) f[k] = cuda::to_float(v[k]);
}

// The backward's preprocess, Dsum = rowsum(dO o O), kLanes lanes per row; written for every row
// of lse's layout that belongs to the sequence (0 at padded rows of bshd/sbhd).
template <typename T, int kLanes>
__global__ void __launch_bounds__(kRowThreads) bwd_dot_kernel(const AttnProblem p, float* dsum) {
  constexpr int kRows = kRowThreads / kLanes;
  const int sub = threadIdx.x % kLanes;
  const int64_t bi = blockIdx.z, hq = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kRows + threadIdx.x / kLanes;
  const SeqInfo si(p, bi);
  // Rows past the end still take part in the shuffles (whole warps), they store nothing.
  const bool row = i < (p.thd ? si.L_q : p.s_q);
  float acc = 0.f;
  if (row && i < si.L_q) {
    const T* o = static_cast<const T*>(p.out) + si.q_offset(p.out_st, bi, i, hq);
    const T* dout = static_cast<const T*>(p.grad_out) + si.q_offset(p.grad_out_st, bi, i, hq);
    for (int col = sub * 8; col < p.d; col += kLanes * 8) {
      float a[8], g[8];
      unpack8<T>(__ldg(reinterpret_cast<const uint4*>(o + col)), a);
      unpack8<T>(__ldg(reinterpret_cast<const uint4*>(dout + col)), g);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc += a[k] * g[k];
    }
  }
  acc = sum_over_row_lanes<kLanes>(acc);
  if (row && sub == 0) dsum[row_stat_index(p, si, bi, hq, i)] = acc;
}

// The atomic-dQ mode's last pass, dQ = scale * dq_accum in the output dtype, kLanes lanes per
// row of lse's layout that belongs to the sequence; rows past L_q (bshd/sbhd padding) get exact
// zeros. Accumulator rows are ld = D floats (a multiple of 64), so their chunks are 32-byte
// aligned.
template <typename T, int kLanes>
__global__ void __launch_bounds__(kRowThreads) bwd_dq_convert_kernel(const AttnProblem p,
                                                                     const float* dq_accum,
                                                                     int ld) {
  constexpr int kRows = kRowThreads / kLanes;
  const int sub = threadIdx.x % kLanes;
  const int64_t bi = blockIdx.z, hq = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kRows + threadIdx.x / kLanes;
  const SeqInfo si(p, bi);
  if (i >= (p.thd ? si.L_q : p.s_q)) return;
  const bool valid = i < si.L_q;
  const float f = float(p.scale);
  const float* acc = dq_accum + row_stat_index(p, si, bi, hq, i) * ld;
  T* row = static_cast<T*>(p.grad_q) + si.q_offset(p.grad_q_st, bi, i, hq);
  for (int col = sub * 8; col < p.d; col += kLanes * 8) {
    float4 lo = make_float4(0.f, 0.f, 0.f, 0.f), hi = lo;
    if (valid) {
      lo = __ldcs(reinterpret_cast<const float4*>(acc + col));
      hi = __ldcs(reinterpret_cast<const float4*>(acc + col + 4));
    }
    uint4 out;
    store_pair(reinterpret_cast<T*>(&out.x), lo.x * f, lo.y * f);
    store_pair(reinterpret_cast<T*>(&out.y), lo.z * f, lo.w * f);
    store_pair(reinterpret_cast<T*>(&out.z), hi.x * f, hi.y * f);
    store_pair(reinterpret_cast<T*>(&out.w), hi.z * f, hi.w * f);
    *reinterpret_cast<uint4*>(row + col) = out;
  }
}

// Zero the rows of a thd tensor after the last sequence (tokens [cu[b], t)), every head, first d
// columns, 16 bytes per thread. cu[b] is read on the device: no host sync.
template <typename T>
__global__ void zero_thd_tail_kernel(T* x, Strides st, int64_t t, int64_t heads, int d,
                                     const int32_t* cu, int64_t b) {
  const int64_t chunks = d / 8;
  const int64_t start = SeqInfo::clamp_start(cu[b], t);
  const int64_t n = (t - start) * heads * chunks;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = idx % chunks, hh = (idx / chunks) % heads, tok = start + idx / (chunks * heads);
    *reinterpret_cast<uint4*>(x + tok * st.seq + hh * st.head + ch * 8) = make_uint4(0, 0, 0, 0);
  }
}

}  // namespace flash
}  // namespace pte
