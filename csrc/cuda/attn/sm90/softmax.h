// Online softmax over the wgmma accumulator layout. A consumer thread's fragment of an m64nN
// accumulator holds, at flat index i, row 8 * ((i >> 1) & 1) + lane / 4 of its warp's 16 rows and
// column 8 * (i >> 2) + 2 * (lane % 4) + (i & 1): two rows per thread, each shared by the 4 lanes
// of a quad. The same order holds for the S tile (N = BN) and the O tile (N = D), which is what
// lets one rescale factor per row be applied to both. Log2 domain as in cuda/attn/softmax.h.
#pragma once

#include <cmath>

#include <cute/tensor.hpp>

#include "cuda/attn/softmax.h"

namespace pte {
namespace flash {
namespace sm90 {

__device__ __forceinline__ int frag_row(int i) { return (i >> 1) & 1; }

struct RowSoftmax {
  float m[2];  // running max of x = s * scale * log2(e); -inf while nothing is visible
  float l[2];  // this lane's partial row sum; reduced over the quad in finish()

  __device__ __forceinline__ RowSoftmax() {
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.f;
  }

  // s: raw scores (masked = -inf) -> unnormalised probabilities; alpha[r] = exp2(m_old - m_new)
  // is the factor the output rows must be rescaled by (rescale(), which the overlapped schedule
  // applies only once the previous P V GEMM has completed). A row with nothing visible yet is
  // rescaled against 0 so -inf - -inf never appears.
  template <class TS>
  __device__ __forceinline__ void probs(TS& s, float scale_log2, float (&alpha)[2]) {
    constexpr int NS = int(cute::size(TS{}.layout()));
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < NS; ++i) mx[frag_row(i)] = fmaxf(mx[frag_row(i)], s(i));
    float m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], quad_max(mx[r]) * scale_log2);
      m_use[r] = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = fast_exp2(m[r] - m_use[r]);
      m[r] = m_new;
    }
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const float pv = fast_exp2(fmaf(s(i), scale_log2, -m_use[frag_row(i)]));
      s(i) = pv;
      sum[frag_row(i)] += pv;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
  }

  template <class TO>
  __device__ __forceinline__ static void rescale(TO& o, const float (&alpha)[2]) {
    constexpr int NO = int(cute::size(TO{}.layout()));
#pragma unroll
    for (int i = 0; i < NO; ++i) o(i) *= alpha[frag_row(i)];
  }

  // 1 / row sum (0 for a row that saw nothing) and the natural-log lse (-inf for such a row).
  __device__ __forceinline__ void finish(int r, float* inv, float* lse) const {
    const float sum = quad_sum(l[r]);
    const float mu = m[r] == -INFINITY ? 0.f : m[r];
    *inv = sum > 0.f ? 1.f / sum : 0.f;
    *lse = sum > 0.f ? (mu + log2f(sum)) * kLn2 : -INFINITY;
  }
};

}  // namespace sm90
}  // namespace flash
}  // namespace pte
