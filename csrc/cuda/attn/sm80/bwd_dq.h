// Flash-attention backward (sm_80+), dQ: the recomputing kernel of the deterministic mode (the
// atomic mode's conversion kernel is arch-neutral: row_kernels.h). bwd_dkdv.h describes the
// whole backward.
#pragma once

#include <cstdint>

#include "core/problem.h"
#include "cuda/attn/dropout.h"
#include "cuda/attn/seqlen_mask.h"
#include "cuda/attn/softmax.h"
#include "cuda/attn/sm80/kernel_common.h"
#include "cuda/attn/sm80/mma.h"
#include "cuda/attn/sm80/tile.h"

namespace pte {
namespace flash {

// ---------------------------------------------------------------------------------------------
// 3. dQ. BM queries per block (16 per warp), BN keys per step, K and V double-buffered.
template <int D_, int BM_, int BN_, int NW_>
struct BwdQConfig {
  static constexpr int D = D_, BM = BM_, BN = BN_, NW = NW_;
  static constexpr int kThreads = NW * 32;
  static_assert(BM == 16 * NW, "one m16 query tile per warp");
  static_assert(D % 16 == 0 && BN % 16 == 0, "tiles are multiples of 16");
  template <typename T>
  static constexpr int smem_bytes() {
    return (2 * BM + 4 * BN) * TileGeom<D>::kStride * int(sizeof(T));  // Q, dO + 2 x (K, V)
  }
};

template <typename Cfg, typename T, bool kDropout>
__global__ void __launch_bounds__(Cfg::kThreads) bwd_dq_kernel(const AttnProblem p,
                                                               const float* dsum) {
  constexpr int D = Cfg::D, BM = Cfg::BM, BN = Cfg::BN, kThreads = Cfg::kThreads;
  constexpr int S = TileGeom<D>::kStride;
  constexpr int NT = BN / 8, NO = D / 8;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [BM][S]
  T* sdO = sQ + BM * S;                     // [BM][S]
  T* sK = sdO + BM * S;                     // [2][BN][S]
  T* sV = sK + 2 * BN * S;                  // [2][BN][S]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int64_t bi = blockIdx.z, hq = blockIdx.y;
  const int64_t m0 = int64_t(blockIdx.x) * BM;
  const int d = int(p.d);
  const SeqInfo si(p, bi);
  if (p.thd && m0 >= si.L_q) return;
  const Mask mask(p, si);
  const int64_t hk = hq / (p.h / p.h_kv);
  const float scale_log2 = p.scale * kLog2e;

  float acc[1][NO][4];
#pragma unroll
  for (int no = 0; no < NO; ++no)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[0][no][e] = 0.f;

  const TileSpan kt = mask.key_tiles<BN>(m0, m0 + BM);
  const int64_t n_first = kt.first;
  const int n_tiles = int(kt.count);

  if (n_tiles > 0) {
    const T* q = static_cast<const T*>(p.q);
    const T* k = static_cast<const T*>(p.k);
    const T* v = static_cast<const T*>(p.v);
    const T* dout = static_cast<const T*>(p.grad_out);
    const T* kg = k + si.kv_offset(p.k_st, bi, 0, hk);
    const T* vg = v + si.kv_offset(p.v_st, bi, 0, hk);
    load_tile<BM, D, kThreads>(sQ, q + si.q_offset(p.q_st, bi, m0, hq), p.q_st.seq, si.L_q - m0,
                               d, q, tid);
    load_tile<BM, D, kThreads>(sdO, dout + si.q_offset(p.grad_out_st, bi, m0, hq), p.grad_out_st.seq,
                               si.L_q - m0, d, dout, tid);
    const KVTileLoader<BN, D, kThreads, T> load_kv_rows{p, k, v, d, tid};
    auto load_kv = [&](int stage, int64_t n0) {
      load_kv_rows(sK + stage * BN * S, sV + stage * BN * S, kg + n0 * p.k_st.seq,
                   vg + n0 * p.v_st.seq, si.L_kv - n0);
    };
    load_kv(0, n_first * BN);
    cp_async_commit();

    // Row statistics of this lane's two rows.
    float lse_log2[2], dsum_r[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = m0 + warp * 16 + g + r * 8;
      const bool ok = i < si.L_q;
      lse_log2[r] = ok ? p.lse[row_stat_index(p, si, bi, hq, i)] * kLog2e : 0.f;
      dsum_r[r] = ok ? dsum[row_stat_index(p, si, bi, hq, i)] : 0.f;
    }

    Dropout drop(p, bi);
    for (int t = 0; t < n_tiles; ++t) {
      const int stage = t & 1;
      const int64_t n0 = (n_first + t) * BN;
      if (t + 1 < n_tiles) {
        load_kv(stage ^ 1, n0 + BN);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();

      float s[1][NT][4], dp[1][NT][4];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[0][nt][e] = dp[0][nt][e] = 0.f;
      gemm_rows_rows<1, NT, D>(s, sQ, warp * 16, sK + stage * BN * S, lane);
      gemm_rows_rows<1, NT, D>(dp, sdO, warp * 16, sV + stage * BN * S, lane);

      // Visible keys of this lane's two rows, tile-local (all of them in a full tile).
      int lo[2] = {0, 0}, hi[2] = {BN, BN};
      if (!mask.tile_full(m0, m0 + BM, n0, n0 + BN)) {
#pragma unroll
        for (int r = 0; r < 2; ++r) mask.row_span(m0 + warp * 16 + g + r * 8, n0, BN, &lo[r], &hi[r]);
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int64_t i = m0 + warp * 16 + g + r * 8;
          const int64_t j = n0 + nt * 8 + 2 * c;
          bool keep[2] = {true, true};
          if (kDropout) drop.keep_pair(hq, i, j, &keep[0], &keep[1]);
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int jl = nt * 8 + 2 * c + e;
            const bool vis = jl >= lo[r] && jl < hi[r];
            const float pv = vis ? recompute_p(s[0][nt][2 * r + e], scale_log2, lse_log2[r]) : 0.f;
            float dpv = dp[0][nt][2 * r + e];
            if (kDropout) dpv = keep[e] ? dpv * drop.scale : 0.f;
            s[0][nt][2 * r + e] = pv * (dpv - dsum_r[r]);  // dS
          }
        }
      gemm_regs_rows<1, NT, NO, D>(acc, s, sK + stage * BN * S, 0, lane);
      __syncthreads();
    }
  }

  T* dq = static_cast<T*>(p.grad_q);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = m0 + warp * 16 + g + r * 8;
    const bool valid = i < si.L_q;
    if (!valid && (p.thd || i >= p.s_q)) continue;
    const float f = valid ? p.scale : 0.f;
    T* row = dq + si.q_offset(p.grad_q_st, bi, i, hq);
#pragma unroll
    for (int no = 0; no < NO; ++no) {
      const int col = no * 8 + 2 * c;
      if (col < d) store_pair(row + col, acc[0][no][2 * r] * f, acc[0][no][2 * r + 1] * f);
    }
  }
}

}  // namespace flash
}  // namespace pte
