// What the sm80 forward and backward kernels share: the K/V and Q/dO tile loads of their
// pipelines. The tile-range rule (Mask::key_tiles / query_tiles) and the kernels around the
// attention kernels (row_kernels.h) are arch-neutral.
#pragma once

#include <cstdint>

#include "core/problem.h"
#include "cuda/attn/row_kernels.h"
#include "cuda/attn/seqlen_mask.h"
#include "cuda/attn/sm80/mma.h"
#include "cuda/attn/sm80/tile.h"

namespace pte {
namespace flash {

// The K and V tiles of a pipeline stage of the forward and the dQ kernel: BN rows each from
// k_rows / v_rows, keys past valid_rows and columns past d zero-filled, in one cp.async group
// with whatever the caller commits next. Built once per kernel from what does not change between
// stages, as the kernels' own lambdas would capture it (nvcc then emits the same code as for the
// lambdas it replaced, up to scheduling).
template <int BN, int D, int kThreads, typename T>
struct KVTileLoader {
  const AttnProblem& p;
  const T* k;  // tensor bases: the valid address a zero-filled copy is given
  const T* v;
  int d, tid;
  __device__ __forceinline__ void operator()(T* sK, T* sV, const T* k_rows, const T* v_rows,
                                             int64_t valid_rows) const {
    load_tile<BN, D, kThreads>(sK, k_rows, p.k_st.seq, valid_rows, d, k, tid);
    load_tile<BN, D, kThreads>(sV, v_rows, p.v_st.seq, valid_rows, d, v, tid);
  }
};

// The loads of a dK/dV block, shared by both dK/dV kernels: its K and V tiles once, then one Q/dO
// step per stage. Built once per block from what does not change between steps.
template <int BN, int BM, int D, int kThreads, typename T>
struct DkdvLoader {
  const AttnProblem& p;
  const SeqInfo& si;
  const float* dsum;  // Dsum, in lse's layout
  int64_t bi;
  int d, tid;

  // Keys [n0, n0 + BN) of kv head hk into sK, sV ([BN][S] each); keys past L_kv zero-filled.
  __device__ __forceinline__ void kv_block(T* sK, T* sV, int64_t hk, int64_t n0) const {
    const T* k = static_cast<const T*>(p.k);
    const T* v = static_cast<const T*>(p.v);
    load_tile<BN, D, kThreads>(sK, k + si.kv_offset(p.k_st, bi, n0, hk), p.k_st.seq,
                               si.L_kv - n0, d, k, tid);
    load_tile<BN, D, kThreads>(sV, v + si.kv_offset(p.v_st, bi, n0, hk), p.v_st.seq,
                               si.L_kv - n0, d, v, tid);
  }

  // One step into one stage: Q and dO rows [m0, m0 + BM) of query head hq ([BM][S] each) and
  // their lse and Dsum ([BM] each, 0 past L_q). The row statistics ride the same cp.async group:
  // a plain load here would stall every thread until it returns, once per step. The rows of a
  // step are consecutive in lse's layout.
  __device__ __forceinline__ void step(T* sQ, T* sdO, float* sL, float* sD, int64_t hq,
                                       int64_t m0) const {
    const T* q = static_cast<const T*>(p.q);
    const T* dout = static_cast<const T*>(p.grad_out);
    load_tile<BM, D, kThreads>(sQ, q + si.q_offset(p.q_st, bi, m0, hq), p.q_st.seq, si.L_q - m0,
                               d, q, tid);
    load_tile<BM, D, kThreads>(sdO, dout + si.q_offset(p.grad_out_st, bi, m0, hq),
                               p.grad_out_st.seq, si.L_q - m0, d, dout, tid);
    const int64_t row0 = row_stat_index(p, si, bi, hq, m0);
    for (int r = tid; r < BM; r += kThreads) {
      const bool ok = m0 + r < si.L_q;
      const int64_t idx = ok ? row0 + r : 0;
      cp_async_4(sL + r, p.lse + idx, ok);
      cp_async_4(sD + r, dsum + idx, ok);
    }
  }
};

}  // namespace flash
}  // namespace pte
