// The Hopper (sm_90a) flash-attention forward: TMA loads into a multi-stage shared-memory
// pipeline, wgmma for S = Q K^T (both operands in shared memory) and O += P V (P from registers),
// one producer warpgroup and two consumer warpgroups with setmaxnreg. The visibility rule, the
// tile range, the dropout draws and the lse convention are the arch-neutral ones of cuda/attn/, so
// this kernel computes what the sm80 family computes, element for element where the arithmetic is
// exact (masks, dropout keep decisions, exact zeros). FlashMask (startend_row_indices) is a
// separate instantiation (kFlashMask) that walks only the key tiles its intervals leave visible
// (sm90/flashmask_walk.h).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>

#include "core/problem.h"
#include "cuda/attn/dropout.h"
#include "cuda/attn/seqlen_mask.h"
#include "cuda/attn/sm90/epilogue_fwd.h"
#include "cuda/attn/sm90/flashmask_walk.h"
#include "cuda/attn/sm90/pipeline.h"
#include "cuda/attn/sm90/softmax.h"
#include "cuda/attn/sm90/tile_scheduler.h"
#include "cuda/attn/sm90/traits.h"

namespace pte {
namespace flash {
namespace sm90 {

template <class Traits>
struct FwdParams {
  typename Traits::TmaQ tma_q;
  typename Traits::TmaKV tma_k;
  typename Traits::TmaKV tma_v;
  typename Traits::GmemShape q_shape, k_shape, v_shape;
  AttnProblem p;
  TileList tiles;
};

// What one tile needs to know about its sequence: lengths and starts, the visibility rule, and the
// key tiles the rule lets it see ([n_first, n_first + n_tiles); with FlashMask it visits those of
// them that FwdKeyWalk does not skip). `skip`: thd rows past the sequence's end (they belong to
// the next sequence; another tile computes them).
struct TileWork {
  TileCoord tc;
  SeqInfo si;
  Mask mask;
  int64_t m0, hk, n_first;
  int n_tiles;
  bool skip;

  template <int BM, int BN>
  __device__ __forceinline__ static TileWork make(const AttnProblem& p, const TileCoord& tc) {
    const SeqInfo si(p, tc.batch);
    const Mask mask(p, si);
    const int64_t m0 = int64_t(tc.m_block) * BM;
    int64_t k_lo, k_hi;
    mask.key_range(m0, m0 + BM, &k_lo, &k_hi);
    const int64_t n_first = k_lo / BN;
    const int n_tiles = k_hi >= k_lo ? int(k_hi / BN - n_first + 1) : 0;
    return {tc, si, mask, m0, tc.head / (p.h / p.h_kv), n_first, n_tiles, p.thd && m0 >= si.L_q};
  }
};

// One warpgroup-wide GEMM C (+)= A B over every k-block, issued asynchronously as one wgmma
// group. The caller waits with warpgroup_wait<N>() and then fences C (gemm_done).
template <bool kZeroInit, class Mma, class TA, class TB, class TC>
__device__ __forceinline__ void gemm_issue(Mma& mma, TA const& a, TB const& b, TC& c) {
  using namespace cute;
  constexpr bool kRegA = !is_base_of<GMMA::DescriptorIterator, typename Mma::FrgTypeA>::value;
  if constexpr (kRegA) warpgroup_fence_operand(const_cast<TA&>(a));
  warpgroup_fence_operand(c);
  warpgroup_arrive();
  mma.accumulate_ = kZeroInit ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int kb = 0; kb < size<2>(a); ++kb) {
    cute::gemm(mma, a(_, _, kb), b(_, _, kb), c);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
}

template <class TC>
__device__ __forceinline__ void gemm_done(TC& c) {
  cute::warpgroup_fence_operand(c);
}

// Consumer schedules (template parameter of the kernel; the launcher uses kPingpong, measured
// fastest against a serial loop and kOverlap alone in docs/performance.md, sm90 forward v2-v3):
//   kOverlap  S_{t+1} is issued before P V_t, so the softmax of tile t+1 runs under the P V GEMM
//             of tile t (FlashAttention-3's intra-warpgroup overlap);
//   kPingpong kOverlap, and the two warpgroups take turns issuing their GEMMs (named barriers), so
//             one warpgroup's softmax runs under the other's GEMMs.
enum Schedule { kOverlap = 1, kPingpong = 2 };

// Turn-taking of the two consumer warpgroups for kPingpong. Warpgroup w waits on barrier
// kBarSched + w before issuing and then releases the other's. Both warpgroups of a CTA take the
// same number of turns (they visit the same key tiles), so with warpgroup 0 released once at the
// start and warpgroup 1 not releasing after its last turn, every barrier phase is completed.
constexpr int kBarSched = 4;
__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
template <int kSched>
struct Turns {
  int wg;
  __device__ __forceinline__ void start() const {
    if (kSched == kPingpong && wg == 1) named_arrive(kBarSched + 0, 256);
  }
  __device__ __forceinline__ void wait() const {
    if (kSched == kPingpong) named_sync(kBarSched + wg, 256);
  }
  __device__ __forceinline__ void pass(bool last) const {
    if (kSched == kPingpong && (wg == 0 || !last)) named_arrive(kBarSched + (wg ^ 1), 256);
  }
};

// Producer: one thread issues the tile's Q, then K and V of every visited key tile, each into the
// next stage once the consumers have released it. kv_t0 counts the key tiles of earlier tiles of
// this CTA (the stages run on across tiles); q_t the earlier tiles that loaded a Q. With FlashMask
// the whole warp walks the visited tiles (`walk`, from t_first) and its lane 0 issues; returns the
// number of key tiles loaded.
template <class Traits, bool kFlashMask>
__device__ __forceinline__ int produce(const FwdParams<Traits>& params,
                                       typename Traits::SharedStorage& ss, const TileWork& w,
                                       int kv_t0, int q_t,
                                       FwdKeyWalk<kFlashMask, Traits::BM, Traits::BN>& walk,
                                       int t_first) {
  using namespace cute;
  constexpr int BM = Traits::BM, BN = Traits::BN, D = Traits::D, kStages = Traits::kStages;
  const AttnProblem& p = params.p;
  const int b_idx = p.thd ? 0 : int(w.tc.batch);
  Tensor mQ = params.tma_q.get_tma_tensor(params.q_shape);
  Tensor mK = params.tma_k.get_tma_tensor(params.k_shape);
  Tensor mV = params.tma_v.get_tma_tensor(params.v_shape);
  Tensor gQ = local_tile(domain_offset(make_coord(int(w.si.q_start), _0{}), mQ(_, _, int(w.tc.head), b_idx)),
                         Shape<Int<BM>, Int<D>>{}, make_coord(w.tc.m_block, _0{}));
  Tensor gK = local_tile(domain_offset(make_coord(int(w.si.kv_start), _0{}), mK(_, _, int(w.hk), b_idx)),
                         Shape<Int<BN>, Int<D>>{}, make_coord(_, _0{}));
  Tensor gV = local_tile(domain_offset(make_coord(int(w.si.kv_start), _0{}), mV(_, _, int(w.hk), b_idx)),
                         Shape<Int<BN>, Int<D>>{}, make_coord(_, _0{}));
  Tensor sQ = make_tensor(make_smem_ptr(ss.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k.data()), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v.data()), typename Traits::SmemLayoutKV{});
  auto [tQg, tQs] = tma_partition(params.tma_q, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sQ),
                                  group_modes<0, 2>(gQ));
  auto [tKg, tKs] = tma_partition(params.tma_k, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sK),
                                  group_modes<0, 2>(gK));
  auto [tVg, tVs] = tma_partition(params.tma_v, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sV),
                                  group_modes<0, 2>(gV));

  const bool leader = !kFlashMask || threadIdx.x % 32 == 0;
  // The previous tile's consumers release Q once their last S GEMM has completed.
  if (leader) {
    if (q_t > 0) EmptyBarrier::wait(&ss.q_empty, uint32_t(q_t - 1) & 1u);
    FullBarrier::arrive_and_expect_tx(&ss.q_full, Traits::kQBytes);
    copy(params.tma_q.with(ss.q_full), tQg, tQs);
  }
  // v counts the visits (the stage counter); without FlashMask it is the tile index itself.
  int v = 0;
  for (int t = t_first; kFlashMask ? t < w.n_tiles : v < w.n_tiles; ++v) {
    if constexpr (!kFlashMask) t = v;
    if (leader) {
      const StageIter<kStages> it{kv_t0 + v};
      const int s = it.stage();
      const int n = int(w.n_first) + t;
      if (it.must_wait_empty()) EmptyBarrier::wait(&ss.k_empty[s], it.empty_phase());
      FullBarrier::arrive_and_expect_tx(&ss.k_full[s], Traits::kKVBytes);
      copy(params.tma_k.with(ss.k_full[s]), tKg(_, n), tKs(_, s));
      if (it.must_wait_empty()) EmptyBarrier::wait(&ss.v_empty[s], it.empty_phase());
      FullBarrier::arrive_and_expect_tx(&ss.v_full[s], Traits::kKVBytes);
      copy(params.tma_v.with(ss.v_full[s]), tVg(_, n), tVs(_, s));
    }
    if constexpr (kFlashMask) {
      int cls;
      t = walk.next(t + 1, &cls);
    }
  }
  return kFlashMask ? v : w.n_tiles;
}

// kPersistent: one CTA per SM walks the tile list (Traits::kSeparateO: O is staged in its own
// buffer, so the next tile's Q can land during the epilogue); otherwise one tile per CTA, and the
// epilogue stages O in Q's bytes. kFlashMask: p.startend is set; the key tiles the intervals skip
// for the whole query tile are neither loaded nor computed (flashmask_walk.h), and partial tiles
// test their elements.
template <class Traits, typename T, bool kDropout, int kSched, bool kPersistent, bool kFlashMask>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    fwd_kernel(const __grid_constant__ FwdParams<Traits> params) {
  using namespace cute;
  constexpr int BM = Traits::BM, BN = Traits::BN, D = Traits::D, kStages = Traits::kStages;
  static_assert(!kPersistent || Traits::kSeparateO, "the persistent kernel stages O separately");
  using Element = typename Traits::Element;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
  const AttnProblem& p = params.p;
  const int64_t tile_first = blockIdx.x;
  const int64_t tile_step = kPersistent ? int64_t(gridDim.x) : params.tiles.total();

  if (threadIdx.x == 0) {
    FullBarrier::init(&ss.q_full, 1);
    EmptyBarrier::init(&ss.q_empty, Traits::kConsumerThreads);
    for (int s = 0; s < kStages; ++s) {
      FullBarrier::init(&ss.k_full[s], 1);
      FullBarrier::init(&ss.v_full[s], 1);
      EmptyBarrier::init(&ss.k_empty[s], Traits::kConsumerThreads);
      EmptyBarrier::init(&ss.v_empty[s], Traits::kConsumerThreads);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  const int wg = int(threadIdx.x) / 128;
  if (wg == 0) {
    cutlass::arch::warpgroup_reg_dealloc<RoleRegs<Traits, kFlashMask>::kProducer>();
    // One thread issues every load; with FlashMask its warp walks the visited tiles with it.
    if (kFlashMask ? threadIdx.x < 32 : threadIdx.x == 0) {
      int kv_t = 0, q_t = 0;
      for (int64_t tile = tile_first; tile < params.tiles.total(); tile += tile_step) {
        const TileWork w = TileWork::make<BM, BN>(p, params.tiles.coord(tile));
        if (w.skip || w.n_tiles == 0) continue;
        FwdKeyWalk<kFlashMask, BM, BN> walk(p, w.tc.batch, w.tc.head, w.m0, w.n_first, w.n_tiles);
        int cls;
        const int t_first = walk.next(0, &cls);
        if (kFlashMask && t_first >= w.n_tiles) continue;  // nothing visible: no Q either
        kv_t += produce<Traits, kFlashMask>(params, ss, w, kv_t, q_t, walk, t_first);
        ++q_t;
        if constexpr (!kPersistent) break;
      }
    }
    return;
  }
  cutlass::arch::warpgroup_reg_alloc<RoleRegs<Traits, kFlashMask>::kConsumer>();

  const int tidx = int(threadIdx.x) - 128;  // 0..255 over both consumer warpgroups
  typename Traits::MmaS mma_s;
  typename Traits::MmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(tidx);
  auto thr_o = mma_o.get_thread_slice(tidx);
  Tensor sQ = make_tensor(make_smem_ptr(ss.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k.data()), typename Traits::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(ss.v.data()), typename Traits::SmemLayoutVt{});
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);   // descriptors
  Tensor tSrK = thr_s.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrV = thr_o.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stage)
  Tensor tSrS = partition_fragment_C(mma_s, Shape<Int<BM>, Int<BN>>{});
  Tensor tOrO = partition_fragment_C(mma_o, Shape<Int<BM>, Int<D>>{});
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<Int<BM>, Int<BN>>{}));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<Int<BM>, Int<D>>{}));
  // P in the A-operand register layout of the P V GEMM; for 16-bit types its flat order is the S
  // accumulator's, so the conversion is element-wise.
  Tensor tOrP = make_tensor<Element>(partition_shape_A(mma_o, Shape<Int<BM>, Int<BN>>{}));
  static_assert(decltype(size(tOrP))::value == decltype(size(tSrS))::value, "P and S sizes differ");
  const float scale_log2 = float(p.scale) * kLog2e;
  const int row0 = get<0>(tScS(0)), row1 = get<0>(tScS(2));  // tile rows of this thread
  T* o_stage = reinterpret_cast<T*>(kPersistent ? ss.o.data() : ss.q.data());
  const Turns<kSched> turns{wg - 1};

  int kv_t = 0, q_t = 0;
  // FlashMask partial tiles: this thread's key column (col_lane < BN) of the tile, fetched while
  // the tile's S GEMM runs and staged for the warpgroup in buffer fm_buf (alternating, so a
  // warpgroup writes a buffer only after all its threads passed the barrier that follows their
  // last read of it).
  const int col_lane = tidx % 128;
  int4 col_iv = make_int4(0, 0, 0, 0);
  int fm_buf = 0;
  for (int64_t tile = tile_first; tile < params.tiles.total(); tile += tile_step) {
    const TileWork w = TileWork::make<BM, BN>(p, params.tiles.coord(tile));
    if (w.skip) continue;
    const int64_t m0 = w.m0;
    const Dropout drop(p, w.tc.batch);
    RowSoftmax sm;
    clear(tOrO);

    FwdKeyWalk<kFlashMask, BM, BN> walk(p, w.tc.batch, w.tc.head, m0, w.n_first, w.n_tiles);

    // Mask, softmax and dropout of the S tile of key offset n0 (FlashMask class cls), in place:
    // afterwards tSrS holds the probabilities that P V will use, alpha the rescale factors of the
    // output rows.
    auto fetch_cols = [&](int tt, int cls) {
      if (kFlashMask && cls == 2 && col_lane < BN)
        col_iv = walk.fetch_column((w.n_first + tt) * BN + col_lane);
    };
    auto stage_cols = [&](int cls) -> const int4* {
      if (!kFlashMask || cls != 2) return nullptr;
      int4* buf = ss.fm_cols[fm_buf][wg - 1];
      if (col_lane < BN) buf[col_lane] = col_iv;
      named_sync(kBarWarpgroup0 + wg - 1, 128);
      fm_buf ^= 1;
      return buf;
    };
    auto scores_to_probs = [&](int64_t n0, int cls, const int4* cols, float (&alpha)[2]) {
      if (!w.mask.tile_full(m0, m0 + BM, n0, n0 + BN)) {
        int lo[2], hi[2];
        w.mask.row_span(m0 + row0, n0, BN, &lo[0], &hi[0]);
        w.mask.row_span(m0 + row1, n0, BN, &lo[1], &hi[1]);
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); ++i) {
          const int r = frag_row(i), col = get<1>(tScS(i));
          if (col < lo[r] || col >= hi[r]) tSrS(i) = -INFINITY;
        }
      }
      if (kFlashMask && cls == 2) walk.mask_staged(tSrS, tScS, cols, row0, row1);
      sm.probs(tSrS, scale_log2, alpha);
      if constexpr (kDropout) {
        // The row sums above use the undropped probabilities; only P V sees the keep mask.
        CUTE_UNROLL
        for (int i = 0; i < size(tSrS); i += 2) {
          bool k0, k1;
          drop.keep_pair(w.tc.head, m0 + (frag_row(i) ? row1 : row0), n0 + get<1>(tScS(i)), &k0,
                         &k1);
          if (!k0) tSrS(i) = 0.f;
          if (!k1) tSrS(i + 1) = 0.f;
        }
      }
    };
    auto to_operand = [&]() {
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) tOrP(i) = Element(tSrS(i));
    };
    // The tile's last S GEMM has completed: Q may be replaced (persistent kernel).
    auto release_q = [&](bool last) {
      if (kPersistent && last) EmptyBarrier::arrive(&ss.q_empty);
    };

    // The visited key tiles: t, then t_next, ... (every tile of the span without FlashMask; the
    // producer walks the same ones). v counts the visits: the pipeline's stages.
    const int n_tiles = w.n_tiles;
    int cls, cls_next;
    int t = walk.next(0, &cls);
    if (t < n_tiles) {
      FullBarrier::wait(&ss.q_full, uint32_t(q_t) & 1u);
      turns.start();
      float alpha[2];
      int t_next = walk.next(t + 1, &cls_next);
      // Turn 0: S_0 alone.
      const StageIter<kStages> first{kv_t};
      turns.wait();
      FullBarrier::wait(&ss.k_full[first.stage()], first.phase());
      gemm_issue<true>(mma_s, tSrQ, tSrK(_, _, _, first.stage()), tSrS);
      turns.pass(false);
      fetch_cols(t, cls);
      warpgroup_wait<0>();
      gemm_done(tSrS);
      EmptyBarrier::arrive(&ss.k_empty[first.stage()]);
      release_q(kFlashMask ? t_next >= n_tiles : n_tiles == 1);
      scores_to_probs((w.n_first + t) * BN, cls, stage_cols(cls), alpha);  // O = 0: no rescale
      to_operand();
      // Turn v: S_v, then P V_{v-1}; the softmax of S_v runs while P V_{v-1} is in flight, and
      // only then may the output be rescaled and P overwritten.
      // Without FlashMask the visit counter v is the tile index (the walk is the plain range).
      int v = 1;
      for (; kFlashMask ? t_next < n_tiles : v < n_tiles; ++v) {
        if constexpr (kFlashMask) {
          t = t_next;
          cls = cls_next;
        } else {
          t = v;
        }
        const StageIter<kStages> it{kv_t + v}, prev{kv_t + v - 1};
        turns.wait();
        FullBarrier::wait(&ss.k_full[it.stage()], it.phase());
        gemm_issue<true>(mma_s, tSrQ, tSrK(_, _, _, it.stage()), tSrS);
        FullBarrier::wait(&ss.v_full[prev.stage()], prev.phase());
        gemm_issue<false>(mma_o, tOrP, tOrV(_, _, _, prev.stage()), tOrO);
        turns.pass(false);
        fetch_cols(t, cls);
        if constexpr (kFlashMask) t_next = walk.next(t + 1, &cls_next);  // under the GEMMs
        warpgroup_wait<1>();
        gemm_done(tSrS);
        EmptyBarrier::arrive(&ss.k_empty[it.stage()]);
        release_q(kFlashMask ? t_next >= n_tiles : v == n_tiles - 1);
        scores_to_probs((w.n_first + t) * BN, cls, stage_cols(cls), alpha);
        warpgroup_wait<0>();
        gemm_done(tOrO);
        EmptyBarrier::arrive(&ss.v_empty[prev.stage()]);
        RowSoftmax::rescale(tOrO, alpha);
        to_operand();
      }
      // Last turn: P V of the last tile.
      const StageIter<kStages> last{kv_t + (kFlashMask ? v : n_tiles) - 1};
      turns.wait();
      FullBarrier::wait(&ss.v_full[last.stage()], last.phase());
      gemm_issue<false>(mma_o, tOrP, tOrV(_, _, _, last.stage()), tOrO);
      turns.pass(true);
      warpgroup_wait<0>();
      gemm_done(tOrO);
      EmptyBarrier::arrive(&ss.v_empty[last.stage()]);
      kv_t += kFlashMask ? v : n_tiles;
      ++q_t;
    }

    const float drop_scale = kDropout ? 1.0f / (1.0f - float(p.dropout)) : 1.0f;
    store_out<D, !kPersistent>(p, w.si, w.tc.batch, w.tc.head, m0, tOrO, tOcO, sm, drop_scale,
                               o_stage, wg - 1, tidx % 128);
    if constexpr (!kPersistent) break;
  }
}

}  // namespace sm90
}  // namespace flash
}  // namespace pte
