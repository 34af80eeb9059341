// The Hopper (sm_90a) flash-attention backward, dK/dV with accumulated dQ (BwdTraits in
// traits.h): a producer warpgroup (thread 0 issues the TMA loads of K, V once and Q, dO per step;
// warp 1 stages the step's lse and Dsum; warp 2 is the dQ writer) and two consumer warpgroups of
// 64 keys each. Per step (query head of the group, query tile of 64):
//   S^T = K Q^T, dP^T = V dO^T            (wgmma, both operands in shared memory, issued together)
//   P^T = exp(scale S^T - lse)             (registers, while dP^T is still in flight)
//   dV += P^T dO                           (wgmma, A from registers; in flight during dS at
//                                          BM = 64, issued after dS at BM = 128: kEarlyDv)
//   dS^T = P^T o (dP^T - Dsum)             (registers; dropout as in sm80)
//   dQ = dS K, dK += dS^T Q                (dS staged in shared memory, two buffers)
//   dQ tile -> shared memory (while dK is in flight) -> TMA reduce-add into the fp32 accumulator
//   (the writer warp), so the consumers never wait on global atomics.
// The preprocess (Dsum) and the dQ conversion are the arch-neutral kernels of the sm80 family.
// FlashMask (kFlashMask, flashmask_walk.h): every role walks only the steps whose query tile some
// key of the CTA sees; partial steps zero the masked elements of P^T and dS^T.
// Deterministic mode (kDeterministic): the adds into each dQ tile go in ascending key block
// order, so the float32 sums, and dQ, are bitwise repeatable (DqTurns below).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "core/problem.h"
#include "cuda/attn/dropout.h"
#include "cuda/attn/seqlen_mask.h"
#include "cuda/attn/sm90/epilogue_fwd.h"
#include "cuda/attn/sm90/flashmask_walk.h"
#include "cuda/attn/sm90/fwd_kernel.h"
#include "cuda/attn/sm90/pipeline.h"
#include "cuda/attn/sm90/traits.h"

namespace pte {
namespace flash {
namespace sm90 {

template <class Traits>
struct BwdParams {
  typename Traits::TmaQ tma_q;
  typename Traits::TmaQ tma_do;
  typename Traits::TmaKV tma_k;
  typename Traits::TmaKV tma_v;
  typename Traits::TmaDQ tma_dq;  // reduce-add into the fp32 dQ accumulator [rows of lse's layout][D]
  typename Traits::GmemShape q_shape, do_shape, k_shape, v_shape;
  int32_t dq_rows;
  AttnProblem p;
  const float* dsum;  // [rows of lse's layout]
  int32_t* dq_turns;  // kDeterministic: [b][h][dq_turn_tiles], zeroed with the accumulator
  int64_t dq_turn_tiles;
};

// The step sequence of a CTA: query heads of the kv head's group, each over the query tiles that
// can see the CTA's keys, ascending (head-major; the FlashMask walk relies on that order).
// kDescending (the deterministic mode) walks the query tiles from the last one down, and the
// group's heads inside each tile (tile-major). Both ends of a key tile's query range grow with
// the key tile, so a lower key tile reaches any (query tile, head) it shares with a higher one at
// the same step or an earlier one, and the turns of DqTurns cost about one add's latency per key
// tile. Walking up under a causal mask, key tile n would reach its first query tile only when
// tile n - 1 is two steps in, and so on down the chain. Walking head-major, key tile n would be
// done with a head two steps before tile n - 1 (under causal it has two query tiles fewer) and
// then wait for it at the next head's first tile: every head switch would re-align the chain, so
// each CTA of it would be held about as long as the longest (measured with GQA 32/8 causal,
// head-major: 1.39 x the default backward's time).
template <bool kDescending>
struct BwdStepOrder {
  int64_t hq0, m_first, n_q, group;
  // Tile-major: 32-bit division (a CTA has (s_q / BM) x group < 2^31 steps), which keeps the
  // 24-register producer warps that walk the steps from spilling for the 64-bit routine.
  __device__ __forceinline__ int64_t head(int64_t step) const {
    return hq0 + (kDescending ? int(step) % int(group) : step / n_q);
  }
  __device__ __forceinline__ int64_t m_block(int64_t step) const {
    return kDescending ? m_first + n_q - 1 - int(step) / int(group) : m_first + step % n_q;
  }
};

// Queries of the tile [m0, m0 + n) that key j is visible from, as tile-local [*lo, *hi): the
// visibility rule of Mask read along a key (j sees query i iff j - delta - right <= i <=
// j - delta + left, and i < L_q, j < L_kv).
__device__ __forceinline__ void key_span(const Mask& mask, int64_t j, int64_t m0, int n, int* lo,
                                         int* hi) {
  int64_t l = m0, h = j < mask.L_kv ? mask.L_q : 0;
  if (mask.right >= 0 && j - mask.delta - mask.right > l) l = j - mask.delta - mask.right;
  if (mask.left >= 0 && j - mask.delta + mask.left + 1 < h) h = j - mask.delta + mask.left + 1;
  l -= m0;
  h -= m0;
  *lo = int(l > n ? n : l);
  *hi = int(h < 0 ? 0 : (h > n ? n : h));
}

// Deterministic dQ: the order of the adds into one dQ tile (sequence bi, query head hq, query
// tile m) is fixed to ascending key block n_block by a turn counter per tile: the writer of
// n_block waits until the counter equals the number of lower key blocks that add into the tile,
// adds, waits until its add has landed in memory, and increments the counter.
//
// The waited-for count is exact, so no CTA waits for a turn nobody takes. A key block visits the
// query tiles of Mask::query_tiles (the kernel's own step range); both ends of that range grow
// with the block (bounds n0 - delta - right and min(n0 + BN, L_kv) - 1 - delta + left, clamped to
// [0, L_q - 1]), so the blocks visiting tile m are one run n_first..n_last, and a block below a
// visiting one has an empty range only when its range lies below 0, i.e. below m too. Blocks with
// n0 >= L_kv (thd CTAs that return at once, padded tails) visit nothing and lie above every
// visitor. The count is n_block - n_first, found by bisection over [0, n_block]. Query heads of
// a GQA group share the CTA and its range (no FlashMask: that mode runs the sm80 family).
//
// Each CTA walks its query tiles downwards (BwdStepOrder<true>), so a lower key block gets to a
// shared tile no later than a higher one.
//
// Progress: a CTA only ever waits for lower key blocks of its (kv head, sequence), which have
// lower linear block indices. This relies on the hardware dispatching a grid's CTAs in ascending
// linear index (what CUDA does in practice, though not a documented guarantee): a waiting CTA is
// then resident only after every lower one has been dispatched, and the lowest unfinished CTA of
// each chain never waits, so the grid may exceed the resident capacity.
template <int BM, int BN>
__device__ __forceinline__ int32_t lower_visitors(const Mask& mask, int n_block, int64_t m) {
  int lo = 0, hi = n_block;  // n_block itself visits m
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    const TileSpan t = mask.query_tiles<BM>(int64_t(mid) * BN, int64_t(mid) * BN + BN);
    if (t.count > 0 && t.first <= m && m < t.first + t.count)
      hi = mid;
    else
      lo = mid + 1;
  }
  return int32_t(n_block - lo);
}

struct DqTurns {
  int32_t* seq;  // counters of sequence bi: [h][tiles]
  int64_t tiles;
  const Mask& mask;
  int n_block;
};

// One lane spins (acquire at GPU scope) until the tile's counter reaches `turn`; the proxy fence
// orders the TMA add that follows after the acquire.
__device__ __forceinline__ void wait_turn(const int32_t* counter, int32_t turn) {
  int32_t v;
  do {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
  } while (v != turn);
  asm volatile("fence.proxy.async.global;" ::: "memory");
}

// After `cp.async.bulk.wait_group 0` (the add has been performed, not only read from shared
// memory): the proxy fence orders the TMA's writes before the release of the next turn.
__device__ __forceinline__ void pass_turn(int32_t* counter) {
  asm volatile("fence.proxy.async.global;" ::: "memory");
  asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(counter) : "memory");
}

// Thread 0 issues; with FlashMask its warp walks the steps with it (Walk: BwdStepWalk).
template <class Traits, class Steps, class Walk>
__device__ __forceinline__ void produce_bwd(const BwdParams<Traits>& params,
                                            typename Traits::SharedStorage& ss, const SeqInfo& si,
                                            int64_t bi, int64_t hk, int n_block,
                                            const Steps& steps, Walk wk, bool leader) {
  using namespace cute;
  constexpr int BM = Traits::BM, BN = Traits::BN, D = Traits::D, kStages = Traits::kStages;
  const AttnProblem& p = params.p;
  const int b_idx = p.thd ? 0 : int(bi);
  Tensor mK = params.tma_k.get_tma_tensor(params.k_shape);
  Tensor mV = params.tma_v.get_tma_tensor(params.v_shape);
  Tensor mQ = params.tma_q.get_tma_tensor(params.q_shape);
  Tensor mdO = params.tma_do.get_tma_tensor(params.do_shape);
  auto kv_tile = [&](auto& m) {
    return local_tile(domain_offset(make_coord(int(si.kv_start), _0{}), m(_, _, int(hk), b_idx)),
                      Shape<Int<BN>, Int<D>>{}, make_coord(n_block, _0{}));
  };
  Tensor gK = kv_tile(mK);
  Tensor gV = kv_tile(mV);
  Tensor sK = make_tensor(make_smem_ptr(ss.k.data()), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v.data()), typename Traits::SmemLayoutKV{});
  Tensor sQ = make_tensor(make_smem_ptr(ss.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout.data()), typename Traits::SmemLayoutQ{});
  auto [tKg, tKs] = tma_partition(params.tma_k, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sK),
                                  group_modes<0, 2>(gK));
  auto [tVg, tVs] = tma_partition(params.tma_v, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sV),
                                  group_modes<0, 2>(gV));
  if (leader) {
    FullBarrier::arrive_and_expect_tx(&ss.kv_full, Traits::kKVBytes);
    copy(params.tma_k.with(ss.kv_full), tKg, tKs);
    copy(params.tma_v.with(ss.kv_full), tVg, tVs);
  }
  for (; !wk.done(); wk.advance()) {
    if (!leader) continue;
    const int64_t step = wk.step;
    const StageIter<kStages> it{wk.visits()};
    const int s = it.stage();
    const int hq = int(steps.head(step)), m = int(steps.m_block(step));
    auto q_tile = [&](auto& mt) {
      return local_tile(domain_offset(make_coord(int(si.q_start), _0{}), mt(_, _, hq, b_idx)),
                        Shape<Int<BM>, Int<D>>{}, make_coord(m, _0{}));
    };
    Tensor gQ = q_tile(mQ);
    Tensor gdO = q_tile(mdO);
    auto [tQg, tQs] = tma_partition(params.tma_q, Int<0>{}, Layout<_1>{},
                                    group_modes<0, 2>(sQ(_, _, s)), group_modes<0, 2>(gQ));
    auto [tdOg, tdOs] = tma_partition(params.tma_do, Int<0>{}, Layout<_1>{},
                                      group_modes<0, 2>(sdO(_, _, s)), group_modes<0, 2>(gdO));
    if (it.must_wait_empty()) EmptyBarrier::wait(&ss.q_empty[s], it.empty_phase());
    FullBarrier::arrive_and_expect_tx(&ss.q_full[s], Traits::kQBytes);
    copy(params.tma_q.with(ss.q_full[s]), tQg, tQs);
    copy(params.tma_do.with(ss.q_full[s]), tdOg, tdOs);
  }
}

// Warp 1 of the producer warpgroup: lse (in the log2 domain) and Dsum of each step's queries.
template <class Traits, class Steps, class Walk>
__device__ __forceinline__ void produce_stats(const BwdParams<Traits>& params,
                                              typename Traits::SharedStorage& ss,
                                              const SeqInfo& si, int64_t bi,
                                              const Steps& steps, Walk wk, int lane) {
  constexpr int BM = Traits::BM, kStages = Traits::kStages;
  const AttnProblem& p = params.p;
  for (; !wk.done(); wk.advance()) {
    const int64_t step = wk.step;
    const StageIter<kStages> it{wk.visits()};
    const int s = it.stage();
    const int64_t hq = steps.head(step), m0 = steps.m_block(step) * BM;
    if (it.must_wait_empty()) EmptyBarrier::wait(&ss.q_empty[s], it.empty_phase());
    for (int r = lane; r < BM; r += 32) {
      const int64_t i = m0 + r;
      const bool ok = i < si.L_q;
      const int64_t idx = ok ? row_stat_index(p, si, bi, hq, i) : 0;
      ss.lse[s][r] = ok ? p.lse[idx] * kLog2e : 0.f;
      ss.dsum[s][r] = ok ? params.dsum[idx] : 0.f;
    }
    EmptyBarrier::arrive(&ss.stat_full[s]);
  }
}

// Warp 2 of the producer warpgroup (with FlashMask the whole warp walks the steps; the leader
// lane issues): each visited step's dQ tile, once the consumers have put it in shared memory,
// goes to the accumulator with one TMA reduce-add (float32 adds in L2; rows past the tensor are
// clipped, rows past L_q add exact zeros). The buffer is released once the TMA has read it.
// kDeterministic: each add waits for its turn (DqTurns) and completes before the next turn; the
// rows past L_q that spill into the next sequence's or head's rows add +0, which leaves any sum
// bitwise unchanged (sums start at +0 and never become -0), so their order does not matter.
template <class Traits, bool kDeterministic, class Steps, class Walk>
__device__ __forceinline__ void write_dq(const BwdParams<Traits>& params,
                                         typename Traits::SharedStorage& ss, const SeqInfo& si,
                                         int64_t bi, const Steps& steps, Walk wk, bool leader,
                                         const DqTurns& turns) {
  using namespace cute;
  constexpr int BM = Traits::BM, D = Traits::D;
  Tensor mdQ = params.tma_dq.get_tma_tensor(make_shape(params.dq_rows, Int<D>{}));
  Tensor sdQ = make_tensor(make_smem_ptr(ss.dq.data()), typename Traits::SmemLayoutDQ{});
  for (; !wk.done(); wk.advance()) {
    if (!leader) continue;
    const int64_t step = wk.step;
    const uint32_t visit = uint32_t(wk.visits());
    const int64_t hq = steps.head(step), m = steps.m_block(step);
    const int64_t row = row_stat_index(params.p, si, bi, hq, m * BM);
    Tensor gdQ = local_tile(domain_offset(make_coord(int32_t(row), _0{}), mdQ),
                            Shape<Int<BM>, Int<D>>{}, make_coord(_0{}, _0{}));
    auto [tdQg, tdQs] = tma_partition(params.tma_dq, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sdQ),
                                      group_modes<0, 2>(gdQ));
    int32_t* counter = nullptr;
    if constexpr (kDeterministic) {  // while the consumers still compute the tile
      counter = turns.seq + hq * turns.tiles + m;
      wait_turn(counter, lower_visitors<BM, Traits::BN>(turns.mask, turns.n_block, m));
    }
    EmptyBarrier::wait(&ss.dq_full, visit & 1u);
    copy(params.tma_dq, tdQs, tdQg);
    tma_store_arrive();
    tma_store_wait<0>();  // the TMA has read the tile: the consumers may write the next one
    EmptyBarrier::arrive(&ss.dq_empty);
    if constexpr (kDeterministic) {
      // The turn passes once the add is done in memory; the consumers, released above, go on
      // with the next step meanwhile. (Releasing only after the add changed little: d = 64
      // causal s 4096 / 8192 took 1.51 / 1.44 x the default backward's time, now 1.48 / 1.37 x,
      // H200 2026-12-05; the turns themselves are the cost there, docs/performance.md.)
      asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
      pass_turn(counter);
    }
  }
  if (leader) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");  // every reduce-add done
}

template <class Traits, typename T, bool kDropout, bool kFlashMask, bool kDeterministic>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    bwd_kernel(const __grid_constant__ BwdParams<Traits> params) {
  using namespace cute;
  static_assert(!(kFlashMask && kDeterministic), "deterministic FlashMask runs the sm80 family");
  constexpr int BM = Traits::BM, BN = Traits::BN, D = Traits::D, kStages = Traits::kStages;
  using Element = typename Traits::Element;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  auto& ss = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);
  const AttnProblem& p = params.p;
  const int n_block = int(blockIdx.x);
  const int64_t hk = blockIdx.y, bi = blockIdx.z;
  const SeqInfo si(p, bi);
  const int64_t n0 = int64_t(n_block) * BN;
  if (p.thd && n0 >= si.L_kv) return;  // those keys belong to the next sequence (whole CTA)
  const Mask mask(p, si);
  const int64_t group = p.h / p.h_kv;
  int64_t q_lo, q_hi;
  mask.query_range(n0, n0 + BN, &q_lo, &q_hi);
  int64_t m_first = q_lo / BM;
  int64_t n_q = q_hi >= q_lo ? q_hi / BM - m_first + 1 : 0;
  // FlashMask: only the query tiles between the first and the last row that some key of the CTA
  // sees under some query head of the group; the walk below skips those it masks entirely.
  if constexpr (kFlashMask)
    narrow_query_tiles<BM>(p, bi, hk * group, (hk + 1) * group, n0, n0 + BN, &m_first, &n_q);
  const int64_t total = n_q * group;
  const BwdStepOrder<kDeterministic> steps{hk * group, m_first, n_q > 0 ? n_q : 1, group};
  using Walk = BwdStepWalk<kFlashMask, BM, BN, BwdStepOrder<kDeterministic>>;

  if (threadIdx.x == 0) {
    FullBarrier::init(&ss.kv_full, 1);
    for (int s = 0; s < kStages; ++s) {
      FullBarrier::init(&ss.q_full[s], 1);
      EmptyBarrier::init(&ss.stat_full[s], 32);
      EmptyBarrier::init(&ss.q_empty[s], Traits::kConsumerThreads);
    }
    EmptyBarrier::init(&ss.dq_full, Traits::kConsumerThreads);
    EmptyBarrier::init(&ss.dq_empty, 1);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  const int wg = int(threadIdx.x) / 128;
  if (wg == 0) {
    cutlass::arch::warpgroup_reg_dealloc<RoleRegs<Traits, kFlashMask>::kProducer>();
    if (total > 0) {
      // No step visited (FlashMask): K and V are not even loaded.
      if (kFlashMask ? threadIdx.x < 32 : threadIdx.x == 0) {
        const Walk wk(p, bi, n0, steps, total);
        if (!wk.done())
          produce_bwd<Traits>(params, ss, si, bi, hk, n_block, steps, wk,
                              !kFlashMask || threadIdx.x == 0);
      } else if (threadIdx.x / 32 == 1) {
        produce_stats<Traits>(params, ss, si, bi, steps, Walk(p, bi, n0, steps, total),
                              int(threadIdx.x) % 32);
      } else if (threadIdx.x / 32 == 2 && (kFlashMask || threadIdx.x == 64)) {
        const DqTurns turns{kDeterministic ? params.dq_turns + bi * p.h * params.dq_turn_tiles
                                           : nullptr,
                            params.dq_turn_tiles, mask, n_block};
        write_dq<Traits, kDeterministic>(params, ss, si, bi, steps,
                                         Walk(p, bi, n0, steps, total), threadIdx.x == 64, turns);
      }
    }
    return;
  }
  cutlass::arch::warpgroup_reg_alloc<RoleRegs<Traits, kFlashMask>::kConsumer>();

  const int tidx = int(threadIdx.x) - 128;
  typename Traits::MmaSdP mma_sdp;
  typename Traits::MmaKV mma_kv;
  typename Traits::MmaDQ mma_dq;
  auto thr_sdp = mma_sdp.get_thread_slice(tidx);
  auto thr_kv = mma_kv.get_thread_slice(tidx);
  auto thr_dq = mma_dq.get_thread_slice(tidx);
  Tensor sK = make_tensor(make_smem_ptr(ss.k.data()), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v.data()), typename Traits::SmemLayoutKV{});
  Tensor sKt = make_tensor(make_smem_ptr(ss.k.data()), typename Traits::SmemLayoutKVt{});
  Tensor sQ = make_tensor(make_smem_ptr(ss.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout.data()), typename Traits::SmemLayoutQ{});
  Tensor sQt = make_tensor(make_smem_ptr(ss.q.data()), typename Traits::SmemLayoutQt{});
  Tensor sdOt = make_tensor(make_smem_ptr(ss.dout.data()), typename Traits::SmemLayoutQt{});
  Tensor sdS = make_tensor(make_smem_ptr(ss.ds.data()), typename Traits::SmemLayoutDS{});
  Tensor sdSt = make_tensor(make_smem_ptr(ss.ds.data()), typename Traits::SmemLayoutDSt{});

  Tensor tSrK = thr_sdp.partition_fragment_A(sK);   // S^T: A = K
  Tensor tSrV = thr_sdp.partition_fragment_A(sV);   // dP^T: A = V
  Tensor tSrQ = thr_sdp.partition_fragment_B(sQ);   // (MMA, N, K, stage)
  Tensor tSrdO = thr_sdp.partition_fragment_B(sdO);
  Tensor tKVrdOt = thr_kv.partition_fragment_B(sdOt);  // dV: B = dO^T
  Tensor tKVrQt = thr_kv.partition_fragment_B(sQt);    // dK: B = Q^T
  Tensor tQrdS = thr_dq.partition_fragment_A(sdS);
  Tensor tQrKt = thr_dq.partition_fragment_B(sKt);
  // Where this thread's dS^T and dQ elements go. The swizzle acts on offsets, not on the 64-bit
  // address (CuTe's default for a swizzled smem pointer): the stores stay shared-memory stores
  // (STS), and each element pair (adjacent queries of dS^T, adjacent columns of dQ, contiguous in
  // both layouts) goes as one store.
  Tensor tSsdS = thr_sdp.partition_C(as_position_independent_swizzle_tensor(sdSt));
  Tensor sdQ = make_tensor(make_smem_ptr(ss.dq.data()), typename Traits::SmemLayoutDQ{});
  Tensor tdQsdQ = thr_dq.partition_C(as_position_independent_swizzle_tensor(sdQ));

  Tensor tSrS = partition_fragment_C(mma_sdp, Shape<Int<BN>, Int<BM>>{});
  Tensor tSrdP = partition_fragment_C(mma_sdp, Shape<Int<BN>, Int<BM>>{});
  Tensor tSc = thr_sdp.partition_C(make_identity_tensor(Shape<Int<BN>, Int<BM>>{}));
  Tensor tdVrdV = partition_fragment_C(mma_kv, Shape<Int<BN>, Int<D>>{});
  Tensor tdKrdK = partition_fragment_C(mma_kv, Shape<Int<BN>, Int<D>>{});
  Tensor tKVc = thr_kv.partition_C(make_identity_tensor(Shape<Int<BN>, Int<D>>{}));
  Tensor tdQrdQ = partition_fragment_C(mma_dq, Shape<Int<BM>, Int<D>>{});
  Tensor tPrP = make_tensor<Element>(partition_shape_A(mma_kv, Shape<Int<BN>, Int<BM>>{}));
  Tensor tPrdS = make_tensor<Element>(partition_shape_A(mma_kv, Shape<Int<BN>, Int<BM>>{}));
  clear(tdVrdV);
  clear(tdKrdK);

  const float scale_log2 = float(p.scale) * kLog2e;
  const Dropout drop(p, bi);
  // Keys of this thread (S^T rows), tile-local.
  const int key0 = get<0>(tSc(0)), key1 = get<0>(tSc(2));
  // Element i of an S^T fragment is (key frag_row(i), query q0 + 8 (i / 4) + i % 2): the thread's
  // lse and Dsum values are kQBlocks pairs of adjacent queries, loaded as float2 ahead of use
  // (with dropout, whose keep bits need the registers, and with BM = 128, whose 32 queries per
  // thread would take 32 registers each, read from shared memory where used).
  constexpr int kFrag = decltype(size(tSrS))::value;
  constexpr int kQBlocks = kFrag / 4;
  constexpr bool kPreload = !kDropout && BM == 64;
  auto load_stats = [&](const float* row, float2 (&v)[kQBlocks]) {
    if constexpr (kPreload) {
      CUTE_UNROLL
      for (int j = 0; j < kQBlocks; ++j)
        v[j] = *reinterpret_cast<const float2*>(row + get<1>(tSc(4 * j)));
    }
  };
  auto stat = [&](const float* row, const float2 (&v)[kQBlocks], int i) {
    if constexpr (!kPreload) return row[get<1>(tSc(i))];
    return i % 2 ? v[i / 4].y : v[i / 4].x;
  };

  Walk wk(p, bi, n0, steps, total);
  if (!wk.done()) FullBarrier::wait(&ss.kv_full, 0);
  for (; !wk.done(); wk.advance()) {
    const int64_t step = wk.step;
    const StageIter<kStages> it{wk.visits()};
    const int s = it.stage();
    const int ds_stage = it.t % Traits::kDSStages;  // by visit: consecutive visits alternate
    const int64_t hq = steps.head(step), m0 = steps.m_block(step) * BM;

    FullBarrier::wait(&ss.q_full[s], it.phase());
    gemm_issue<true>(mma_sdp, tSrK, tSrQ(_, _, _, s), tSrS);
    gemm_issue<true>(mma_sdp, tSrV, tSrdO(_, _, _, s), tSrdP);
    const bool full = mask.tile_full(m0, m0 + BM, n0, n0 + BN);
    int lo[2] = {0, 0}, hi[2] = {BM, BM};
    if (!full) {
      key_span(mask, n0 + key0, m0, BM, &lo[0], &hi[0]);
      key_span(mask, n0 + key1, m0, BM, &lo[1], &hi[1]);
    }
    flashmask::Intervals fm_col0{}, fm_col1{};  // FlashMask, partial step: under the GEMMs
    if constexpr (kFlashMask) {
      if (wk.cls == 2) bwd_step_columns(FlashMaskView(p, bi, hq), n0 + key0, n0 + key1, &fm_col0, &fm_col1);
    }
    EmptyBarrier::wait(&ss.stat_full[s], it.phase());
    float2 lse[kQBlocks];
    load_stats(ss.lse[s], lse);
    warpgroup_wait<1>();  // S^T has landed; dP^T may still be in flight
    gemm_done(tSrS);

    // P^T in place of S^T (float32, for dS) and, dropped and rescaled, as dV's A operand; a
    // select, not a product, zeroes what a key does not see (rows without keys: lse = -inf).
    using Bits = FragmentBits<kFrag>;
    Bits keep_bits = 0;  // dropout: bit i = element i kept
    // FlashMask, partial step: bit i = element i masked by the intervals (class-1 steps: none).
    Bits fm_bits = 0;
    if constexpr (kFlashMask) {
      if (wk.cls == 2) fm_bits = bwd_masked_bits(fm_col0, fm_col1, m0, tSc);
    }
    // dV's A operand: P^T, dropped and rescaled.
    auto p_operand = [&](int i) {
      if constexpr (kDropout) return (keep_bits >> i) & 1u ? tSrS(i) * drop.scale : 0.f;
      return tSrS(i);
    };
    // Branch-free: every element's exponential is computed, and masked steps select; full steps
    // (most of them) test nothing. With dropout one copy of the loop, the exponential behind the
    // visibility test as before (ptxas: 0.4-1.9 KB of spills that way, 1.9-4.9 KB branch-free).
    auto probs = [&](auto masked) {
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) {
        const int r = frag_row(i), q = get<1>(tSc(i));
        float pv;
        if constexpr (kDropout) {
          const bool vis = (full || (q >= lo[r] && q < hi[r])) && !((fm_bits >> i) & 1u);
          pv = vis ? fast_exp2(fmaf(tSrS(i), scale_log2, -stat(ss.lse[s], lse, i))) : 0.f;
        } else {
          pv = fast_exp2(fmaf(tSrS(i), scale_log2, -stat(ss.lse[s], lse, i)));
          if constexpr (decltype(masked)::value)
            pv = q >= lo[r] && q < hi[r] && !((fm_bits >> i) & 1u) ? pv : 0.f;
        }
        tSrS(i) = pv;
        if constexpr (kDropout)
          keep_bits |= Bits(drop.keep(hq, m0 + q, n0 + (r ? key1 : key0))) << i;
        if constexpr (Traits::kEarlyDv) tPrP(i) = Element(p_operand(i));
      }
    };
    if (kDropout || !full || (kFlashMask && wk.cls == 2))
      probs(cute::true_type{});
    else
      probs(cute::false_type{});
    if constexpr (Traits::kEarlyDv) gemm_issue<false>(mma_kv, tPrP, tKVrdOt(_, _, _, s), tdVrdV);
    float2 dsum[kQBlocks];
    load_stats(ss.dsum[s], dsum);
    warpgroup_wait<Traits::kEarlyDv ? 1 : 0>();  // dP^T has landed (early dV may be in flight)
    gemm_done(tSrdP);

    CUTE_UNROLL
    for (int i = 0; i < size(tSrdP); ++i) {
      float dpv = tSrdP(i);
      if constexpr (kDropout) dpv = (keep_bits >> i) & 1u ? dpv * drop.scale : 0.f;
      tPrdS(i) = Element(tSrS(i) * (dpv - stat(ss.dsum[s], dsum, i)));
    }
    // dS into this step's buffer: the other warpgroup may still read the other buffer in its dQ
    // GEMM of step - 1, but none reads this one (it finished step - 2 before the barrier below
    // of step - 1).
    Tensor tSsdS_s = tSsdS(_, _, _, ds_stage);
    CUTE_UNROLL
    for (int i = 0; i < size(tPrdS); i += 2) {
      const Element pair[2] = {tPrdS(i), tPrdS(i + 1)};
      *reinterpret_cast<uint32_t*>(&tSsdS_s(i)) = *reinterpret_cast<const uint32_t*>(pair);
    }
    cutlass::arch::fence_view_async_shared();  // generic-proxy writes, read by wgmma next
    if constexpr (!Traits::kEarlyDv) {
      CUTE_UNROLL
      for (int i = 0; i < size(tSrS); ++i) tPrP(i) = Element(p_operand(i));
      gemm_issue<false>(mma_kv, tPrP, tKVrdOt(_, _, _, s), tdVrdV);
    }

    named_sync(kBarConsumers, 256);  // all of dS is in shared memory
    // dQ before dK: the dQ tile goes to shared memory while dK is still in flight.
    gemm_issue<true>(mma_dq, tQrdS(_, _, _, ds_stage), tQrKt, tdQrdQ);
    gemm_issue<false>(mma_kv, tPrdS, tKVrQt(_, _, _, s), tdKrdK);
    warpgroup_wait<1>();  // dV and dQ have landed
    gemm_done(tdVrdV);
    gemm_done(tdQrdQ);

    // The dQ tile to the writer warp, once it has read the previous one.
    if (it.t > 0) EmptyBarrier::wait(&ss.dq_empty, uint32_t(it.t - 1) & 1u);
    CUTE_UNROLL
    for (int i = 0; i < size(tdQrdQ); i += 2)
      *reinterpret_cast<float2*>(&tdQsdQ(i)) = make_float2(tdQrdQ(i), tdQrdQ(i + 1));
    cutlass::arch::fence_view_async_shared();  // visible to the TMA (async proxy)
    EmptyBarrier::arrive(&ss.dq_full);
    warpgroup_wait<0>();
    gemm_done(tdKrdK);
    EmptyBarrier::arrive(&ss.q_empty[s]);
  }

  // Epilogue: keys < L_kv get their gradients, padded keys (< s_kv, bshd/sbhd) exact zeros.
  // dK (scaled) and dV go through shared memory — the Q and dO stages, which nobody reads once
  // both warpgroups are past their last step and the producer has loaded nothing more — and
  // then to global memory as whole 16-byte row pieces (the fragments' 4-byte pairs, stored
  // directly, left every 32-byte sector half written). Staging: row-major [BN][D] with row r's
  // 16-byte chunks XOR-swizzled by r % 8, so neither the fragment writes (8 rows x 4 pairs per
  // warp store) nor the row reads (8 chunks of a row per quarter warp) conflict on banks.
  static_assert(BN * D * sizeof(Element) <= sizeof(ss.q) && BN * D * sizeof(Element) <= sizeof(ss.dout),
                "dK and dV staged in the Q and dO stages");
  static_assert(D % 8 == 0, "16-byte chunks");
  constexpr int kChunks = D / 8;  // per row
  Element* stage_k = reinterpret_cast<Element*>(ss.q.data());
  Element* stage_v = reinterpret_cast<Element*>(ss.dout.data());
  auto staged = [](int row, int chunk) { return row * D + ((chunk ^ (row % 8)) * 8); };
  named_sync(kBarConsumers, 256);  // both warpgroups' last GEMMs have drained
  const float fk = float(p.scale);
  CUTE_UNROLL
  for (int i = 0; i < size(tdKrdK); i += 2) {
    const int row = get<0>(tKVc(i)), col = get<1>(tKVc(i));
    const int at = staged(row, col / 8) + col % 8;
    const Element k2[2] = {Element(tdKrdK(i) * fk), Element(tdKrdK(i + 1) * fk)};
    const Element v2[2] = {Element(tdVrdV(i)), Element(tdVrdV(i + 1))};
    *reinterpret_cast<uint32_t*>(stage_k + at) = *reinterpret_cast<const uint32_t*>(k2);
    *reinterpret_cast<uint32_t*>(stage_v + at) = *reinterpret_cast<const uint32_t*>(v2);
  }
  named_sync(kBarConsumers, 256);
  T* dk = static_cast<T*>(p.grad_k);
  T* dv = static_cast<T*>(p.grad_v);
  const int d_chunks = int(p.d) / 8;  // d is a multiple of 8 (flash_api.cu)
  for (int c = tidx; c < BN * kChunks; c += Traits::kConsumerThreads) {
    const int row = c / kChunks, chunk = c % kChunks;
    const int64_t j = n0 + row;
    const bool valid = j < si.L_kv;
    if ((!valid && (p.thd || j >= p.s_kv)) || chunk >= d_chunks) continue;
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    const uint4 gk = valid ? *reinterpret_cast<const uint4*>(stage_k + staged(row, chunk)) : zero;
    const uint4 gv = valid ? *reinterpret_cast<const uint4*>(stage_v + staged(row, chunk)) : zero;
    *reinterpret_cast<uint4*>(dk + si.kv_offset(p.grad_k_st, bi, j, hk) + chunk * 8) = gk;
    *reinterpret_cast<uint4*>(dv + si.kv_offset(p.grad_v_st, bi, j, hk) + chunk * 8) = gv;
  }
}

}  // namespace sm90
}  // namespace flash
}  // namespace pte
