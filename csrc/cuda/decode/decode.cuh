// CUDA decode kernels (SPEC §10): split-KV attention over a contiguous or paged cache with the
// in-place append fused in, and the lse combine of the splits.
//
// Attention kernel: one block of kWarps warps per (row chunk, split, kv head, batch). The rows of
// a block are up to kRows (query head of the GQA group, query position) pairs that share one kv
// head, so every K/V row read from memory serves all of them. Within a warp, kLanesPerKey = D/8
// lanes hold one key's row (one 16-byte load each of K and V), so a warp covers 32/kLanesPerKey
// keys per step and the warps of a block interleave over the split's keys. Each lane keeps an
// online-softmax state (running max in the log2 domain, partial sum, 8 output columns) per row;
// lanes of a warp merge with shuffles, warps through shared memory.
//
// No value is read on the host: lengths come from cache_seqlens on the device, and the split of
// a sequence's visible key range over the fixed number of blocks happens in the kernel, so a
// CUDA graph replays with new lengths. Lengths are clamped to the capacity and keys on
// out-of-range pages are masked, so bad values cannot read or write out of bounds.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "core/decode_problem.h"
#include "cuda/common.cuh"

namespace pte {
namespace cuda {
namespace decode {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 2;  // key steps whose loads are issued together (memory parallelism)
constexpr int kMaxRows = 8; // rows per block; larger groups use several row chunks
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Everything the kernels read; element strides, head dim contiguous.
template <typename T>
struct Args {
  const T* q;
  T* k_cache;
  T* v_cache;
  const T* k_new;
  const T* v_new;
  T* out;
  float* lse;  // [b, h, s_q] or null
  Strides q_st, kc_st, vc_st, kn_st, vn_st, out_st;
  const int32_t* cache_seqlens;
  const int32_t* block_table;  // null: contiguous cache
  int b, s_q, h, h_kv, group, rows, row_chunks, d, d_v;
  int capacity, page_size, num_pages, pages_per_seq;
  int appended;      // s_q with k_new, else 0
  int window_left;   // -1 = unbounded
  int num_splits;
  float scale_log2;  // softmax_scale * log2(e)
  float* part_o;     // [num_splits, b*h*s_q, d_v] (num_splits > 1)
  float* part_lse;   // [num_splits, b*h*s_q]
};

// Cached length of sequence bi before the append (clamped to [0, capacity]) and its key count
// after the append (clamped to the capacity).
template <typename T>
__device__ __forceinline__ void lengths(const Args<T>& a, int bi, int* old, int* n) {
  int len = a.cache_seqlens[bi];
  len = len < 0 ? 0 : (len > a.capacity ? a.capacity : len);
  *old = len;
  *n = len + a.appended > a.capacity ? a.capacity : len + a.appended;
}

// Element offset of (position pos, kv head hk) of sequence bi in a cache with strides st, or -1
// when pos lives on a page index outside [0, num_pages).
template <typename T>
__device__ __forceinline__ int64_t cache_offset(const Args<T>& a, const Strides& st, int bi,
                                                int pos, int hk) {
  if (a.block_table == nullptr) return bi * st.batch + int64_t(pos) * st.seq + hk * st.head;
  const int page = a.block_table[int64_t(bi) * a.pages_per_seq + pos / a.page_size];
  if (page < 0 || page >= a.num_pages) return -1;
  return int64_t(page) * st.batch + int64_t(pos % a.page_size) * st.seq + hk * st.head;
}

// ---- attention ----------------------------------------------------------------------------------

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
__global__ void __launch_bounds__(kThreads) attn_kernel(Args<T> a) {
  constexpr int kLanesPerKey = D / 8;
  constexpr int kKeysPerStep = 32 / kLanesPerKey;
  static_assert(kLanesPerKey >= 1 && kLanesPerKey <= 32 && 32 % kLanesPerKey == 0, "head dim");

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
  const int last_lo = n - a.s_q + row_i[0];          // rows are sorted by i
  const int last_hi = n - a.s_q + row_i[kRows - 1];  // padded rows repeat the last real row
  int hi = min(n, last_hi + 1);
  int lo = a.window_left < 0 ? 0 : max(0, last_lo - a.window_left);
  const int total = max(0, hi - lo);
  const int per = (total + a.num_splits - 1) / a.num_splits;
  const int s_lo = lo + split * per;
  const int s_hi = min(hi, s_lo + per);

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

  // In-place append: the first block of each (kv head, sequence) writes the new rows. Positions
  // past the capacity or on out-of-range pages are skipped (never written out of bounds).
  if (a.k_new != nullptr && split == 0 && chunk == 0) {
    constexpr int kVecs = D / 8;
    for (int idx = threadIdx.x; idx < a.appended * kVecs; idx += kThreads) {
      const int i = idx / kVecs, c = idx % kVecs;
      const int pos = old + i;
      if (pos >= a.capacity) continue;
      const int64_t ko = cache_offset(a, a.kc_st, bi, pos, hk);
      const int64_t vo = cache_offset(a, a.vc_st, bi, pos, hk);
      if (ko < 0 || vo < 0) continue;
      const T* kn = a.k_new + bi * a.kn_st.batch + int64_t(i) * a.kn_st.seq + hk * a.kn_st.head;
      const T* vn = a.v_new + bi * a.vn_st.batch + int64_t(i) * a.vn_st.seq + hk * a.vn_st.head;
      reinterpret_cast<uint4*>(a.k_cache + ko)[c] = reinterpret_cast<const uint4*>(kn)[c];
      reinterpret_cast<uint4*>(a.v_cache + vo)[c] = reinterpret_cast<const uint4*>(vn)[c];
    }
  }

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

// ---- combine ------------------------------------------------------------------------------------

// One warp per output row (b, h, s_q order); lanes over the head dim.
template <typename T>
__global__ void __launch_bounds__(kThreads) combine_kernel(Args<T> a) {
  const int rows_total = a.b * a.h * a.s_q;
  const int row = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows_total) return;
  float mx = -INFINITY;
  for (int s = 0; s < a.num_splits; ++s) mx = fmaxf(mx, a.part_lse[int64_t(s) * rows_total + row]);
  const int qi = row % a.s_q, qh = (row / a.s_q) % a.h, bi = row / (a.s_q * a.h);
  T* out = a.out + bi * a.out_st.batch + int64_t(qi) * a.out_st.seq + int64_t(qh) * a.out_st.head;
  if (mx == -INFINITY) {
    for (int e = lane; e < a.d_v; e += 32) out[e] = from_float<T>(0.f);
    if (lane == 0 && a.lse != nullptr) a.lse[row] = -INFINITY;
    return;
  }
  float wsum = 0.f;
  for (int s = 0; s < a.num_splits; ++s) wsum += __expf(a.part_lse[int64_t(s) * rows_total + row] - mx);
  const float inv = 1.f / wsum;
  for (int e = lane; e < a.d_v; e += 32) {
    float o = 0.f;
    for (int s = 0; s < a.num_splits; ++s) {
      const float w = __expf(a.part_lse[int64_t(s) * rows_total + row] - mx);
      o += w * a.part_o[(int64_t(s) * rows_total + row) * a.d_v + e];
    }
    out[e] = from_float<T>(o * inv);
  }
  if (lane == 0 && a.lse != nullptr) a.lse[row] = mx + logf(wsum);
}

// Rows per block for a group of `rows` (query heads of a kv head x query positions).
inline int rows_per_block(int rows) {
  int r = 1;
  while (r < rows && r < kMaxRows) r *= 2;
  return r;
}

template <typename T, int D, int kRows>
void launch_attn(const Args<T>& a, cudaStream_t stream) {
  const dim3 grid(a.row_chunks * a.num_splits, a.h_kv, a.b);
  attn_kernel<T, D, kRows><<<grid, kThreads, 0, stream>>>(a);
  PTE_CUDA_CHECK_LAUNCH();
}

template <typename T, int D>
void launch_rows(const Args<T>& a, int rows_per, cudaStream_t stream) {
  switch (rows_per) {
    case 1: return launch_attn<T, D, 1>(a, stream);
    case 2: return launch_attn<T, D, 2>(a, stream);
    case 4: return launch_attn<T, D, 4>(a, stream);
    case 8: return launch_attn<T, D, 8>(a, stream);
    default: PTE_INTERNAL("decode: rows per block ", rows_per, " not instantiated (1, 2, 4, 8)");
  }
}

// Attention with the fused in-place append, then the combine (num_splits > 1), on `stream`.
template <typename T>
void launch(const Args<T>& a, int rows_per, cudaStream_t stream) {
  switch (a.d) {
    case 64: launch_rows<T, 64>(a, rows_per, stream); break;
    case 128: launch_rows<T, 128>(a, rows_per, stream); break;
    case 256: launch_rows<T, 256>(a, rows_per, stream); break;
    default: PTE_INTERNAL("decode: head dim ", a.d, " not instantiated (64, 128, 256)");
  }
  if (a.num_splits > 1) {
    const int rows_total = a.b * a.h * a.s_q;
    combine_kernel<T><<<(rows_total + kWarps - 1) / kWarps, kThreads, 0, stream>>>(a);
    PTE_CUDA_CHECK_LAUNCH();
  }
}

// One instantiation per storage type, each in its own .cu file (compile time).
void launch_fp16(const Args<__half>& a, int rows_per, cudaStream_t stream);
void launch_bf16(const Args<__nv_bfloat16>& a, int rows_per, cudaStream_t stream);

}  // namespace decode
}  // namespace cuda
}  // namespace pte
