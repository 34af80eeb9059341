// FlashMask (SPEC §9) in the sm90 kernels: the mask policy of cuda/attn/flashmask.h fitted to the
// roles of a Hopper CTA. Every role that walks the tiles of a CTA (the producer warp issuing TMA,
// the consumer warps, the backward's stats warp) walks them with its own SkipCursor over the same
// classification, so all of them visit the same sequence without talking to each other; the
// pipeline stages and their mbarrier phases count visits, not tile indices. The walks are warp-
// collective (a role that issues from one thread runs the walk with its whole warp).
//
// kOn = false (no startend_row_indices) is a separate instantiation of each kernel and compiles to
// the contiguous walk and the unmasked tile of before, so problems without FlashMask pay nothing.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include <cute/tensor.hpp>

#include "core/problem.h"
#include "cuda/attn/flashmask.h"
#include "cuda/attn/sm90/softmax.h"  // frag_row

namespace pte {
namespace flash {
namespace sm90 {

// Forward: the key tiles of the query tile [m0, m0 + BM) (the whole CTA: both consumer warpgroups
// take the same turns), tile t of [0, n_tiles) covering keys [(n_first + t) * BN, + BN) (BN a
// multiple of the summary's 32 columns).
// The intervals of key column j for a kernel's key j, which may lie past s_kv (in the last key
// tile): such keys are invisible by the window rule anyway, so they read the last column instead
// of running off the end.
__device__ __forceinline__ flashmask::Intervals key_intervals(const FlashMaskView& fm, int64_t j) {
  return fm.column_intervals(j < fm.s_kv ? j : fm.s_kv - 1);
}

template <bool kOn, int BM, int BN>
struct FwdKeyWalk;

template <int BM, int BN>
struct FwdKeyWalk<false, BM, BN> {
  __device__ __forceinline__ FwdKeyWalk(const AttnProblem&, int64_t, int64_t, int64_t, int64_t,
                                        int) {}
  // The first visited tile at or after t (every tile is visited; the caller bounds t).
  __device__ __forceinline__ int next(int t, int* cls) {
    *cls = 1;
    return t;
  }
  __device__ __forceinline__ int4 fetch_column(int64_t) const { return make_int4(0, 0, 0, 0); }
  template <class TS, class TC>
  __device__ __forceinline__ void mask_staged(TS&, TC const&, const int4*, int, int) const {}
};

template <int BM, int BN>
struct FwdKeyWalk<true, BM, BN> {
  static_assert(BN % flashmask::kChunk == 0, "key tiles are whole summary chunks");
  FlashMaskView fm;
  SkipCursor cur;
  int m0, n_first, n_tiles;  // rows and keys < 2^31 (int32 bounds): 32-bit classification

  __device__ __forceinline__ FwdKeyWalk(const AttnProblem& p, int64_t bi, int64_t hq,
                                        int64_t m0_, int64_t n_first_, int n_tiles_)
      : fm(p, bi, hq), m0(int(m0_)), n_first(int(n_first_)), n_tiles(n_tiles_) {}

  // The first tile t' >= t that the intervals do not skip for the tile's rows, or n_tiles;
  // *cls = its class (1: no element masked by the intervals, 2: partial).
  __device__ __forceinline__ int next(int t, int* cls) {
    const FwdKeyWalk& w = *this;
    return cur.next(
        t, n_tiles,
        [&](int x) {
          const int n0 = (w.n_first + x) * BN;
          return w.fm.tile_class<int>(w.m0, w.m0 + BM, n0, n0 + BN);
        },
        cls);
  }

  // A partial (class 2) tile of keys from n0: the S accumulator elements whose (row, key) the
  // intervals mask become -inf (row0 / row1: this thread's tile rows, fragment rows 0 / 1). The
  // key columns' intervals come staged in shared memory (cols[k] = {a1, e1, a2, e2} of key
  // n0 + k): each consumer thread fetches one column (fetch_column, issued while the tile's S GEMM
  // runs, so its latency hides under the GEMM), the warpgroup writes them out and syncs, and every
  // element tests its column's entry. Fetching each thread's 32 columns from global memory here
  // instead waited out a load latency per couple of columns, which cost a partial tile about as
  // much as a few unmasked ones (docs/performance.md).
  __device__ __forceinline__ int4 fetch_column(int64_t j) const {
    const flashmask::Intervals v = key_intervals(fm, j);
    return make_int4(v.a1, v.e1, v.a2, v.e2);
  }
  template <class TS, class TC>
  __device__ __forceinline__ void mask_staged(TS& s, TC const& tScS, const int4* cols, int row0,
                                              int row1) const {
    const int32_t i0 = m0 + row0, i1 = m0 + row1;
    CUTE_UNROLL
    for (int i = 0; i < decltype(cute::size(s))::value; ++i) {
      const int4 v = cols[cute::get<1>(tScS(i))];
      const int32_t r = frag_row(i) ? i1 : i0;
      // FlashMaskView::in_intervals written out on the int4: through a converted Intervals the
      // kernel spilled 64 -> 260 bytes (ptxas, d = 128).
      if ((r >= v.x && r < v.y) || (r >= v.z && r < v.w)) s(i) = -INFINITY;
    }
  }
};

// Backward: the steps of the key block [n0, n0 + BN) of a CTA. Steps: BwdStepOrder of bwd_kernel.h,
// step s of [0, total) being query tile m_first + s % n_q (ascending: FlashMask never takes the
// deterministic order) of query head hq0 + s / n_q. `step` is
// the current step, visits() how many steps were visited before it (the pipeline's stage counter)
// and `cls` its class; done() once the steps run out. Loop: for (W w(...); !w.done(); w.advance()).
template <bool kOn, int BM, int BN, class Steps>
struct BwdStepWalk;

template <int BM, int BN, class Steps>
struct BwdStepWalk<false, BM, BN, Steps> {
  static constexpr int cls = 1;
  int64_t step, total;
  __device__ __forceinline__ BwdStepWalk(const AttnProblem&, int64_t, int64_t, const Steps&,
                                         int64_t total_)
      : step(0), total(total_) {}
  __device__ __forceinline__ bool done() const { return step >= total; }
  __device__ __forceinline__ int visits() const { return int(step); }  // every step is visited
  __device__ __forceinline__ void advance() { ++step; }
};

template <int BM, int BN, class Steps>
struct BwdStepWalk<true, BM, BN, Steps> {
  // Copies of the kernel's values (no registers of their own but the cursor's and the counters).
  const AttnProblem& p;
  int64_t bi, n0;
  Steps steps;
  SkipCursor cur;
  int64_t step, total;
  int visit, cls;

  __device__ __forceinline__ BwdStepWalk(const AttnProblem& p_, int64_t bi_, int64_t n0_,
                                         const Steps& steps_, int64_t total_)
      : p(p_), bi(bi_), n0(n0_), steps(steps_), step(0), total(total_), visit(0), cls(1) {
    settle();
  }
  __device__ __forceinline__ bool done() const { return step >= total; }
  __device__ __forceinline__ int visits() const { return visit; }
  __device__ __forceinline__ void advance() {
    ++step;
    ++visit;
    settle();
  }

 private:
  // Moves step to the first step at or after it that the intervals do not skip. 32-bit
  // arithmetic: a CTA has (s_q / BM) x (query heads per kv head) < 2^31 steps, and the 64-bit
  // division would cost the 24-register producer warps spills.
  __device__ __forceinline__ void settle() {
    const BwdStepWalk& w = *this;
    step = cur.next(
        int(step), int(total),
        [&](int x) {
          const int n_q = int(w.steps.n_q);
          const int m0 = (int(w.steps.m_first) + x % n_q) * BM, k0 = int(w.n0);
          return FlashMaskView(w.p, w.bi, w.steps.hq0 + x / n_q)
              .tile_class<int>(m0, m0 + BM, k0, k0 + BN);
        },
        &cls);
  }
};

// Backward, a partial (class 2) step. bwd_step_columns: the intervals of the thread's two keys
// j0 / j1 (fragment rows 0 / 1, frag_row), fetched right after the step's GEMMs are issued so the
// load latency hides under them (key_intervals). bwd_masked_bits: bit i set = element i of the
// thread's S^T fragment (coordinates tSc, m0 the step's first query) is masked by the intervals.
// One word for the 32 or 64 elements, which the backward folds into its visibility select, so
// masked P^T and dS^T are exactly 0 whatever the arithmetic would give (inf or NaN where a row's
// lse is -inf).
__device__ __forceinline__ void bwd_step_columns(const FlashMaskView& fm, int64_t j0, int64_t j1,
                                                 flashmask::Intervals* v0,
                                                 flashmask::Intervals* v1) {
  *v0 = key_intervals(fm, j0);
  *v1 = key_intervals(fm, j1);
}

template <int kN>
using FragmentBits = std::conditional_t<(kN <= 32), uint32_t, uint64_t>;  // one bit per element

template <class TC>
__device__ __forceinline__ auto bwd_masked_bits(const flashmask::Intervals& v0,
                                                const flashmask::Intervals& v1, int64_t m0,
                                                TC const& tSc) {
  constexpr int kN = decltype(cute::size(tSc))::value;
  static_assert(kN <= 64, "one bit per element");
  using Bits = FragmentBits<kN>;
  Bits bits = 0;
  CUTE_UNROLL
  for (int i = 0; i < kN; ++i) {
    const int32_t q = int32_t(m0) + cute::get<1>(tSc(i));
    bits |= Bits(FlashMaskView::in_intervals(frag_row(i) ? v1 : v0, q)) << i;
  }
  return bits;
}

}  // namespace sm90
}  // namespace flash
}  // namespace pte
