// Merge of the split-KV partial outputs (both attention kernels write the same format): split s
// of output row `row` (b, h, s_q order) left its normalised output in part_o[s, row, :] and its
// natural-log lse in part_lse[s, row] (-inf when the split saw no key). The result is
// sum_s exp(lse_s - M) * o_s / sum_s exp(lse_s - M) with M = max_s lse_s, and lse M + log(sum).
//
// One block per output row, the splits dealt round robin to its warps (split s to warp
// s % kWarps); every lane owns 4 consecutive output columns (a float4 per split, two at d 256).
// The time of a short cache split many ways (the latency case, small batches) is the number of
// dependent memory round trips, so a warp issues its first kBatch splits' partial outputs
// together with the lse loads, before it knows the weights: up to kWarps x kBatch = 32 splits
// cost one round trip. The four warps' sums meet in shared memory.
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

// grid: b * h * s_q blocks of kThreads; launched as a programmatic dependent of the attention
// kernel on sm_90 (decode.cuh), so nothing here reads a partial result before pdl_wait_primary.
template <typename T>
__global__ void __launch_bounds__(kThreads) combine_kernel(Args<T> a) {
  constexpr int kMaxD = 256;                       // decode_check: d_v in {64, 128, 256}
  constexpr int kCols = kMaxD / (32 * 4);          // float4 column groups per lane
  constexpr int kBatch = 8;                        // splits per warp with loads in flight at once
  constexpr int kLsePerLane = kMaxCombineSplits / 32;
  __shared__ float s_w[kMaxCombineSplits];         // split weights; s_w[s] written by warp s % kWarps
  __shared__ float4 s_o[kWarps][kMaxD / 4];        // per-warp weighted sums
  const int rows_total = a.b * a.h * a.s_q;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = blockIdx.x;
  const int ns = a.num_splits;
  const float* lse_p = a.part_lse + row;  // split s at lse_p[s * rows_total]
  // d_v is a multiple of 8 (decode_check) and part_o rows are 16-byte aligned (workspace base
  // aligned, row length d_v floats).
  const int64_t split_stride = int64_t(rows_total) * a.d_v;
  const float* po = a.part_o + int64_t(row) * a.d_v;

  pdl_wait_primary();

  // Partial outputs of this warp's splits warp + kWarps * (k0 + k), k < kBatch.
  float4 v[kBatch][kCols];
  auto load_batch = [&](int k0) {
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int s = warp + kWarps * (k0 + k);
#pragma unroll
      for (int cc = 0; cc < kCols; ++cc) {
        const int col = (cc * 32 + lane) * 4;
        v[k][cc] = s < ns && col < a.d_v
                       ? *reinterpret_cast<const float4*>(po + s * split_stride + col)
                       : make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  };
  load_batch(0);

  // Every warp reduces all the splits' lse (the same values in the same order: M and the sum are
  // identical in every warp, so the empty-row branch below is uniform over the block).
  float lv[kLsePerLane];
  float mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < kLsePerLane; ++i) {
    const int s = lane + 32 * i;
    lv[i] = s < ns ? lse_p[int64_t(s) * rows_total] : -INFINITY;
    mx = fmaxf(mx, lv[i]);
  }
  mx = warp_max(mx);
  const int qi = row % a.s_q, qh = (row / a.s_q) % a.h, bi = row / (a.s_q * a.h);
  T* out = a.out + bi * a.out_st.batch + int64_t(qi) * a.out_st.seq + int64_t(qh) * a.out_st.head;
  if (mx == -INFINITY) {  // no split saw a key: exact zeros
    if (warp == 0) {
      for (int e = lane; e < a.d_v; e += 32) out[e] = from_float<T>(0.f);
      if (lane == 0 && a.lse != nullptr) a.lse[row] = -INFINITY;
    }
    return;
  }
  float wsum = 0.f;
#pragma unroll
  for (int i = 0; i < kLsePerLane; ++i) {
    const int s = lane + 32 * i;
    const float w = __expf(lv[i] - mx);  // 0 for an empty split (and past ns)
    wsum += w;
    if (s < ns && s % kWarps == warp) s_w[s] = w;
  }
  wsum = warp_sum(wsum);  // >= 1: one term equals exp(0)
  __syncwarp();

  float4 o[kCols];
#pragma unroll
  for (int cc = 0; cc < kCols; ++cc) o[cc] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int k0 = 0; warp + kWarps * k0 < ns; k0 += kBatch) {
    if (k0 > 0) load_batch(k0);
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int s = warp + kWarps * (k0 + k);
      const float w = s < ns ? s_w[s] : 0.f;
#pragma unroll
      for (int cc = 0; cc < kCols; ++cc) {
        o[cc].x = fmaf(w, v[k][cc].x, o[cc].x);
        o[cc].y = fmaf(w, v[k][cc].y, o[cc].y);
        o[cc].z = fmaf(w, v[k][cc].z, o[cc].z);
        o[cc].w = fmaf(w, v[k][cc].w, o[cc].w);
      }
    }
  }
#pragma unroll
  for (int cc = 0; cc < kCols; ++cc) {
    const int col = (cc * 32 + lane) * 4;
    if (col < a.d_v) s_o[warp][col / 4] = o[cc];
  }
  __syncthreads();
  const float inv = 1.f / wsum;
  for (int c4 = threadIdx.x; c4 < a.d_v / 4; c4 += kThreads) {
    float4 t = s_o[0][c4];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      const float4 u = s_o[w][c4];
      t.x += u.x;
      t.y += u.y;
      t.z += u.z;
      t.w += u.w;
    }
    out[4 * c4] = from_float<T>(t.x * inv);
    out[4 * c4 + 1] = from_float<T>(t.y * inv);
    out[4 * c4 + 2] = from_float<T>(t.z * inv);
    out[4 * c4 + 3] = from_float<T>(t.w * inv);
  }
  if (threadIdx.x == 0 && a.lse != nullptr) a.lse[row] = mx + logf(wsum);
}

}  // namespace decode
}  // namespace cuda
}  // namespace pte
