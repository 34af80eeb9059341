// Online softmax of the forward kernel (one running max and sum per accumulator row) and the
// probability recomputation of the backward kernels. Everything is in the log2 domain:
// x = s * scale * log2(e), p = exp2(x - m), so one FFMA + EX2 per element.
//
// Masked elements hold -inf. A row whose every key so far is masked has m = -inf; it is rescaled
// against 0 instead (exp2(-inf - 0) = 0), so no -inf - -inf = NaN ever appears, and a row that
// ends with l = 0 writes output 0 and lse = -inf.
#pragma once

#include <cmath>

namespace pte {
namespace flash {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Sum / max over the 4 lanes of a quad (the lanes that hold one row of an mma.sync
// accumulator fragment).
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return v;
}

// 2^x as one MUFU.EX2 (flush-to-zero, ~2 ulp): exp2f without fast-math adds a range test and two
// multiplies per element to keep subnormal results, which a probability never needs. 2^-inf = +0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Running statistics of the 2 rows (g and g + 8) of each of a warp's MT m-tiles.
template <int MT>
struct OnlineSoftmax {
  float m[MT][2];  // running max of x (log2 domain), -inf while nothing is visible
  float l[MT][2];  // this lane's partial sum of p; reduced over the quad at the end

  __device__ __forceinline__ OnlineSoftmax() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        m[mt][r] = -INFINITY;
        l[mt][r] = 0.f;
      }
  }

  // s: raw scores [MT][NT][4] (masked = -inf) -> unnormalised probabilities; acc_o [MT][NO][4] is
  // rescaled by exp2(m_old - m_new).
  template <int NT, int NO>
  __device__ __forceinline__ void update(float (&s)[MT][NT][4], float (&acc_o)[MT][NO][4],
                                         float scale_log2) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
        mx = quad_max(mx) * scale_log2;
        const float m_new = fmaxf(m[mt][r], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = fast_exp2(m[mt][r] - m_use);
        m[mt][r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float pv = fast_exp2(fmaf(s[mt][nt][2 * r + e], scale_log2, -m_use));
            s[mt][nt][2 * r + e] = pv;
            sum += pv;
          }
        l[mt][r] = l[mt][r] * alpha + sum;
#pragma unroll
        for (int no = 0; no < NO; ++no) {
          acc_o[mt][no][2 * r] *= alpha;
          acc_o[mt][no][2 * r + 1] *= alpha;
        }
      }
  }

  // Final row sums (quad-reduced) and natural-log lse; inv = 1/l or 0 for an empty row.
  __device__ __forceinline__ void finish(int mt, int r, float* inv, float* lse) {
    const float sum = quad_sum(l[mt][r]);
    const float mu = m[mt][r] == -INFINITY ? 0.f : m[mt][r];
    *inv = sum > 0.f ? 1.f / sum : 0.f;
    *lse = sum > 0.f ? (mu + log2f(sum)) * kLn2 : -INFINITY;
  }
};

// Backward: p = exp(scale * s - lse) from the stored natural-log lse, given in the log2 domain
// as lse_log2 = lse * log2(e). Callers zero masked elements with a select (never a multiply, since
// lse = -inf rows would give inf * 0).
__device__ __forceinline__ float recompute_p(float s, float scale_log2, float lse_log2) {
  return fast_exp2(fmaf(s, scale_log2, -lse_log2));
}

}  // namespace flash
}  // namespace pte
