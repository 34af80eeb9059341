// Merge of the split-KV partial outputs (both attention kernels write the same format): split s
// of output row `row` (b, h, s_q order) left its normalised output in part_o[s, row, :] and its
// natural-log lse in part_lse[s, row] (-inf when the split saw no key). The result is
// sum_s exp(lse_s - M) * o_s / sum_s exp(lse_s - M) with M = max_s lse_s, and lse M + log(sum).
//
// One warp per output row. The split weights are computed once, by the lane of each split, into
// a per-warp shared buffer; then every lane owns 4 consecutive output columns (one float4 per
// split) and sums over the splits with independent loads, so a short cache split many ways (the
// latency case) costs a few dependent memory round trips, not one per split.
#pragma once

#include "cuda/decode/decode_args.cuh"

namespace pte {
namespace cuda {
namespace decode {

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) combine_kernel(Args<T> a) {
  __shared__ float s_w[kWarps][kMaxCombineSplits];
  const int rows_total = a.b * a.h * a.s_q;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = blockIdx.x * kWarps + warp;
  if (row >= rows_total) return;  // whole warps only; nothing below syncs the block
  const int ns = a.num_splits;
  const float* lse_p = a.part_lse + row;  // split s at lse_p[s * rows_total]

  float mx = -INFINITY;
  for (int s = lane; s < ns; s += 32) mx = fmaxf(mx, lse_p[int64_t(s) * rows_total]);
  mx = warp_max(mx);
  const int qi = row % a.s_q, qh = (row / a.s_q) % a.h, bi = row / (a.s_q * a.h);
  T* out = a.out + bi * a.out_st.batch + int64_t(qi) * a.out_st.seq + int64_t(qh) * a.out_st.head;
  if (mx == -INFINITY) {  // no split saw a key: exact zeros
    for (int e = lane; e < a.d_v; e += 32) out[e] = from_float<T>(0.f);
    if (lane == 0 && a.lse != nullptr) a.lse[row] = -INFINITY;
    return;
  }
  float wsum = 0.f;
  for (int s = lane; s < ns; s += 32) {
    const float w = __expf(lse_p[int64_t(s) * rows_total] - mx);  // 0 for an empty split
    s_w[warp][s] = w;
    wsum += w;
  }
  wsum = warp_sum(wsum);
  __syncwarp();
  const float inv = 1.f / wsum;  // >= 1 term equals exp(0) = 1

  // d_v is a multiple of 8 (decode_check) and part_o rows are 16-byte aligned (workspace base
  // aligned, row length d_v floats).
  const int64_t split_stride = int64_t(rows_total) * a.d_v;
  const float* po = a.part_o + int64_t(row) * a.d_v;
  for (int col = lane * 4; col < a.d_v; col += 32 * 4) {
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    // kBatch independent loads in flight per lane before their sums.
    constexpr int kBatch = 8;
    for (int s0 = 0; s0 < ns; s0 += kBatch) {
      float4 v[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k)
        v[k] = s0 + k < ns ? *reinterpret_cast<const float4*>(po + (s0 + k) * split_stride + col)
                           : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const float w = s0 + k < ns ? s_w[warp][s0 + k] : 0.f;
        o.x = fmaf(w, v[k].x, o.x);
        o.y = fmaf(w, v[k].y, o.y);
        o.z = fmaf(w, v[k].z, o.z);
        o.w = fmaf(w, v[k].w, o.w);
      }
    }
    out[col] = from_float<T>(o.x * inv);
    out[col + 1] = from_float<T>(o.y * inv);
    out[col + 2] = from_float<T>(o.z * inv);
    out[col + 3] = from_float<T>(o.w * inv);
  }
  if (lane == 0 && a.lse != nullptr) a.lse[row] = mx + logf(wsum);
}

}  // namespace decode
}  // namespace cuda
}  // namespace pte
