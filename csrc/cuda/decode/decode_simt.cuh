// CUDA-core decode kernel (the first version; PTE_DECODE_KERNEL=simt): one block of kWarps
// warps per (row chunk, split, kv head, batch). The rows of a block are up to kRows (query head
// of the GQA group, query position) pairs that share one kv head, so every K/V row read from
// memory serves all of them. Within a warp, kLanesPerKey = D/8 lanes hold one key's row (one
// 16-byte load each of K and V), so a warp covers 32/kLanesPerKey keys per step and the warps of
// a block interleave over the split's keys. Each lane keeps an online-softmax state (running max
// in the log2 domain, partial sum, 8 output columns) per row; lanes of a warp merge with
// shuffles, warps through shared memory. Every row's dot products and rescaling run on the FMA
// units, so the kernel turns compute-bound once a block holds several rows; decode_mma.cuh is
// the tensor-core kernel for those.
#pragma once

#include "cuda/decode/decode_args.cuh"

namespace pte {
namespace cuda {
namespace decode {

constexpr int kUnroll = 2;  // key steps whose loads are issued together (memory parallelism)
constexpr int kMaxRows = 8; // rows per block; larger groups use several row chunks

__device__ __forceinline__ void unpack8(const uint4& u, float* f, __half) {
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 v = __half22float2(h[j]);
    f[2 * j] = v.x;
    f[2 * j + 1] = v.y;
  }
}
__device__ __forceinline__ void unpack8(const uint4& u, float* f, __nv_bfloat16) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 v = __bfloat1622float2(h[j]);
    f[2 * j] = v.x;
    f[2 * j + 1] = v.y;
  }
}

// 2^x with the hardware approximation (ex2.approx: ~2 ulp, 2^-inf = 0); the reference rule
// allows it (errors are dominated by the bf16/fp16 rounding of the inputs and output).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The rows of one block: row r of chunk c is m = c * kRows + r of the rows (i, g) of a kv head's
// group, m = i * group + g (query position i, query head hk * group + g).
template <typename T, int D, int kRows>
__global__ void __launch_bounds__(kThreads) simt_kernel(Args<T> a) {
  constexpr int kLanesPerKey = D / 8;
  constexpr int kKeysPerStep = 32 / kLanesPerKey;
  static_assert(kLanesPerKey >= 1 && kLanesPerKey <= 32 && 32 % kLanesPerKey == 0, "head dim");

  pdl_launch_dependents();  // the combine (if any) may be scheduled; it waits for this grid
  const int chunk = blockIdx.x % a.row_chunks;
  const int split = blockIdx.x / a.row_chunks;
  const int hk = blockIdx.y, bi = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane % kLanesPerKey;  // which 8 columns
  const int kslot = lane / kLanesPerKey;

  const int m0 = chunk * kRows;
  const int nrows = min(kRows, a.rows - m0);
  int old, n;
  lengths(a, bi, &old, &n);

  // Rows' query positions and the block's visible key range [lo, hi).
  int row_i[kRows], row_h[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int m = m0 + (r < nrows ? r : nrows - 1);
    row_i[r] = m / a.group;
    row_h[r] = hk * a.group + m % a.group;
  }
  // Rows are sorted by i; padded rows repeat the last real row.
  int s_lo, s_hi;
  split_range(a, n, row_i[0], row_i[kRows - 1], split, &s_lo, &s_hi);

  // q (scaled into the log2 domain), 8 columns per lane.
  float q[kRows][8];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const T* qp = a.q + bi * a.q_st.batch + int64_t(row_i[r]) * a.q_st.seq +
                  int64_t(row_h[r]) * a.q_st.head + sub * 8;
    const uint4 u = *reinterpret_cast<const uint4*>(qp);
    unpack8(u, q[r], T());
#pragma unroll
    for (int e = 0; e < 8; ++e) q[r][e] *= a.scale_log2;
  }

  float m_run[kRows], l_run[kRows], acc[kRows][8];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m_run[r] = -INFINITY;
    l_run[r] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[r][e] = 0.f;
  }

  constexpr int kBlockStep = kWarps * kKeysPerStep;
  for (int base = s_lo + warp * kKeysPerStep; base < s_hi; base += kBlockStep * kUnroll) {
    uint4 kr[kUnroll], vr[kUnroll];
    int key[kUnroll];
    bool ok[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      key[u] = base + u * kBlockStep + kslot;
      ok[u] = key[u] < s_hi;
      const T* kp = nullptr;
      const T* vp = nullptr;
      if (ok[u]) {
        if (a.k_new != nullptr && key[u] >= old) {
          // Appended keys are read from k_new / v_new: the cache rows are written by this same
          // launch (below), and no block reads them, so there is no ordering to respect.
          const int i = key[u] - old;
          kp = a.k_new + bi * a.kn_st.batch + int64_t(i) * a.kn_st.seq + hk * a.kn_st.head;
          vp = a.v_new + bi * a.vn_st.batch + int64_t(i) * a.vn_st.seq + hk * a.vn_st.head;
        } else {
          const int64_t ko = cache_offset(a, a.kc_st, bi, key[u], hk);
          const int64_t vo = cache_offset(a, a.vc_st, bi, key[u], hk);
          ok[u] = ko >= 0 && vo >= 0;
          kp = a.k_cache + ko;
          vp = a.v_cache + vo;
        }
      }
      if (ok[u]) {
        kr[u] = __ldg(reinterpret_cast<const uint4*>(kp + sub * 8));
        vr[u] = __ldg(reinterpret_cast<const uint4*>(vp + sub * 8));
      } else {
        kr[u] = make_uint4(0, 0, 0, 0);
        vr[u] = make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8], vf[8];
      unpack8(kr[u], kf, T());
      unpack8(vr[u], vf, T());
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) s = fmaf(q[r][e], kf[e], s);
#pragma unroll
        for (int o = kLanesPerKey / 2; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
        const int last = n - a.s_q + row_i[r];
        const bool vis = ok[u] && r < nrows && key[u] <= last &&
                         (a.window_left < 0 || key[u] >= last - a.window_left);
        s = vis ? s : -INFINITY;
        float mx = s;
#pragma unroll
        for (int o = kLanesPerKey; o < 32; o *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        // Rescale only when the running max grows (mx and m_run are the same in every lane of
        // the warp, so the branch is uniform): most steps of a long row skip it.
        if (mx > m_run[r]) {
          const float corr = fast_exp2(m_run[r] - mx);  // 0 while the row had no key
          l_run[r] *= corr;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][e] *= corr;
          m_run[r] = mx;
        }
        const float p = fast_exp2(s - (m_run[r] == -INFINITY ? 0.f : m_run[r]));  // 0 if masked
        l_run[r] += p;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r][e] = fmaf(p, vf[e], acc[r][e]);
      }
    }
  }

  if (a.k_new != nullptr && split == 0 && chunk == 0) append_rows<T, D>(a, bi, hk, old);

  // Merge the key slots of the warp (the running max is already common to the warp).
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int o = kLanesPerKey; o < 32; o *= 2) {
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], o);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[r][e] += __shfl_xor_sync(0xffffffffu, acc[r][e], o);
    }
  }

  // Merge the warps through shared memory.
  __shared__ float sm_m[kWarps][kRows], sm_l[kWarps][kRows];
  __shared__ float sm_acc[kWarps][kRows][D];
  if (kslot == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int e = 0; e < 8; ++e) sm_acc[warp][r][sub * 8 + e] = acc[r][e];
      if (sub == 0) {
        sm_m[warp][r] = m_run[r];
        sm_l[warp][r] = l_run[r];
      }
    }
  }
  __syncthreads();
  const int rows_total = a.b * a.h * a.s_q;
  for (int idx = threadIdx.x; idx < nrows * D; idx += kThreads) {
    const int r = idx / D, e = idx % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sm_m[w][r]);
    const float m_use = mx == -INFINITY ? 0.f : mx;
    float l = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float c = exp2f(sm_m[w][r] - m_use);
      l += c * sm_l[w][r];
      o += c * sm_acc[w][r][e];
    }
    const float val = l > 0.f ? o / l : 0.f;
    const float lse = l > 0.f ? (mx + log2f(l)) * kLn2 : -INFINITY;
    const int m = m0 + r;
    const int qi = m / a.group, qh = hk * a.group + m % a.group;
    const int64_t row = (int64_t(bi) * a.h + qh) * a.s_q + qi;  // lse order [b, h, s_q]
    if (a.num_splits == 1) {
      a.out[bi * a.out_st.batch + int64_t(qi) * a.out_st.seq + int64_t(qh) * a.out_st.head + e] =
          from_float<T>(val);
      if (e == 0 && a.lse != nullptr) a.lse[row] = lse;
    } else {
      a.part_o[(int64_t(split) * rows_total + row) * D + e] = val;
      if (e == 0) a.part_lse[int64_t(split) * rows_total + row] = lse;
    }
  }
}

// Rows per block for a group of `rows` (query heads of a kv head x query positions).
inline int rows_per_block(int rows) {
  int r = 1;
  while (r < rows && r < kMaxRows) r *= 2;
  return r;
}

}  // namespace decode
}  // namespace cuda
}  // namespace pte
