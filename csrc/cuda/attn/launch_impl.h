// Host side that every kernel family's launchers share (sm80/launch_impl.h, sm90/launch_*.h):
// grid arithmetic, the opt-in to large shared memory, the zeroing of a thd tensor's tail, and
// the launches of the one-warp-per-row kernels of row_kernels.h around the dK/dV kernels. Only launcher headers include this file, so the
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

// The passes around every family's dK/dV kernel (sm80/launch_impl.h, sm90/launch_bwd.h):

// A thd backward's gradients past the last sequence are zeros.
template <typename T>
void zero_bwd_thd_tails(const AttnProblem& p, cudaStream_t stream) {
  if (!p.thd) return;
  const int d = int(p.d);
  zero_thd_tail(static_cast<T*>(p.grad_q), p.grad_q_st, p.t_q, p.h, d, p.cu_q, p.b, stream);
  zero_thd_tail(static_cast<T*>(p.grad_k), p.grad_k_st, p.t_kv, p.h_kv, d, p.cu_kv, p.b, stream);
  zero_thd_tail(static_cast<T*>(p.grad_v), p.grad_v_st, p.t_kv, p.h_kv, d, p.cu_kv, p.b, stream);
}

// Dsum = rowsum(dO o O) into the workspace, row_lanes(d) lanes per row (p.s_q > 0).
template <typename T>
void launch_bwd_dot(const AttnProblem& p, float* dsum, cudaStream_t stream) {
  const int lanes = row_lanes(p.d);
  const dim3 grid(unsigned(ceil_div(p.s_q, kRowThreads / lanes)), unsigned(p.h), unsigned(p.b));
  auto kernel = lanes == 8 ? bwd_dot_kernel<T, 8> : lanes == 16 ? bwd_dot_kernel<T, 16>
                                                                : bwd_dot_kernel<T, 32>;
  kernel<<<grid, kRowThreads, 0, stream>>>(p, dsum);
  PTE_CUDA_CHECK_LAUNCH();
}

// dQ = scale * dq_accum (rows of D floats), row_lanes(d) lanes per row (p.s_q > 0).
template <typename T>
void launch_dq_convert(const AttnProblem& p, const float* dq_accum, int D, cudaStream_t stream) {
  const int lanes = row_lanes(p.d);
  const dim3 grid(unsigned(ceil_div(p.s_q, kRowThreads / lanes)), unsigned(p.h), unsigned(p.b));
  auto kernel = lanes == 8    ? bwd_dq_convert_kernel<T, 8>
                : lanes == 16 ? bwd_dq_convert_kernel<T, 16>
                              : bwd_dq_convert_kernel<T, 32>;
  kernel<<<grid, kRowThreads, 0, stream>>>(p, dq_accum, D);
  PTE_CUDA_CHECK_LAUNCH();
}

}  // namespace flash
}  // namespace pte
