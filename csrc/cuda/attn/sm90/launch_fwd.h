// Host side of the sm90 forward: TMA descriptors built from the resolved AttnProblem (passed to
// the kernel as one __grid_constant__ parameter), the tile shape of each compiled head dim, and
// the launch. Only the instantiation files sm90/inst/*.cu include this header, and those are
// compiled for sm_90a alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include <cute/tensor.hpp>

#include "core/kernels.h"  // cuda::sm_count
#include "core/problem.h"
#include "cuda/attn/launch_impl.h"  // zero_thd_tail
#include "cuda/attn/sm90/fwd_kernel.h"
#include "cuda/attn/sm90/launch.h"
#include "cuda/common.cuh"

namespace pte {
namespace flash {
namespace sm90 {

// Key-tile width per head dim: S (64 x BN) and O (64 x D) accumulators of a consumer thread take
// BN/2 + D/2 fp32 registers (+ BN/4 for P); two K/V stages of BN x D plus Q fit the 227 KB of an
// sm_90 block.
// (A 176-key tile for unmasked d = 128, FlashAttention-3's choice, measured 25-30 % slower here:
// docs/performance.md, sm90 forward v4.)
template <int D>
struct FwdConfig {
  // D = 192: two 96-key stages (2 x 2 x 96 x 192 x 2 B + Q 48 KB = 195 KB); D = 256: 64 keys
  // (O alone takes 128 registers).
  static constexpr int BN = D <= 128 ? 128 : (D <= 192 ? 96 : 64);
  static constexpr int kStages = 2;
};

template <class Traits>
typename Traits::GmemTensor gmem_view(const AttnProblem& p, const void* ptr, const Strides& st,
                                      int64_t rows, int64_t heads, int64_t cols) {
  using namespace cute;
  // thd: one "batch" of all packed tokens; sequences are reached through a token offset.
  const typename Traits::GmemShape shape{int32_t(rows), int32_t(cols), int32_t(heads),
                                         int32_t(p.thd ? 1 : p.b)};
  const typename Traits::GmemStride stride{st.seq, _1{}, st.head, p.thd ? int64_t(0) : st.batch};
  return make_tensor(make_gmem_ptr(static_cast<const typename Traits::Element*>(ptr)), shape,
                     stride);
}

// Persistent forward or one tile per CTA (docs/performance.md, sm90 forward v5). The persistent
// kernel hides each tile's set-up, first loads and epilogue under its neighbour's work, which is
// what short sequences and windows need; its static round robin balances tiles of equal cost, so
// a right bound without a left one (causal: cost grows with the query tile) keeps one tile per
// CTA, whose hardware scheduler hands the longest-first tiles out dynamically. FlashMask problems
// keep one tile per CTA too: a tile's cost varies with the mask (skipped key tiles), and the
// persistent kernel measured no faster there (docs/performance.md, FlashMask).
// PTE_SM90_PERSISTENT=1 or 0 forces the choice (benchmarks, bisecting).
inline bool persistent(const AttnProblem& p) {
  const char* v = std::getenv("PTE_SM90_PERSISTENT");
  if (v != nullptr && (v[0] == '0' || v[0] == '1')) return v[0] == '1';
  const bool growing = p.window_right >= 0 && p.window_left < 0;
  return !growing && p.startend == nullptr;
}

template <class Traits, typename T>
void launch(const AttnProblem& p) {
  using namespace cute;
  constexpr int D = Traits::D;
  cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const int64_t rows_q = p.thd ? p.t_q : p.s_q, rows_kv = p.thd ? p.t_kv : p.s_kv;
  // A tensor map needs a non-empty extent; with no rows nothing is ever loaded from it.
  auto q = gmem_view<Traits>(p, p.q, p.q_st, rows_q > 0 ? rows_q : 1, p.h, p.d);
  auto k = gmem_view<Traits>(p, p.k, p.k_st, rows_kv > 0 ? rows_kv : 1, p.h_kv, p.d);
  auto v = gmem_view<Traits>(p, p.v, p.v_st, rows_kv > 0 ? rows_kv : 1, p.h_kv, p.d_v);
  const bool reverse = p.bottom_right || p.window_right >= 0;
  const TileList tiles{int((p.s_q + Traits::BM - 1) / Traits::BM), p.h, p.b, reverse};
  FwdParams<Traits> params{
      make_tma_copy(SM90_TMA_LOAD{}, q, typename Traits::SmemLayoutQ{},
                    Shape<Int<Traits::BM>, Int<D>>{}, _1{}),
      make_tma_copy(SM90_TMA_LOAD{}, k, take<0, 2>(typename Traits::SmemLayoutKV{}),
                    Shape<Int<Traits::BN>, Int<D>>{}, _1{}),
      make_tma_copy(SM90_TMA_LOAD{}, v, take<0, 2>(typename Traits::SmemLayoutKV{}),
                    Shape<Int<Traits::BN>, Int<D>>{}, _1{}),
      q.shape(), k.shape(), v.shape(), p, tiles};

  constexpr int smem = Traits::kSmemBytes;
  const bool drop = p.dropout > 0.f;
  auto run = [&](auto kernel, int64_t ctas) {
    PTE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<dim3(unsigned(ctas)), Traits::kThreads, smem, stream>>>(params);
    PTE_CUDA_CHECK_LAUNCH();
  };
  // kP: persistent; kFM: FlashMask (its own instantiations, so problems without it run the
  // unchanged kernels).
  auto go = [&](auto persistent_c, auto flashmask_c) {
    constexpr bool kP = decltype(persistent_c)::value, kFM = decltype(flashmask_c)::value;
    const int64_t ctas =
        kP ? std::min<int64_t>(tiles.total(), cuda::sm_count(p.device_id)) : tiles.total();
    drop ? run(fwd_kernel<Traits, T, true, kPingpong, kP, kFM>, ctas)
         : run(fwd_kernel<Traits, T, false, kPingpong, kP, kFM>, ctas);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  const bool fm = p.startend != nullptr;
  if constexpr (Traits::kSeparateO) {
    if (persistent(p)) return fm ? go(Yes{}, Yes{}) : go(Yes{}, No{});
  }
  fm ? go(No{}, Yes{}) : go(No{}, No{});
}

template <int D, typename T>
void run_fwd(const AttnProblem& p) {
  using Cfg = FwdConfig<D>;
  cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  if (p.thd) zero_thd_tail(static_cast<T*>(p.out), p.out_st, p.t_q, p.h, int(p.d), p.cu_q, p.b, stream);
  if (p.b == 0 || p.s_q == 0) return;
  launch<FwdTraits<D, Cfg::BN, Cfg::kStages, T>, T>(p);
}

#define PTE_FLASH_SM90_INSTANTIATE_FWD(D, T) template void run_fwd<D, T>(const AttnProblem&);

}  // namespace sm90
}  // namespace flash
}  // namespace pte
