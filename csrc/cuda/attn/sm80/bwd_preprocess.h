// Flash-attention backward (sm_80+), step 1 of both modes: Dsum. The backward in full (the
// dK/dV kernels are in bwd_dkdv.h, the dQ kernels in bwd_dq.h). Two modes, chosen by
// `deterministic`:
//
// deterministic=True: three kernels and no atomics, so it is bitwise repeatable:
//   1. bwd_dot_kernel:  Dsum[i] = rowsum(dO_i * O_i)  (fp32 workspace, lse's layout)
//   2. bwd_dkdv_kernel: one block per (key tile, kv head, sequence); it loops over every query
//      head of its GQA group and every query tile the window reaches, keeping dK and dV of its
//      keys in registers. It computes the transposed tiles S^T = K Q^T and dP^T = V dO^T, whose
//      accumulators are directly the A operands of dV += P^T dO and dK += dS^T Q.
//   3. bwd_dq_kernel:   one block per (query tile, query head, sequence); it recomputes S and dP
//      over the visible key tiles and accumulates dQ = dS K in registers.
//   Kernels 2 and 3 both compute S and dP: 7 tile GEMMs per (query tile, key tile) pair.
//
// deterministic=False: 5 tile GEMMs per pair, FlashAttention-2's scheme:
//   1. bwd_dot_kernel as above;
//   2. bwd_dkdv_kernel<..., kAtomicDq = true>: as above, and in the same step it stages dS^T in
//      shared memory and adds dQ += dS K of its key tile into an fp32 workspace with atomicAdd
//      (zeroed on the stream first). dK and dV stay block-local, so they are still bitwise
//      repeatable; only dQ's summation order varies between runs.
//   3. bwd_dq_convert_kernel: dQ = scale * workspace in the output dtype (zeros at padded rows).
//
// With dropout (mask Z, rate p): dV = (P o Z / (1-p))^T dO, dP = (dO V^T) o Z / (1-p),
// dS = P o (dP - Dsum), where Dsum = rowsum(dO o O) equals rowsum(P o dP).
#pragma once

#include <cstdint>

#include "core/problem.h"
#include "cuda/attn/dropout.h"
#include "cuda/attn/seqlen_mask.h"
#include "cuda/attn/softmax.h"
#include "cuda/attn/sm80/kernel_common.h"
#include "cuda/attn/sm80/mma.h"
#include "cuda/attn/sm80/tile.h"
#include "cuda/common.cuh"

namespace pte {
namespace flash {

// ---------------------------------------------------------------------------------------------
// 1. Dsum = rowsum(dO o O): one warp per row; written for every row of lse's layout that belongs
//    to the sequence (0 at padded rows of bshd/sbhd).
template <typename T>
__global__ void __launch_bounds__(kDotWarps * 32) bwd_dot_kernel(const AttnProblem p, float* dsum) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bi = blockIdx.z, hq = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * kDotWarps + warp;
  const SeqInfo si(p, bi);
  if (i >= (p.thd ? si.L_q : p.s_q)) return;
  float acc = 0.f;
  if (i < si.L_q) {
    const T* o = static_cast<const T*>(p.out) + si.q_offset(p.out_st, bi, i, hq);
    const T* dout = static_cast<const T*>(p.grad_out) + si.q_offset(p.grad_out_st, bi, i, hq);
    for (int col = lane * 2; col < p.d; col += 64) {
      acc += cuda::to_float(o[col]) * cuda::to_float(dout[col]) +
             cuda::to_float(o[col + 1]) * cuda::to_float(dout[col + 1]);
    }
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 16);
  acc += __shfl_xor_sync(0xffffffffu, acc, 8);
  acc += __shfl_xor_sync(0xffffffffu, acc, 4);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  if (lane == 0) dsum[row_stat_index(p, si, bi, hq, i)] = acc;
}

}  // namespace flash
}  // namespace pte
