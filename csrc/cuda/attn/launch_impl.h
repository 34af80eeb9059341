// Host side that every kernel family's launchers share (sm80/launch_impl.h, sm90/launch_*.h):
// grid arithmetic, the opt-in to large shared memory, the zeroing of a thd tensor's tail, and
// the one-warp-per-row kernels of row_kernels.h. Only launcher headers include this file, so the
// kernels are compiled once per instantiation file (inst/*.cu) and nowhere else.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/attn/launch.h"
#include "cuda/attn/row_kernels.h"
#include "cuda/common.cuh"

namespace pte {
namespace flash {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename Kernel>
void set_smem(Kernel kernel, int bytes) {
  PTE_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <typename T>
void zero_thd_tail(T* x, const Strides& st, int64_t t, int64_t heads, int d, const int32_t* cu,
                   int64_t b, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t work = t * heads * (d / 8);
  if (work == 0) return;
  const int blocks = int(std::min<int64_t>(ceil_div(work, kThreads), 1024));
  zero_thd_tail_kernel<T><<<blocks, kThreads, 0, stream>>>(x, st, t, heads, d, cu, b);
  PTE_CUDA_CHECK_LAUNCH();
}

}  // namespace flash
}  // namespace pte
