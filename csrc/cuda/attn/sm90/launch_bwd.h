// Host side of the sm90 backward: the same three-pass structure as the sm80 family's atomic-dQ
// mode (Dsum preprocess, the dK/dV kernel adding dS K into an fp32 dQ accumulator, the dQ
// conversion), with the middle pass replaced by the wgmma/TMA kernel of bwd_kernel.h; the
// deterministic mode is the same passes with the dQ adds taken in turns (bwd_kernel.h, DqTurns).
// The workspace layout is launch.h's, so the core sizes it the same way for both families.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "core/problem.h"
#include "cuda/attn/launch_impl.h"  // the passes around the dK/dV kernel
#include "cuda/attn/sm90/bwd_kernel.h"
#include "cuda/attn/sm90/launch_fwd.h"
#include "cuda/common.cuh"

namespace pte {
namespace flash {
namespace sm90 {

// kFlashMask: p.startend is set; kDeterministic: p.deterministic (turns: the zeroed counters).
// Each its own instantiation, so the default problems run the unchanged kernel.
template <class Traits, bool kDropout, bool kFlashMask, bool kDeterministic = false>
void launch_bwd(const AttnProblem& p, const float* dsum, float* dq_accum, int32_t* turns,
                cudaStream_t stream) {
  using namespace cute;
  constexpr int D = Traits::D;
  // launch.h sizes one turn counter per kDqTurnRows query rows: at least one per BM-row tile.
  static_assert(Traits::BM % kDqTurnRows == 0, "one turn counter per dQ tile at least");
  const int64_t rows_q = p.thd ? p.t_q : p.s_q, rows_kv = p.thd ? p.t_kv : p.s_kv;
  const int64_t rq = rows_q > 0 ? rows_q : 1, rkv = rows_kv > 0 ? rows_kv : 1;
  auto q = gmem_view<Traits>(p, p.q, p.q_st, rq, p.h, p.d);
  auto dout = gmem_view<Traits>(p, p.grad_out, p.grad_out_st, rq, p.h, p.d);
  auto k = gmem_view<Traits>(p, p.k, p.k_st, rkv, p.h_kv, p.d);
  auto v = gmem_view<Traits>(p, p.v, p.v_st, rkv, p.h_kv, p.d_v);
  auto q_layout = take<0, 2>(typename Traits::SmemLayoutQ{});
  const Shape<Int<Traits::BM>, Int<D>> q_box{};
  const Shape<Int<Traits::BN>, Int<D>> kv_box{};
  // The dQ accumulator: one row of D floats per row of lse's layout (TMA coordinates are 32-bit).
  const int64_t dq_rows = int64_t(bwd_dsum_elems(p));
  PTE_CHECK(dq_rows < (int64_t(1) << 31), "flash (sm90): ", dq_rows,
            " query rows x heads exceed the 2^31 rows of one TMA tensor");
  const int32_t dq_rows32 = int32_t(dq_rows > 0 ? dq_rows : 1);
  auto dq = make_tensor(make_gmem_ptr(dq_accum), make_shape(dq_rows32, Int<D>{}),
                        make_stride(Int<D>{}, _1{}));
  BwdParams<Traits> params{make_tma_copy(SM90_TMA_LOAD{}, q, q_layout, q_box, _1{}),
                           make_tma_copy(SM90_TMA_LOAD{}, dout, q_layout, q_box, _1{}),
                           make_tma_copy(SM90_TMA_LOAD{}, k, typename Traits::SmemLayoutKV{}, kv_box, _1{}),
                           make_tma_copy(SM90_TMA_LOAD{}, v, typename Traits::SmemLayoutKV{}, kv_box, _1{}),
                           make_tma_copy(SM90_TMA_REDUCE_ADD{}, dq, typename Traits::SmemLayoutDQ{},
                                         Shape<Int<Traits::BM>, Int<D>>{}, _1{}),
                           q.shape(), dout.shape(), k.shape(), v.shape(), dq_rows32, p, dsum,
                           turns, bwd_dq_turn_tiles(p)};
  const dim3 grid(unsigned((p.s_kv + Traits::BN - 1) / Traits::BN), unsigned(p.h_kv), unsigned(p.b));
  constexpr int smem = Traits::kSmemBytes;
  auto kernel = bwd_kernel<Traits, typename Traits::Storage, kDropout, kFlashMask, kDeterministic>;
  PTE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kernel<<<grid, Traits::kThreads, smem, stream>>>(params);
  PTE_CUDA_CHECK_LAUNCH();
}

template <int D, typename T>
void run_bwd(const AttnProblem& p) {
  using Traits = BwdTraits<D, T>;
  cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  zero_bwd_thd_tails<T>(p, stream);
  if (p.b == 0) return;
  const bool det = p.deterministic, drop = p.dropout > 0.f, fm = p.startend != nullptr;
  // The dispatch (flash_api.cu) sends deterministic FlashMask problems to the sm80 family, and
  // sized the workspace for this family's layout (launch.h): the turn counters need it.
  PTE_CHECK(!(det && fm), "flash (sm90): deterministic FlashMask reached the sm90 backward");
  const size_t need = bwd_workspace_elems(p, D, true);
  PTE_CHECK(p.workspace_size >= need * sizeof(float), "flash (sm90): workspace_size=",
            p.workspace_size, " < the ", need * sizeof(float), " bytes of the sm90 backward");
  float* dsum = static_cast<float*>(p.workspace);
  float* dq_accum = dsum + bwd_dq_accum_offset(p);
  int32_t* turns = det ? reinterpret_cast<int32_t*>(dsum + bwd_dq_turns_offset(p, D)) : nullptr;
  if (p.s_q > 0) {
    // The accumulator and, deterministic, the turn counters after it: one memset.
    PTE_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, (need - bwd_dq_accum_offset(p)) * sizeof(float),
                                   stream));
    launch_bwd_dot<T>(p, dsum, stream);
  }
  if (p.s_kv > 0) {
    if (fm)
      drop ? launch_bwd<Traits, true, true>(p, dsum, dq_accum, nullptr, stream)
           : launch_bwd<Traits, false, true>(p, dsum, dq_accum, nullptr, stream);
    else if (det)
      drop ? launch_bwd<Traits, true, false, true>(p, dsum, dq_accum, turns, stream)
           : launch_bwd<Traits, false, false, true>(p, dsum, dq_accum, turns, stream);
    else
      drop ? launch_bwd<Traits, true, false>(p, dsum, dq_accum, nullptr, stream)
           : launch_bwd<Traits, false, false>(p, dsum, dq_accum, nullptr, stream);
  }
  if (p.s_q > 0) launch_dq_convert<T>(p, dq_accum, D, stream);
}

#define PTE_FLASH_SM90_INSTANTIATE_BWD(D, T) template void run_bwd<D, T>(const AttnProblem&);

}  // namespace sm90
}  // namespace flash
}  // namespace pte
