// Helpers shared by the CPU reference kernels (csrc/cpu/*.cc): ISA dispatch, a vectorizable exp,
// and per-thread work buffers. Internal to csrc/cpu; nothing here is part of the C API.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// Hot tile routines are compiled twice, for the x86-64 baseline (SSE2) and for x86-64-v3
// (AVX2 + FMA); the loader picks the best clone once (ifunc), so one binary is portable and
// still fast. Only GCC >= 11 on x86-64 Linux knows the `arch=x86-64-v3` level and ifuncs;
// elsewhere the routines are compiled once for whatever the build targets.
#if defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 11) && defined(__x86_64__) && \
    defined(__linux__)
#define PTE_CPU_CLONES __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define PTE_CPU_CLONES
#endif

// Small helpers are force-inlined into the cloned routines so that they are vectorized with the
// clone's ISA (a call into a baseline-compiled helper would fall back to SSE2).
#if defined(__GNUC__)
#define PTE_CPU_INLINE inline __attribute__((always_inline))
#else
#define PTE_CPU_INLINE inline
#endif

namespace pte {
namespace cpu {

#if defined(__GNUC__) || defined(__clang__)
#define PTE_CPU_VECTOR_EXP 1
// Eight float lanes (one AVX register in the x86-64-v3 clone, two SSE registers otherwise).
typedef float pte_f32x8 __attribute__((vector_size(32)));
typedef int32_t pte_i32x8 __attribute__((vector_size(32)));

// exp of eight floats. Written on GCC vector types rather than as a scalar function in a
// `#pragma omp simd` loop: libm's expf is an opaque call that blocks vectorization (unless
// -ffast-math), and a scalar version's clamps are float selects that GCC jump-threads into
// branches and then refuses to vectorize. Cody-Waite range reduction x = n ln2 + r,
// |r| <= ln2/2, then a degree-7 Taylor polynomial (truncation error < 5e-9 relative, below
// float's 6e-8 rounding). Results below 2^-126 flush to exactly 0, so exp(-inf) == 0 (the
// kernels rely on it for masked scores); NaN inputs clamp to a finite argument.
// In place (a by-value 32-byte vector would change the ABI between the SSE and AVX clones).
PTE_CPU_INLINE void exp_f32x8(pte_f32x8& x) {
  const pte_f32x8 zero = {};
  const pte_f32x8 lo = zero - 100.0f;  // well below ln(2^-126): flushes to 0 via the exponent
  const pte_f32x8 hi = zero + 88.0f;   // exp(88) ~ 1.65e38 < FLT_MAX
  x = x > lo ? x : lo;                 // also maps NaN to lo
  x = x < hi ? x : hi;
  const pte_f32x8 t = x * 1.44269504088896341f;  // x / ln2
  // Round to nearest: t + 256.5 > 0 on [lo, hi], so truncation toward zero is floor.
  const pte_i32x8 n = __builtin_convertvector(t + 256.5f, pte_i32x8) - 256;
  const pte_f32x8 fn = __builtin_convertvector(n, pte_f32x8);
  // ln2 split in two: the high part has 9 significant bits, so fn * hi-part is exact.
  const pte_f32x8 r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
  pte_f32x8 poly = 1.0f / 5040.0f + r * (1.0f / 40320.0f);
  poly = 1.0f / 720.0f + r * poly;
  poly = 1.0f / 120.0f + r * poly;
  poly = 1.0f / 24.0f + r * poly;
  poly = 1.0f / 6.0f + r * poly;
  poly = 0.5f + r * poly;
  poly = 1.0f + r * poly;
  poly = 1.0f + r * poly;
  // 2^n from its biased exponent n + 127, clamped at 0 (the bit pattern of +0.0) for n < -126.
  pte_i32x8 biased = n + 127;
  biased = biased > 0 ? biased : 0;
  x = poly * (pte_f32x8)(biased << 23);  // same-size vector cast: bit reinterpretation
}
#endif

// x[j] = exp(x[j] * mul - sub) for j in [0, n).
PTE_CPU_INLINE void exp_row(float* x, int64_t n, float mul, float sub) {
#ifdef PTE_CPU_VECTOR_EXP
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    pte_f32x8 v;
    std::memcpy(&v, x + j, sizeof(v));
    v = v * mul - sub;
    exp_f32x8(v);
    std::memcpy(x + j, &v, sizeof(v));
  }
  if (j < n) {
    // Tail through the same lanes, so every element gets the same rounding as the body.
    pte_f32x8 v = {};
    std::memcpy(&v, x + j, sizeof(float) * (n - j));
    v = v * mul - sub;
    exp_f32x8(v);
    std::memcpy(x + j, &v, sizeof(float) * (n - j));
  }
#else
  for (int64_t j = 0; j < n; ++j) x[j] = std::exp(x[j] * mul - sub);
#endif
}

// float64 is the precision reference: use libm (scalar) rather than an approximation.
PTE_CPU_INLINE void exp_row(double* x, int64_t n, double mul, double sub) {
  for (int64_t j = 0; j < n; ++j) x[j] = std::exp(x[j] * mul - sub);
}

// Single values (the online-softmax rescale factor), with the same arithmetic as exp_row.
PTE_CPU_INLINE float exp_one(float x) {
  float v = x;
  exp_row(&v, 1, 1.0f, 0.0f);
  return v;
}
PTE_CPU_INLINE double exp_one(double x) { return std::exp(x); }

template <class T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Threads worth using for `work` scalar operations. Waking a thread team costs microseconds on an
// idle machine and milliseconds on a busy one, so calls below kMinParallelWork run on the calling
// thread alone (layers make many such small calls). The result never changes the numbers: every
// kernel's output is independent of the thread count.
constexpr double kMinParallelWork = 1 << 18;
inline int threads_for(double work) {
  if (work < kMinParallelWork) return 1;
  return max_threads();
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace cpu
}  // namespace pte
