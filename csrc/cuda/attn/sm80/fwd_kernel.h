// Flash-attention forward (sm_80+): one block per (query tile of BM rows, query head, sequence).
// Q stays in shared memory; K and V tiles stream through a two-stage cp.async pipeline; each
// warp owns MT m16 row tiles and keeps its output rows in fp32 registers with an online softmax.
// Only the key tiles the window can reach are visited, and only tiles that are not entirely
// visible evaluate the per-element predicate.
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

template <int D_, int BM_, int BN_, int NW_>
struct FwdConfig {
  static constexpr int D = D_, BM = BM_, BN = BN_, NW = NW_;
  static constexpr int kThreads = NW * 32;
  static constexpr int MT = BM / (16 * NW);  // m16 tiles per warp
  static_assert(MT >= 1 && BM == MT * 16 * NW, "BM must be a multiple of 16 * warps");
  static_assert(D % 16 == 0 && BN % 16 == 0, "tiles are multiples of 16");
  template <typename T>
  static constexpr int smem_bytes() {
    return (BM + 4 * BN) * TileGeom<D>::kStride * int(sizeof(T));  // Q + 2 x (K, V)
  }
};

template <typename Cfg, typename T, bool kDropout>
__global__ void __launch_bounds__(Cfg::kThreads) fwd_kernel(const AttnProblem p) {
  constexpr int D = Cfg::D, BM = Cfg::BM, BN = Cfg::BN, MT = Cfg::MT, kThreads = Cfg::kThreads;
  constexpr int S = TileGeom<D>::kStride;
  constexpr int NT = BN / 8, NO = D / 8;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [BM][S]
  T* sK = sQ + BM * S;                      // [2][BN][S]
  T* sV = sK + 2 * BN * S;                  // [2][BN][S]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int64_t bi = blockIdx.z, hq = blockIdx.y;
  const int64_t m0 = int64_t(blockIdx.x) * BM;
  const int d = int(p.d);
  const SeqInfo si(p, bi);
  if (p.thd && m0 >= si.L_q) return;  // those rows belong to the next sequence
  const Mask mask(p, si);
  const int64_t hk = hq / (p.h / p.h_kv);
  const float scale_log2 = p.scale * kLog2e;
  const int warp_row0 = warp * MT * 16;  // first row of this warp inside the tile

  float acc[MT][NO][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int no = 0; no < NO; ++no)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][no][e] = 0.f;
  OnlineSoftmax<MT> sm;

  const TileSpan kt = mask.key_tiles<BN>(m0, m0 + BM);
  const int64_t n_first = kt.first;
  const int n_tiles = int(kt.count);

  if (n_tiles > 0) {
    const T* q = static_cast<const T*>(p.q);
    const T* k = static_cast<const T*>(p.k);
    const T* v = static_cast<const T*>(p.v);
    const T* kg = k + si.kv_offset(p.k_st, bi, 0, hk);
    const T* vg = v + si.kv_offset(p.v_st, bi, 0, hk);
    load_tile<BM, D, kThreads>(sQ, q + si.q_offset(p.q_st, bi, m0, hq), p.q_st.seq, si.L_q - m0,
                               d, q, tid);
    const KVTileLoader<BN, D, kThreads, T> load_kv_rows{p, k, v, d, tid};
    auto load_kv = [&](int stage, int64_t n0) {
      load_kv_rows(sK + stage * BN * S, sV + stage * BN * S, kg + n0 * p.k_st.seq,
                   vg + n0 * p.v_st.seq, si.L_kv - n0);
    };
    load_kv(0, n_first * BN);
    cp_async_commit();

    Dropout drop(p, bi);
    for (int t = 0; t < n_tiles; ++t) {
      const int stage = t & 1;
      const int64_t n0 = (n_first + t) * BN;
      // This tile has landed and every warp is done with the previous one, whose stage the next
      // tile's copies (in flight while this one is computed) overwrite: one barrier per tile.
      cp_async_wait<0>();
      __syncthreads();
      if (t + 1 < n_tiles) load_kv(stage ^ 1, n0 + BN);
      cp_async_commit();

      float s[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
      gemm_rows_rows<MT, NT, D>(s, sQ, warp_row0, sK + stage * BN * S, lane);

      if (!mask.tile_full(m0, m0 + BM, n0, n0 + BN)) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            int lo, hi;
            mask.row_span(m0 + warp_row0 + mt * 16 + g + r * 8, n0, BN, &lo, &hi);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int jl = nt * 8 + 2 * c + e;
                if (jl < lo || jl >= hi) s[mt][nt][2 * r + e] = -INFINITY;
              }
          }
      }
      sm.update(s, acc, scale_log2);

      if (kDropout) {
        // The row sums above use the undropped probabilities; only P V sees the mask.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int64_t i = m0 + warp_row0 + mt * 16 + g + r * 8;
              const int64_t j = n0 + nt * 8 + 2 * c;
              bool k0, k1;
              drop.keep_pair(hq, i, j, &k0, &k1);
              if (!k0) s[mt][nt][2 * r] = 0.f;
              if (!k1) s[mt][nt][2 * r + 1] = 0.f;
            }
      }
      gemm_regs_rows<MT, NT, NO, D>(acc, s, sV + stage * BN * S, 0, lane);
    }
  }

  // Epilogue: normalise, write rows < L_q; padded rows (< s_q, bshd/sbhd) get exact zeros.
  T* out = static_cast<T*>(p.out);
  const float drop_scale = kDropout ? 1.0f / (1.0f - p.dropout) : 1.0f;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = m0 + warp_row0 + mt * 16 + g + r * 8;
      float inv, lse;
      sm.finish(mt, r, &inv, &lse);
      const bool valid = i < si.L_q;
      if (!valid && (p.thd || i >= p.s_q)) continue;
      const float f = valid ? inv * drop_scale : 0.f;
      T* orow = out + si.q_offset(p.out_st, bi, i, hq);
#pragma unroll
      for (int no = 0; no < NO; ++no) {
        const int col = no * 8 + 2 * c;
        if (col < d) store_pair(orow + col, acc[mt][no][2 * r] * f, acc[mt][no][2 * r + 1] * f);
      }
      if (c == 0 && p.lse != nullptr)
        p.lse[row_stat_index(p, si, bi, hq, i)] = valid ? lse : -INFINITY;
    }
}

}  // namespace flash
}  // namespace pte
