// CPU reference kernels for the masked softmax ops (SPEC §3):
//   y = softmax(scale * x) over the last axis, masked elements excluded, fully masked rows -> 0;
//   d_x = scale * y * (d_y - sum(d_y * y)).
// x, y, d_y, d_x: contiguous [b, h, s_q, s_kv]; mask: bool [mask_batch, 1, s_q, s_kv], True =
// masked out, broadcast over heads (and over the batch when mask_batch == 1). Rows are
// independent, so OpenMP splits rows; any s_kv works (a row is streamed three times).
#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "core/kernels.h"
#include "cpu/cpu_common.h"

namespace pte {
namespace cpu {
namespace {

// One row of s_kv elements; keys [0, limit) pass the causal rule, mask (nullable) masks more.
// Row sums are accumulated in double: rows can be 16k+ long.
template <class T>
PTE_CPU_CLONES void softmax_row_fwd(const T* x, T* y, const uint8_t* mask, int64_t limit,
                                    int64_t s_kv, T scale) {
  // Pass 1: y = scale * x on visible elements, -inf elsewhere; row max.
  T mx = neg_inf<T>();
  if (mask != nullptr) {
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < limit; ++j) {
      const T v = mask[j] ? neg_inf<T>() : x[j] * scale;
      y[j] = v;
      mx = v > mx ? v : mx;
    }
  } else {
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < limit; ++j) {
      const T v = x[j] * scale;
      y[j] = v;
      mx = v > mx ? v : mx;
    }
  }
  for (int64_t j = limit; j < s_kv; ++j) y[j] = T(0);
  if (mx == neg_inf<T>()) {
    // Fully masked row: exactly 0 (and no exp(-inf - -inf) = NaN).
    for (int64_t j = 0; j < limit; ++j) y[j] = T(0);
    return;
  }
  // Pass 2: exponentials (exp(-inf) == 0 for the masked elements) and their sum.
  exp_row(y, limit, T(1), mx);
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < limit; ++j) sum += double(y[j]);
  // Pass 3: normalize. sum >= 1 (the max element contributes exp(0)).
  const T inv = T(1.0 / sum);
#pragma omp simd
  for (int64_t j = 0; j < limit; ++j) y[j] *= inv;
}

template <class T>
PTE_CPU_CLONES void softmax_row_bwd(const T* y, const T* dy, T* dx, int64_t s_kv, T scale) {
  double dot = 0.0;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < s_kv; ++j) dot += double(dy[j]) * double(y[j]);
  const T t = T(dot);
#pragma omp simd
  for (int64_t j = 0; j < s_kv; ++j) dx[j] = scale * y[j] * (dy[j] - t);
}

// Keys [0, limit) of query row i pass the causal rule.
int64_t causal_limit(pte_softmax_causal_t causal, int64_t i, int64_t s_q, int64_t s_kv) {
  int64_t limit = s_kv;
  if (causal == PTE_SOFTMAX_CAUSAL_TOP_LEFT) limit = i + 1;
  if (causal == PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT) limit = i + s_kv - s_q + 1;
  return std::min(std::max<int64_t>(limit, 0), s_kv);
}

template <class T>
void softmax_fwd_impl(const SoftmaxProblem& p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const int64_t rows = p.b * p.h * p.s_q;
  const T scale = T(p.scale);
  const int nt = threads_for(double(rows) * p.s_kv);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % p.s_q;
    const int64_t bi = r / (p.h * p.s_q);
    const uint8_t* mask = nullptr;
    if (p.mask != nullptr) {
      const int64_t mb = p.mask_batch == 1 ? 0 : bi;
      mask = p.mask + (mb * p.s_q + i) * p.s_kv;
    }
    softmax_row_fwd<T>(x + r * p.s_kv, y + r * p.s_kv, mask, causal_limit(p.causal, i, p.s_q, p.s_kv),
                       p.s_kv, scale);
  }
}

template <class T>
void softmax_bwd_impl(const SoftmaxProblem& p) {
  const T* y = static_cast<const T*>(p.y);
  const T* dy = static_cast<const T*>(p.d_y);
  T* dx = static_cast<T*>(p.d_x);
  const int64_t rows = p.b * p.h * p.s_q;
  const T scale = T(p.scale);
  // Masked elements have y == 0, so they get d_x == 0 without looking at the mask.
  const int nt = threads_for(double(rows) * p.s_kv);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    softmax_row_bwd<T>(y + r * p.s_kv, dy + r * p.s_kv, dx + r * p.s_kv, p.s_kv, scale);
  }
}

}  // namespace

void softmax_fwd(const SoftmaxProblem& p) {
  switch (p.dtype) {
    case PTE_FLOAT32:
      softmax_fwd_impl<float>(p);
      return;
    case PTE_FLOAT64:
      softmax_fwd_impl<double>(p);
      return;
    default:
      PTE_INTERNAL("cpu::softmax_fwd: dtype=", int(p.dtype),
                   ": the CPU kernels take float32 or float64 (the caller converts float16 and "
                   "bfloat16 to float32)");
  }
}

void softmax_bwd(const SoftmaxProblem& p) {
  switch (p.dtype) {
    case PTE_FLOAT32:
      softmax_bwd_impl<float>(p);
      return;
    case PTE_FLOAT64:
      softmax_bwd_impl<double>(p);
      return;
    default:
      PTE_INTERNAL("cpu::softmax_bwd: dtype=", int(p.dtype),
                   ": the CPU kernels take float32 or float64 (the caller converts float16 and "
                   "bfloat16 to float32)");
  }
}

}  // namespace cpu
}  // namespace pte
