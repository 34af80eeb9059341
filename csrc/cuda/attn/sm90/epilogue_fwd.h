// Epilogue of the sm90 forward: normalise O, stage it through shared memory (the bytes of Q, no
// longer read once every S GEMM of the CTA has completed) with an XOR swizzle of 16-byte chunks so
// that neither the fragment writes nor the row reads conflict on banks, then write whole rows with
// 16-byte stores. Rows past L_q get exact zeros in padded layouts and are left alone in thd (they
// belong to the next sequence); lse is written by the first lane of each quad.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/tensor.hpp>

#include "core/problem.h"
#include "cuda/attn/row_kernels.h"  // store_pair, row_stat_index
#include "cuda/attn/seqlen_mask.h"
#include "cuda/attn/sm90/softmax.h"

namespace pte {
namespace flash {
namespace sm90 {

// Named barrier ids (0 is __syncthreads): both consumer warpgroups, then one per warpgroup.
constexpr int kBarConsumers = 1;
constexpr int kBarWarpgroup0 = 2;

__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Element offset of (row, chunk of 8 columns) in a warpgroup's [64, D] staging tile.
template <int D>
__device__ __forceinline__ int staged(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) * 8);
}

// kInQ: `stage` is Q's buffer, which both warpgroups' S GEMMs read until they are done; else a
// buffer of O's own, which this warpgroup may still be reading from its previous tile.
template <int D, bool kInQ, typename T, class TO, class TC>
__device__ __forceinline__ void store_out(const AttnProblem& p, const SeqInfo& si, int64_t bi,
                                          int64_t hq, int64_t m0, TO& o, TC const& tOcO,
                                          const RowSoftmax& sm, float drop_scale, T* stage,
                                          int wg, int tid) {
  constexpr int NO = int(cute::size(TO{}.layout()));
  constexpr int kChunks = D / 8;
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float lse;
    sm.finish(r, &inv[r], &lse);
    const int64_t i = m0 + cute::get<0>(tOcO(2 * r));
    inv[r] *= drop_scale;
    if (p.lse != nullptr && cute::get<1>(tOcO(0)) == 0) {
      if (i < si.L_q || (!p.thd && i < p.s_q))
        p.lse[row_stat_index(p, si, bi, hq, i)] = i < si.L_q ? lse : -INFINITY;
    }
  }
  if (kInQ)
    named_sync(kBarConsumers, 256);  // every S GEMM of both warpgroups has completed
  else
    named_sync(kBarWarpgroup0 + wg, 128);  // this warpgroup is done reading its previous tile
  T* tile = stage + wg * 64 * D;
#pragma unroll
  for (int i = 0; i < NO; i += 2) {
    const int row = cute::get<0>(tOcO(i)) - wg * 64;
    const int col = cute::get<1>(tOcO(i));
    const float f = inv[frag_row(i)];
    const int off = staged<D>(row, col / 8) + col % 8;
    store_pair(tile + off, o(i) * f, o(i + 1) * f);
  }
  named_sync(kBarWarpgroup0 + wg, 128);
  T* out = static_cast<T*>(p.out);
  const int64_t last = p.thd ? si.L_q : p.s_q;  // rows < L_q hold O, the rest of s_q zeros
  const int d = int(p.d);
  for (int idx = tid; idx < 64 * kChunks; idx += 128) {
    const int row = idx / kChunks, ch = idx % kChunks;
    const int64_t i = m0 + wg * 64 + row;
    if (i >= last || ch * 8 >= d) continue;
    const uint4 v = *reinterpret_cast<const uint4*>(tile + staged<D>(row, ch));
    *reinterpret_cast<uint4*>(out + si.q_offset(p.out_st, bi, i, hq) + ch * 8) = v;
  }
}

}  // namespace sm90
}  // namespace flash
}  // namespace pte
