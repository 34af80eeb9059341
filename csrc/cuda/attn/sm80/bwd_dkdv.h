// Flash-attention backward (sm_80+): dK and dV (and, without `deterministic`, dQ by fp32
// atomics) in this file, with the 1-D kernel (any head dim, kSplit blocks over its columns past
// 128) and the 2-D tiled kernel (head dims up to 128); the dQ kernel in bwd_dq.h; Dsum and the
// dQ conversion in ../row_kernels.h. Two modes, chosen by `deterministic`:
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
#include <type_traits>

#include "core/problem.h"
#include "cuda/attn/dropout.h"
#include "cuda/attn/seqlen_mask.h"
#include "cuda/attn/softmax.h"
#include "cuda/attn/sm80/kernel_common.h"
#include "cuda/attn/sm80/mma.h"
#include "cuda/attn/sm80/tile.h"

namespace pte {
namespace flash {

// The steps of a dK/dV block: every query tile its keys can see ([m_first, m_first + n_q) in
// tiles of BM) for each query head of its GQA group in turn. Advanced by increments: a 64-bit
// division per step costs more instructions than the rest of the step's bookkeeping.
struct QueryStep {
  int64_t hq, m_idx;  // query head, query tile index (absolute)
  __device__ __forceinline__ void advance(int64_t m_first, int64_t n_q) {
    if (++m_idx == m_first + n_q) {
      m_idx = m_first;
      ++hq;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// 2. dK, dV. BN keys per block (16 per warp), BM queries per step. kSplit > 1 splits the output
//    head dim over blocks (each recomputes S^T and dP^T) so that dK and dV of a large head dim fit
//    in registers.
template <int D_, int BN_, int BM_, int NW_, int kSplit_>
struct BwdKVConfig {
  static constexpr int D = D_, BN = BN_, BM = BM_, NW = NW_, kSplit = kSplit_;
  static constexpr int kThreads = NW * 32;
  static constexpr int DO = D / kSplit;  // output columns per block
  static_assert(BN == 16 * NW, "one m16 key tile per warp");
  static_assert(BM % 16 == 0 && DO % 16 == 0, "tiles are multiples of 16");
  // Atomic-dQ mode: dS^T staged as [BN keys][BM queries] (16-byte row pad: the ldmatrix rows
  // and the 32-bit fragment stores are bank-conflict free), and the dQ tile [BM x DO] split over
  // the warps: kWarpsM row tiles of 16 queries x kWarpsN column slices of kNOQ n8-tiles.
  static constexpr int kDSStride = BM + 8;
  static constexpr int kWarpsM = BM / 16;
  static constexpr int kWarpsN = NW / kWarpsM;
  static constexpr int kNOQ = DO / 8 / kWarpsN;
  static_assert(kWarpsM * kWarpsN == NW && kNOQ * kWarpsN * 8 == DO, "dQ tile split over warps");
  template <typename T>
  static constexpr int smem_bytes(bool atomic_dq = false) {
    return (2 * BN + 4 * BM) * TileGeom<D>::kStride * int(sizeof(T)) +
           2 * 2 * BM * int(sizeof(float)) +  // K, V + 2 x (Q, dO) + 2 x (lse, Dsum)
           (atomic_dq ? BN * kDSStride * int(sizeof(T)) : 0);  // dS^T
  }
};

// dq_accum (kAtomicDq only): fp32 [rows of lse's layout][D], zeroed before the launch.
template <typename Cfg, typename T, bool kDropout, bool kAtomicDq>
__global__ void __launch_bounds__(Cfg::kThreads) bwd_dkdv_kernel(const AttnProblem p,
                                                                 const float* dsum,
                                                                 float* dq_accum) {
  constexpr int D = Cfg::D, BN = Cfg::BN, BM = Cfg::BM, kThreads = Cfg::kThreads;
  constexpr int DO = Cfg::DO, S = TileGeom<D>::kStride;
  constexpr int NT = BM / 8, NO = DO / 8;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);  // [BN][S]
  T* sV = sK + BN * S;                      // [BN][S]
  T* sQ = sV + BN * S;                      // [2][BM][S]
  T* sdO = sQ + 2 * BM * S;                 // [2][BM][S]
  float* sL = reinterpret_cast<float*>(sdO + 2 * BM * S);  // [2][BM] lse
  float* sD = sL + 2 * BM;                                 // [2][BM] Dsum
  T* sdS = reinterpret_cast<T*>(sD + 2 * BM);              // [BN][kDSStride] dS^T (kAtomicDq)

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int64_t bi = blockIdx.z, hk = blockIdx.y;
  const int64_t n0 = int64_t(blockIdx.x / Cfg::kSplit) * BN;
  const int col0 = int(blockIdx.x % Cfg::kSplit) * DO;
  const int d = int(p.d);
  const SeqInfo si(p, bi);
  if (p.thd && n0 >= si.L_kv) return;
  const Mask mask(p, si);
  const int64_t group = p.h / p.h_kv;
  const float scale_log2 = p.scale * kLog2e;

  float acc_dk[1][NO][4], acc_dv[1][NO][4];
#pragma unroll
  for (int no = 0; no < NO; ++no)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_dk[0][no][e] = acc_dv[0][no][e] = 0.f;

  const TileSpan qt = mask.query_tiles<BM>(n0, n0 + BN);
  const int64_t m_first = qt.first, n_q = qt.count;
  const int64_t total = n_q * group;

  if (total > 0) {
    const DkdvLoader<BN, BM, D, kThreads, T> load{p, si, dsum, bi, d, tid};
    load.kv_block(sK, sV, hk, n0);
    auto prefetch = [&](int stage, const QueryStep& st) {
      load.step(sQ + stage * BM * S, sdO + stage * BM * S, sL + stage * BM, sD + stage * BM, st.hq,
                st.m_idx * BM);
    };
    QueryStep cur{hk * group, m_first};
    prefetch(0, cur);
    cp_async_commit();

    Dropout drop(p, bi);
    const int64_t j_base = n0 + warp * 16 + g;  // key of accumulator row g (row g + 8: +8)
    for (int64_t it = 0; it < total; ++it) {
      const int stage = int(it & 1);
      const int64_t hq = cur.hq, m0 = cur.m_idx * BM;
      cur.advance(m_first, n_q);  // now the next step
      if (it + 1 < total) {
        prefetch(stage ^ 1, cur);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const T* sQs = sQ + stage * BM * S;
      const T* sdOs = sdO + stage * BM * S;
      const float* sLs = sL + stage * BM;
      const float* sDs = sD + stage * BM;

      float st[1][NT][4], dpt[1][NT][4];  // S^T and dP^T: rows = this warp's 16 keys
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[0][nt][e] = dpt[0][nt][e] = 0.f;
      gemm_rows_rows<1, NT, D>(st, sK, warp * 16, sQs, lane);
      gemm_rows_rows<1, NT, D>(dpt, sV, warp * 16, sdOs, lane);

      const bool full = mask.tile_full(m0, m0 + BM, n0, n0 + BN);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int il = nt * 8 + 2 * c + (e % 2);  // query inside the tile
          const int64_t i = m0 + il;
          const int64_t j = j_base + (e / 2) * 8;
          const bool vis = full || mask.visible(i, j);
          const float pv = vis ? recompute_p(st[0][nt][e], scale_log2, sLs[il] * kLog2e) : 0.f;
          float dp = dpt[0][nt][e];
          float pd = pv;
          if (kDropout) {
            const bool keep = drop.keep(hq, i, j);
            dp = keep ? dp * drop.scale : 0.f;
            pd = keep ? pv * drop.scale : 0.f;
          }
          st[0][nt][e] = pd;                      // P~^T for dV
          dpt[0][nt][e] = pv * (dp - sDs[il]);    // dS^T for dK
        }
      if (kAtomicDq) {
        // This warp's 16 keys x BM queries of dS^T, in the 16-bit form the MMAs consume (the
        // same rounding as the dK operand).
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int r = 0; r < 2; ++r)
            *reinterpret_cast<uint32_t*>(sdS + (warp * 16 + g + r * 8) * Cfg::kDSStride + nt * 8 +
                                         2 * c) =
                Mma<T>::pack(dpt[0][nt][2 * r], dpt[0][nt][2 * r + 1]);
      }
      gemm_regs_rows<1, NT, NO, D>(acc_dv, st, sdOs, col0, lane);
      gemm_regs_rows<1, NT, NO, D>(acc_dk, dpt, sQs, col0, lane);
      if (kAtomicDq) {
        __syncthreads();  // every warp's dS^T rows are in sdS
        // dQ[queries, col0 + slice] += dS K: A = dS (sdS read transposed), B = this block's K.
        constexpr int NOQ = Cfg::kNOQ;
        const int mrow = (warp % Cfg::kWarpsM) * 16;
        const int qcol = col0 + (warp / Cfg::kWarpsM) * NOQ * 8;
        float acc_dq[NOQ][4];
#pragma unroll
        for (int no = 0; no < NOQ; ++no)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc_dq[no][e] = 0.f;
        gemm_tsmem_rows<BN, NOQ, Cfg::kDSStride, S>(acc_dq, sdS, mrow, sK, qcol, lane);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int64_t i = m0 + mrow + g + r * 8;
          if (i >= si.L_q) continue;  // padded query rows: dS is 0 there, nothing to add
          float* row = dq_accum + row_stat_index(p, si, bi, hq, i) * D;
#pragma unroll
          for (int no = 0; no < NOQ; ++no) {
            const int col = qcol + no * 8 + 2 * c;  // < D: the accumulator's row width
            atomic_add_pair(row + col, acc_dq[no][2 * r], acc_dq[no][2 * r + 1]);
          }
        }
      }
      __syncthreads();  // the next prefetch overwrites this stage (and the next dS^T this one)
    }
  }

  // Epilogue: keys < L_kv get their gradients, padded keys (< s_kv, bshd/sbhd) exact zeros.
  T* dk = static_cast<T*>(p.grad_k);
  T* dv = static_cast<T*>(p.grad_v);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t j = n0 + warp * 16 + g + r * 8;
    const bool valid = j < si.L_kv;
    if (!valid && (p.thd || j >= p.s_kv)) continue;
    const float fk = valid ? p.scale : 0.f, fv = valid ? 1.f : 0.f;
    T* dkrow = dk + si.kv_offset(p.grad_k_st, bi, j, hk);
    T* dvrow = dv + si.kv_offset(p.grad_v_st, bi, j, hk);
#pragma unroll
    for (int no = 0; no < NO; ++no) {
      const int col = col0 + no * 8 + 2 * c;
      if (col < d) {
        store_pair(dkrow + col, acc_dk[0][no][2 * r] * fk, acc_dk[0][no][2 * r + 1] * fk);
        store_pair(dvrow + col, acc_dv[0][no][2 * r] * fv, acc_dv[0][no][2 * r + 1] * fv);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 2b. dK, dV (and, in atomic-dQ mode, dQ) with FlashAttention-2's 2-D warp tiling, the default
//     for head dims up to 128. A block owns BN keys and walks BM-query steps with NW warps, like
//     kernel 2, but each product of a step is split over the warps in two dimensions, so every
//     fragment a warp loads from shared memory feeds several MMAs:
//       S = Q K^T, dP = dO V^T     [BM x BN]: kSdPWarpsM x (NW / kSdPWarpsM) warp tiles;
//       dV += P^T dO, dK += dS^T Q [BN x D]:  kKVWarpsN x (NW / kKVWarpsN);
//       dQ = dS K (atomic mode)    [BM x D]:  kdQWarpsM x (NW / kdQWarpsM).
//     P (dropped, for dV) and dS pass through shared memory in 16-bit form, [BM][BN + 8] each.
//     Two barriers per step: after the Q/dO stage lands, and after P and dS are staged.
template <int D_, int BN_, int BM_, int NW_, int kSdPWarpsM_, int kKVWarpsN_, int kdQWarpsM_,
          int kStages_ = 2>
struct BwdTiledConfig {
  static constexpr int D = D_, BN = BN_, BM = BM_, NW = NW_, kThreads = NW * 32;
  static constexpr int kStages = kStages_;  // Q/dO/lse/Dsum buffers: steps in flight + 1
  static_assert(kStages >= 2, "at least double buffering");
  static constexpr int kSdPWarpsM = kSdPWarpsM_, kKVWarpsN = kKVWarpsN_, kdQWarpsM = kdQWarpsM_;
  // Warp tile of each product: rows x columns.
  static constexpr int kSdPRows = BM / kSdPWarpsM, kSdPCols = BN / (NW / kSdPWarpsM);
  static constexpr int kKVRows = BN / kKVWarpsN, kKVCols = D / (NW / kKVWarpsN);
  static constexpr int kdQRows = BM / kdQWarpsM, kdQCols = D / (NW / kdQWarpsM);
  static_assert(kSdPRows % 16 == 0 && kKVRows % 16 == 0 && kdQRows % 16 == 0, "m16 row tiles");
  static_assert(kSdPCols % 16 == 0 && kKVCols % 16 == 0 && kdQCols % 16 == 0, "n8 tile pairs");
  static_assert(NW % kSdPWarpsM == 0 && NW % kKVWarpsN == 0 && NW % kdQWarpsM == 0, "warp grid");
  static constexpr int kPStride = BN + 8;  // P, dS rows: 16-byte pad, conflict-free as in TileGeom
  template <typename T>
  static constexpr int smem_bytes() {
    return (2 * BN + 2 * kStages * BM) * TileGeom<D>::kStride * int(sizeof(T)) +  // K, V, Q, dO
           kStages * 2 * BM * int(sizeof(float)) +                                // lse, Dsum
           2 * BM * kPStride * int(sizeof(T));                                     // P, dS
  }
};

template <typename Cfg, typename T, bool kDropout, bool kAtomicDq>
__global__ void __launch_bounds__(Cfg::kThreads) bwd_tiled_kernel(const AttnProblem p,
                                                                  const float* dsum,
                                                                  float* dq_accum) {
  constexpr int D = Cfg::D, BN = Cfg::BN, BM = Cfg::BM, kThreads = Cfg::kThreads;
  constexpr int S = TileGeom<D>::kStride, SP = Cfg::kPStride;
  constexpr int MT = Cfg::kSdPRows / 16, NT = Cfg::kSdPCols / 8;  // S, dP fragments
  constexpr int KT = Cfg::kKVRows / 16, KO = Cfg::kKVCols / 8;    // dK, dV fragments
  constexpr int QT = Cfg::kdQRows / 16, QO = Cfg::kdQCols / 8;    // dQ fragments

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);  // [BN][S]
  T* sV = sK + BN * S;                      // [BN][S]
  constexpr int kStages = Cfg::kStages;
  T* sQ = sV + BN * S;                                           // [kStages][BM][S]
  T* sdO = sQ + kStages * BM * S;                                // [kStages][BM][S]
  float* sL = reinterpret_cast<float*>(sdO + kStages * BM * S);  // [kStages][BM] lse
  float* sD = sL + kStages * BM;                                 // [kStages][BM] Dsum
  T* sP = reinterpret_cast<T*>(sD + kStages * BM);               // [BM][SP] dropped P
  T* sdS = sP + BM * SP;                                         // [BM][SP] dS

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int64_t bi = blockIdx.z, hk = blockIdx.y;
  const int64_t n0 = int64_t(blockIdx.x) * BN;
  const int d = int(p.d);
  const SeqInfo si(p, bi);
  if (p.thd && n0 >= si.L_kv) return;
  const Mask mask(p, si);
  const int64_t group = p.h / p.h_kv;
  const float scale_log2 = p.scale * kLog2e;
  // This warp's tile origin in each product.
  const int sdp_row = (warp % Cfg::kSdPWarpsM) * Cfg::kSdPRows;
  const int sdp_col = (warp / Cfg::kSdPWarpsM) * Cfg::kSdPCols;
  const int kv_row = (warp % Cfg::kKVWarpsN) * Cfg::kKVRows;
  const int kv_col = (warp / Cfg::kKVWarpsN) * Cfg::kKVCols;
  const int dq_row = (warp % Cfg::kdQWarpsM) * Cfg::kdQRows;
  const int dq_col = (warp / Cfg::kdQWarpsM) * Cfg::kdQCols;

  float acc_dk[KT][KO][4], acc_dv[KT][KO][4];
#pragma unroll
  for (int kt = 0; kt < KT; ++kt)
#pragma unroll
    for (int ko = 0; ko < KO; ++ko)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_dk[kt][ko][e] = acc_dv[kt][ko][e] = 0.f;

  const TileSpan qt = mask.query_tiles<BM>(n0, n0 + BN);
  const int64_t m_first = qt.first, n_q = qt.count;
  const int64_t total = n_q * group;

  if (total > 0) {
    const DkdvLoader<BN, BM, D, kThreads, T> load{p, si, dsum, bi, d, tid};
    load.kv_block(sK, sV, hk, n0);
    auto prefetch = [&](int stage, const QueryStep& st) {
      load.step(sQ + stage * BM * S, sdO + stage * BM * S, sL + stage * BM, sD + stage * BM, st.hq,
                st.m_idx * BM);
    };
    // kStages - 1 steps in flight: one cp.async group per step (empty past the last one).
    QueryStep cur{hk * group, m_first}, fetch = cur;
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < total) {
        prefetch(s, fetch);
        fetch.advance(m_first, n_q);
      }
      cp_async_commit();
    }

    Dropout drop(p, bi);
    int stage = 0;
    for (int64_t it = 0; it < total; ++it) {
      const int64_t hq = cur.hq, m0 = cur.m_idx * BM;
      cur.advance(m_first, n_q);
      // This step's group has landed and every warp is done with the previous step (its stage,
      // P and dS), so that stage can take the step kStages - 1 ahead.
      cp_async_wait<kStages - 2>();
      __syncthreads();
      if (it + kStages - 1 < total) {
        prefetch(stage == 0 ? kStages - 1 : stage - 1, fetch);
        fetch.advance(m_first, n_q);
      }
      cp_async_commit();
      const T* sQs = sQ + stage * BM * S;
      const T* sdOs = sdO + stage * BM * S;
      const float* sLs = sL + stage * BM;
      const float* sDs = sD + stage * BM;

      float s[MT][NT][4], dp[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = dp[mt][nt][e] = 0.f;
      gemm_rows_rows<MT, NT, D>(s, sQs, sdp_row, sK + sdp_col * S, lane);
      gemm_rows_rows<MT, NT, D>(dp, sdOs, sdp_row, sV + sdp_col * S, lane);

      // P and dS of this warp's fragment into shared memory; kFull: every element of the tile is
      // visible (compiled without the per-element predicate).
      auto stage_p_ds = [&](auto full_tag) {
        constexpr bool kFull = decltype(full_tag)::value;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int il = sdp_row + mt * 16 + g + r * 8;  // query inside the tile
            const int64_t i = m0 + il;
            const float lse_log2 = sLs[il] * kLog2e, dsum_i = sDs[il];
            int lo = 0, hi = BN;  // visible keys of this row, tile-local
            if (!kFull) mask.row_span(i, n0, BN, &lo, &hi);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              const int jl = sdp_col + nt * 8 + 2 * c;  // key inside the tile (even)
              const int64_t j = n0 + jl;
              bool keep[2] = {true, true};
              if (kDropout) drop.keep_pair(hq, i, j, &keep[0], &keep[1]);
              float pd[2], ds[2];
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                // A select, not a product: rows without keys have lse = -inf.
                float pv = recompute_p(s[mt][nt][2 * r + e], scale_log2, lse_log2);
                if (!kFull && (jl + e < lo || jl + e >= hi)) pv = 0.f;
                float dpv = dp[mt][nt][2 * r + e];
                pd[e] = pv;
                if (kDropout) {
                  dpv = keep[e] ? dpv * drop.scale : 0.f;
                  pd[e] = keep[e] ? pv * drop.scale : 0.f;
                }
                ds[e] = pv * (dpv - dsum_i);
              }
              *reinterpret_cast<uint32_t*>(sP + il * SP + jl) = Mma<T>::pack(pd[0], pd[1]);
              *reinterpret_cast<uint32_t*>(sdS + il * SP + jl) = Mma<T>::pack(ds[0], ds[1]);
            }
          }
      };
      if (mask.tile_full(m0, m0 + BM, n0, n0 + BN))
        stage_p_ds(std::true_type{});
      else
        stage_p_ds(std::false_type{});
      __syncthreads();  // P and dS of every warp are staged

      gemm_smem_kn<KT, KO, BM, true, SP, S>(acc_dv, sP, kv_row, sdOs, kv_col, lane);
      gemm_smem_kn<KT, KO, BM, true, SP, S>(acc_dk, sdS, kv_row, sQs, kv_col, lane);
      if (kAtomicDq) {
        float acc_dq[QT][QO][4];
#pragma unroll
        for (int qt = 0; qt < QT; ++qt)
#pragma unroll
          for (int qo = 0; qo < QO; ++qo)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_dq[qt][qo][e] = 0.f;
        gemm_smem_kn<QT, QO, BN, false, SP, S>(acc_dq, sdS, dq_row, sK, dq_col, lane);
        // Rows of the step are consecutive in the accumulator; rows past L_q (dS = 0 there) add
        // nothing and may lie outside it, so they are skipped.
        const int rows_valid = int(si.L_q - m0 < BM ? si.L_q - m0 : BM);
        float* dq_step = dq_accum + row_stat_index(p, si, bi, hq, m0) * D + dq_col + 2 * c;
#pragma unroll
        for (int qt = 0; qt < QT; ++qt)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int il = dq_row + qt * 16 + g + r * 8;
            if (il < rows_valid) {
#pragma unroll
              for (int qo = 0; qo < QO; ++qo)
                atomic_add_pair(dq_step + il * D + qo * 8, acc_dq[qt][qo][2 * r],
                                acc_dq[qt][qo][2 * r + 1]);
            }
          }
      }
      stage = stage + 1 == kStages ? 0 : stage + 1;
    }
  }

  // Epilogue: keys < L_kv get their gradients, padded keys (< s_kv, bshd/sbhd) exact zeros.
  T* dk = static_cast<T*>(p.grad_k);
  T* dv = static_cast<T*>(p.grad_v);
#pragma unroll
  for (int kt = 0; kt < KT; ++kt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t j = n0 + kv_row + kt * 16 + g + r * 8;
      const bool valid = j < si.L_kv;
      if (!valid && (p.thd || j >= p.s_kv)) continue;
      const float fk = valid ? p.scale : 0.f, fv = valid ? 1.f : 0.f;
      T* dkrow = dk + si.kv_offset(p.grad_k_st, bi, j, hk);
      T* dvrow = dv + si.kv_offset(p.grad_v_st, bi, j, hk);
#pragma unroll
      for (int ko = 0; ko < KO; ++ko) {
        const int col = kv_col + ko * 8 + 2 * c;
        if (col < d) {
          store_pair(dkrow + col, acc_dk[kt][ko][2 * r] * fk, acc_dk[kt][ko][2 * r + 1] * fk);
          store_pair(dvrow + col, acc_dv[kt][ko][2 * r] * fv, acc_dv[kt][ko][2 * r + 1] * fv);
        }
      }
    }
}

}  // namespace flash
}  // namespace pte
