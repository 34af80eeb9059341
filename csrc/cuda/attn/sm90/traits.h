// Tile shapes, shared-memory layouts, GMMA tilings and TMA copy types of the Hopper (sm_90a)
// forward. One CTA: a producer warpgroup (one thread issues every TMA load) and two consumer
// warpgroups, each owning 64 query rows of a 128-row Q tile; K and V tiles of BN keys stream
// through kStages shared-memory stages guarded by mbarriers.
//
// Shared-memory tiles use the 128-byte-swizzled K-major GMMA atom (8 rows x 64 16-bit columns),
// which is also the layout TMA writes with SWIZZLE_128B, so no thread ever re-arranges a tile.
// V is stored like K ([BN, D], D contiguous) and read by the P·V GEMM through a transposed view
// (B operand MN-major), so one TMA box shape serves both.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/tensor.hpp>
#include <cute/atom/copy_atom.hpp>
#include <cute/atom/mma_atom.hpp>
#include <cutlass/numeric_types.h>

namespace pte {
namespace flash {
namespace sm90 {

// CuTe's element types for the storage types of the C API.
template <typename T>
struct CuteElement;
template <>
struct CuteElement<__half> {
  using type = cutlass::half_t;
};
template <>
struct CuteElement<__nv_bfloat16> {
  using type = cutlass::bfloat16_t;
};

// setmaxnreg moves registers between the warpgroups of a CTA, within what the CTA was launched
// with: __launch_bounds__(threads, 1) gives every thread 65536 / threads registers rounded down to
// a multiple of 8 (168 at 384 threads), so a split must fit that, not the register file. 24 +
// 2 x 240 = 3 x 168 exactly; a producer at 32 would leave a consumer's setmaxnreg.inc waiting.
constexpr bool register_split_fits(int threads, int producer_regs, int consumer_threads,
                                   int consumer_regs) {
  return 128 * producer_regs + consumer_threads * consumer_regs <= 65536 / threads / 8 * 8 * threads;
}

// The split of a kernel's roles. FlashMask kernels also walk the intervals in the producer warps
// (flashmask_walk.h), which spill at 24 registers: the forward's take 40 and leave the consumers
// 232 (ptxas, d = 128 bf16: 64 -> 0 bytes of spills); the backward's consumers need their 240
// (Traits::kFlashMaskProducerRegs), as do all other kernels' (24 / 240).
template <class Traits, bool kFlashMask>
struct RoleRegs {
  static constexpr int kProducer = kFlashMask ? Traits::kFlashMaskProducerRegs : 24;
  static constexpr int kConsumer = kProducer == 40 ? 232 : 240;
  static_assert(register_split_fits(Traits::kThreads, kProducer, Traits::kConsumerThreads,
                                    kConsumer),
                "setmaxnreg split beyond the launch's registers");
};

template <int D_, int BN_, int kStages_, typename T>
struct FwdTraits {
  using Element = typename CuteElement<T>::type;
  static constexpr int D = D_;
  static constexpr int BM = 128;  // two consumer warpgroups x 64 rows (the wgmma M)
  static constexpr int BN = BN_;
  static constexpr int kStages = kStages_;
  static constexpr int kConsumerWGs = BM / 64;
  static constexpr int kConsumerThreads = 128 * kConsumerWGs;
  static constexpr int kThreads = 128 + kConsumerThreads;
  // Register split between the roles (setmaxnreg): RoleRegs. With FlashMask the producer warp
  // walks the intervals too and takes 40 (its consumers then 232).
  static constexpr int kFlashMaskProducerRegs = 40;
  static_assert(D % 64 == 0, "the sm90 tiles are whole 128-byte swizzle atoms");

  using AtomLayoutMNK = cute::Layout<cute::Shape<cute::Int<kConsumerWGs>, cute::_1, cute::_1>>;
  // S = Q K^T: both operands K-major in shared memory.
  using MmaS = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<BN>, cute::Int<D>>>(),
      AtomLayoutMNK{}));
  // O += P V: P from registers (the S accumulators converted in place), V MN-major in smem.
  using MmaO = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<D>, cute::Int<BN>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      AtomLayoutMNK{}));

  using SmemAtom = cute::GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutQ = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<BM>, cute::Int<D>>{}));
  using SmemLayoutKV = decltype(cute::tile_to_shape(
      SmemAtom{}, cute::Shape<cute::Int<BN>, cute::Int<D>, cute::Int<kStages>>{}));
  // V^T as (D, BN, stage) over the same bytes.
  using SmemLayoutVt = decltype(cute::composition(
      SmemLayoutKV{},
      cute::make_ordered_layout(cute::Shape<cute::Int<D>, cute::Int<BN>, cute::Int<kStages>>{},
                                cute::Step<cute::_2, cute::_1, cute::_3>{})));

  // Global tensors as TMA sees them: (token, column, head, batch); thd tensors have one batch.
  using GmemShape = cute::Shape<int32_t, int32_t, int32_t, int32_t>;
  using GmemStride = cute::Stride<int64_t, cute::_1, int64_t, int64_t>;
  using GmemTensor = decltype(cute::make_tensor(
      cute::make_gmem_ptr(static_cast<const Element*>(nullptr)), GmemShape{}, GmemStride{}));
  using TmaQ = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutQ{},
                                            cute::Shape<cute::Int<BM>, cute::Int<D>>{}, cute::_1{}));
  using TmaKV = decltype(cute::make_tma_copy(
      cute::SM90_TMA_LOAD{}, GmemTensor{}, cute::take<0, 2>(SmemLayoutKV{}),
      cute::Shape<cute::Int<BN>, cute::Int<D>>{}, cute::_1{}));

  static constexpr int kQBytes = BM * D * int(sizeof(Element));
  static constexpr int kKVBytes = BN * D * int(sizeof(Element));  // one K (or V) stage
  // O gets a staging buffer of its own (the persistent kernel) where it fits beside Q, K and V.
  static constexpr bool kSeparateO = D <= 128;

  struct SharedStorage {
    // Without a separate O buffer the epilogue stages O in Q's bytes.
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, kSeparateO ? BM * D : 8> o;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>> v;
    alignas(8) uint64_t q_full;
    uint64_t q_empty;                             // persistent: Q may be replaced
    uint64_t k_full[kStages], v_full[kStages];    // TMA landed (transaction counts)
    uint64_t k_empty[kStages], v_empty[kStages];  // every consumer thread is done with the stage
    // FlashMask partial tiles: the key columns' intervals, per warpgroup, two buffers
    // (flashmask_walk.h, mask_staged).
    alignas(16) int4 fm_cols[2][kConsumerWGs][BN];
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 block can have");
};


// The sm90 backward's dK/dV (+ dQ accumulation) kernel: one CTA per (key tile of BN = 128, kv
// head, sequence); the two consumer warpgroups own 64 keys each and walk the query tiles (BM) of
// every query head of the GQA group. Products are computed transposed (keys as the M
// dimension), so P^T and dS^T come out of the S^T / dP^T accumulators already in the A-operand
// layout of the dV += P^T dO and dK += dS^T Q GEMMs; dS goes through shared memory once, for
// dQ = dS K, whose float32 tile goes through shared memory to a TMA reduce-add.
template <int D_, typename T>
struct BwdTraits {
  using Storage = T;
  using Element = typename CuteElement<T>::type;
  static constexpr int D = D_;
  static constexpr int BN = 128;  // keys per CTA (2 warpgroups x 64)
  // Queries per step: 64 at D = 128; 128 at D = 64, where a 64-query step gives the GEMMs too
  // little work per element of the step's elementwise part (measured: 0.77-0.9 x the sm80
  // family). The S^T / dP^T accumulators then take 64 registers each, so dV is issued only after
  // dS is computed (kEarlyDv false): P^T in bf16 is not held beside both accumulators.
  static constexpr int BM = D <= 64 ? 128 : 64;
  static constexpr bool kEarlyDv = BM == 64;
  static constexpr int kStages = 2;
  static constexpr int kConsumerWGs = 2;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kThreads = 384;
  // The FlashMask backward keeps 24 / 240 (RoleRegs): with 232 its consumers' wgmmas were
  // serialized for want of registers (ptxas C7512, d = 128), a worse loss than the producer
  // warps' spills (ptxas: 448 bytes at d = 128, a few local accesses per step).
  static constexpr int kFlashMaskProducerRegs = 24;
  static_assert(D % 64 == 0, "the sm90 tiles are whole 128-byte swizzle atoms");

  using AtomM2 = cute::Layout<cute::Shape<cute::_2, cute::_1, cute::_1>>;
  using AtomN2 = cute::Layout<cute::Shape<cute::_1, cute::_2, cute::_1>>;
  // S^T = K Q^T and dP^T = V dO^T: (keys, queries, D), both operands K-major in smem.
  using MmaSdP = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<BM>, cute::Int<D>>>(),
      AtomM2{}));
  // dV += P^T dO and dK += dS^T Q: (keys, D, queries), A from registers, B MN-major (dO^T, Q^T).
  using MmaKV = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float,
                                 cute::Shape<cute::_64, cute::Int<D>, cute::Int<BM>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      AtomM2{}));
  // dQ = dS K: (queries, D, keys), the warpgroups split D; A = dS MN-major, B = K^T MN-major.
  using MmaDQ = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::Int<BM>, cute::Int<D / 2>, cute::Int<BN>>,
                                 cute::GMMA::Major::MN, cute::GMMA::Major::MN>(),
      AtomN2{}));

  using SmemAtomK = cute::GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutKV = decltype(cute::tile_to_shape(SmemAtomK{}, cute::Shape<cute::Int<BN>, cute::Int<D>>{}));
  using SmemLayoutKVt = decltype(cute::composition(
      SmemLayoutKV{}, cute::make_ordered_layout(cute::Shape<cute::Int<D>, cute::Int<BN>>{},
                                                cute::Step<cute::_2, cute::_1>{})));
  using SmemLayoutQ = decltype(cute::tile_to_shape(
      SmemAtomK{}, cute::Shape<cute::Int<BM>, cute::Int<D>, cute::Int<kStages>>{}));
  using SmemLayoutQt = decltype(cute::composition(
      SmemLayoutQ{}, cute::make_ordered_layout(cute::Shape<cute::Int<D>, cute::Int<BM>, cute::Int<kStages>>{},
                                               cute::Step<cute::_2, cute::_1, cute::_3>{})));
  // dS as the MN-major A operand of dQ = dS K: (queries, keys), queries contiguous; written
  // from the dS^T accumulators through the (keys, queries) view.
  // Two buffers (the last mode): dS of step t is written while step t - 1's dQ GEMM may still
  // read the other.
  static constexpr int kDSStages = 2;
  using SmemLayoutDS = decltype(cute::tile_to_shape(
      cute::GMMA::Layout_MN_SW128_Atom<Element>{},
      cute::Shape<cute::Int<BM>, cute::Int<BN>, cute::Int<kDSStages>>{}));
  using SmemLayoutDSt = decltype(cute::composition(
      SmemLayoutDS{}, cute::make_layout(cute::Shape<cute::Int<BN>, cute::Int<BM>, cute::Int<kDSStages>>{},
                                        cute::Stride<cute::Int<BM>, cute::_1, cute::Int<BM * BN>>{})));

  using GmemShape = typename FwdTraits<D, 128, 2, T>::GmemShape;
  using GmemStride = typename FwdTraits<D, 128, 2, T>::GmemStride;
  using GmemTensor = typename FwdTraits<D, 128, 2, T>::GmemTensor;
  using TmaQ = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{},
                                            cute::take<0, 2>(SmemLayoutQ{}),
                                            cute::Shape<cute::Int<BM>, cute::Int<D>>{}, cute::_1{}));
  using TmaKV = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutKV{},
                                             cute::Shape<cute::Int<BN>, cute::Int<D>>{}, cute::_1{}));

  // The float32 dQ accumulator as TMA sees it: (row of lse's layout, D); a step's dQ tile goes
  // from shared memory into it with one TMA reduce-add (rows past the tensor are clipped).
  using DQShape = cute::Shape<int32_t, cute::Int<D>>;
  using DQStride = cute::Stride<cute::Int<D>, cute::_1>;
  using DQTensor = decltype(cute::make_tensor(cute::make_gmem_ptr(static_cast<float*>(nullptr)),
                                              DQShape{}, DQStride{}));
  using SmemLayoutDQ = decltype(cute::tile_to_shape(cute::GMMA::Layout_K_SW128_Atom<float>{},
                                                    cute::Shape<cute::Int<BM>, cute::Int<D>>{}));
  using TmaDQ = decltype(cute::make_tma_copy(cute::SM90_TMA_REDUCE_ADD{}, DQTensor{}, SmemLayoutDQ{},
                                             cute::Shape<cute::Int<BM>, cute::Int<D>>{}, cute::_1{}));

  static constexpr int kKVBytes = 2 * BN * D * int(sizeof(Element));  // K and V
  static constexpr int kQBytes = 2 * BM * D * int(sizeof(Element));   // Q and dO of one step

  struct SharedStorage {
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>> k;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>> v;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> q;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>> dout;
    alignas(1024) cute::array_aligned<Element, cute::cosize_v<SmemLayoutDS>> ds;
    alignas(1024) cute::array_aligned<float, cute::cosize_v<SmemLayoutDQ>> dq;
    float lse[kStages][BM];   // lse * log2(e) of the step's queries (0 past L_q)
    float dsum[kStages][BM];  // rowsum(dO o O) of the step's queries
    alignas(8) uint64_t kv_full;
    uint64_t q_full[kStages];     // Q and dO landed (TMA)
    uint64_t stat_full[kStages];  // lse and Dsum stored (32 producer lanes arrive)
    uint64_t q_empty[kStages];    // every consumer thread is done with the step
    uint64_t dq_full;             // the step's dQ tile is in shared memory (consumer threads)
    uint64_t dq_empty;            // the dQ writer's reduce-add has read it (one thread)
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 block can have");
};

}  // namespace sm90
}  // namespace flash
}  // namespace pte
