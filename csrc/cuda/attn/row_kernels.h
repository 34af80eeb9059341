// The small kernels around the attention kernels of every family (sm80/, sm90/), one warp per
// row: the backward's preprocess (Dsum = rowsum(dO o O)) and, in the atomic-dQ mode, the
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

// Warps per block of the one-warp-per-row kernels (Dsum, the dQ conversion).
constexpr int kDotWarps = 8;

// The backward's preprocess, Dsum = rowsum(dO o O): one warp per row; written for every row of
// lse's layout that belongs to the sequence (0 at padded rows of bshd/sbhd).
template <typename T>
__global__ void __launch_bounds__(kDotWarps * 32) bwd_dot_kernel(const AttnProblem p, float* dsum) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bi = blockIdx.z, hq = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kDotWarps + warp;
  const SeqInfo si(p, bi);
  if (i >= (p.thd ? si.L_q : p.s_q)) return;
  float acc = 0.f;
  if (i < si.L_q) {
    const T* o = static_cast<const T*>(p.out) + si.q_offset(p.out_st, bi, i, hq);
    const T* dout = static_cast<const T*>(p.grad_out) + si.q_offset(p.grad_out_st, bi, i, hq);
    for (int col = lane * 2; col < p.d; col += 64) {
      acc += cuda::to_float(o[col]) * cuda::to_float(dout[col]) +
             cuda::to_float(o[col + 1]) * cuda::to_float(dout[col + 1]);
    }
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 16);
  acc += __shfl_xor_sync(0xffffffffu, acc, 8);
  acc += __shfl_xor_sync(0xffffffffu, acc, 4);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  if (lane == 0) dsum[row_stat_index(p, si, bi, hq, i)] = acc;
}

// The atomic-dQ mode's last pass, dQ = scale * dq_accum in the output dtype: one warp per row of
// lse's layout that belongs to the sequence; rows past L_q (bshd/sbhd padding) get exact zeros.
template <typename T>
__global__ void __launch_bounds__(kDotWarps * 32) bwd_dq_convert_kernel(const AttnProblem p,
                                                                        const float* dq_accum,
                                                                        int ld) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bi = blockIdx.z, hq = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kDotWarps + warp;
  const SeqInfo si(p, bi);
  if (i >= (p.thd ? si.L_q : p.s_q)) return;
  const int d = int(p.d);
  const bool valid = i < si.L_q;
  const float f = float(p.scale);
  const float* acc = dq_accum + row_stat_index(p, si, bi, hq, i) * ld;  // row width ld = D
  T* row = static_cast<T*>(p.grad_q) + si.q_offset(p.grad_q_st, bi, i, hq);
  for (int col = lane * 2; col < d; col += 64) {
    const float2 a = valid ? *reinterpret_cast<const float2*>(acc + col) : make_float2(0.f, 0.f);
    store_pair(row + col, a.x * f, a.y * f);
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
