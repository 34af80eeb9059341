// Host side of the sm80 (mma.sync) flash kernels: the tile configuration of each compiled head
// dim and the launchers that the generated instantiations (sm80/inst/*.cu) compile once per
// (head dim, dtype). Only sm80/inst/*.cu include this file; everything else sees the declarations
// in cuda/attn/launch.h, so the kernels are compiled once per instantiation file and nowhere else.
#pragma once

#include "cuda/attn/launch_impl.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/kernels.h"
#include "core/problem.h"
#include "cuda/attn/sm80/bwd_dkdv.h"
#include "cuda/attn/sm80/bwd_dq.h"
#include "cuda/attn/sm80/fwd_kernel.h"
#include "cuda/attn/static_switch.h"
#include "cuda/common.cuh"

namespace pte {
namespace flash {

// Tile shapes per compiled head dim D. Register budget (fp32 accumulators per thread):
// forward MT*D/2 (output) + MT*BN/2 (scores); tiled dK/dV kernel 2*KT*KO*4 (dK + dV) +
// 2*MT*NT*4 (S, dP) of its warp tiles; 1-D dK/dV kernel D/kSplit + BM/2; dQ kernel D/2 + BN/2.
// The compiler's resource report of these configurations (registers, spills) is in
// docs/performance.md ("Notes behind code comments"): only the D = 128 forward and the tiled
// backward with dropout spill, and both measured faster than their spill-free variants.
template <int D>
struct Configs {
  // Forward: 4 warps of 2 m16 row tiles each (128 rows) up to D = 128. Two row tiles per warp
  // halve the shared-memory fragment traffic per MMA (measured on H100, bf16: 148 -> 245 TFLOP/s
  // at d = 64, 235 -> 270 at d = 128, against 8 warps of one row tile). With dropout the Philox
  // draws push that variant into spills, so dropout keeps one row tile per warp (8 warps).
  using Fwd = FwdConfig<D, (D <= 128 ? 128 : 64), (D <= 128 ? 64 : 32), 4>;
  using FwdDropout = FwdConfig<D, (D <= 128 ? 128 : 64), (D <= 128 ? 64 : 32), (D <= 128 ? 8 : 4)>;
  // dK/dV (+ atomic dQ) up to D = 128: the 2-D tiled kernel, 8 warps over 128 keys, FA2's
  // warp grids (S/dP rows x keys, dK/dV keys x columns, dQ rows x columns). D = 64 takes 128
  // queries per step as FA2 does.
  // Two Q/dO stages: a third (one more step in flight) measured no faster on H100.
  using BwdTiled = BwdTiledConfig<D, 128, (D == 64 ? 128 : 64), 8, (D == 64 ? 4 : 2), 4,
                                  (D == 128 ? 2 : 4)>;
  static constexpr bool kHasTiled = D <= 128;
  // Past D = 128, and on devices whose blocks cannot hold the tiled kernel's shared memory: the
  // 1-D kernel, 4 warps of 16 keys, the head dim split over kSplit blocks past 128.
  using BwdKV = BwdKVConfig<D, 64, (D <= 64 ? 64 : 32), 4, (D <= 128 ? 1 : 2)>;
  using BwdQ = BwdQConfig<D, 64, (D <= 128 ? 64 : 32), 4>;
};

template <typename Cfg, typename T, bool kDropout>
void launch_fwd(const AttnProblem& p, cudaStream_t stream) {
  const dim3 grid(unsigned(ceil_div(p.s_q, Cfg::BM)), unsigned(p.h), unsigned(p.b));
  constexpr int smem = Cfg::template smem_bytes<T>();
  auto kernel = fwd_kernel<Cfg, T, kDropout>;
  set_smem(kernel, smem);
  kernel<<<grid, Cfg::kThreads, smem, stream>>>(p);
  PTE_CUDA_CHECK_LAUNCH();
}

template <int D, typename T>
void run_fwd(const AttnProblem& p) {
  cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  if (p.thd) zero_thd_tail(static_cast<T*>(p.out), p.out_st, p.t_q, p.h, int(p.d), p.cu_q, p.b, stream);
  if (p.b == 0 || p.s_q == 0) return;
  bool_switch(p.dropout > 0.f, [&](auto drop) {
    constexpr bool kDropout = decltype(drop)::value;
    using Cfg = std::conditional_t<kDropout, typename Configs<D>::FwdDropout,
                                   typename Configs<D>::Fwd>;
    launch_fwd<Cfg, T, kDropout>(p, stream);
  });
}

// The 2-D tiled dK/dV kernel where it is compiled (D <= 128) and fits the device's shared memory
// (sm_90: 227 KB per block; sm_80: 163 KB, too small for D = 64, 128); false: use the 1-D kernel.
template <int D, typename T>
bool launch_bwd_tiled(const AttnProblem& p, const float* dsum, float* dq_accum,
                      cudaStream_t stream) {
  if constexpr (Configs<D>::kHasTiled) {
    using TC = typename Configs<D>::BwdTiled;
    constexpr int smem = TC::template smem_bytes<T>();
    if (smem > cuda::max_smem_optin(p.device_id)) return false;
    const dim3 grid(unsigned(ceil_div(p.s_kv, TC::BN)), unsigned(p.h_kv), unsigned(p.b));
    bool_switch(p.dropout > 0.f, [&](auto drop) {
      bool_switch(!p.deterministic, [&](auto atomic_dq) {
        auto kernel =
            bwd_tiled_kernel<TC, T, decltype(drop)::value, decltype(atomic_dq)::value>;
        set_smem(kernel, smem);
        kernel<<<grid, TC::kThreads, smem, stream>>>(p, dsum, dq_accum);
        PTE_CUDA_CHECK_LAUNCH();
      });
    });
    return true;
  } else {
    return false;
  }
}

template <int D, typename T>
void run_bwd(const AttnProblem& p) {
  using KV = typename Configs<D>::BwdKV;
  using Q = typename Configs<D>::BwdQ;
  cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  zero_bwd_thd_tails<T>(p, stream);
  if (p.b == 0) return;
  float* dsum = static_cast<float*>(p.workspace);
  // Without `deterministic`, dQ is accumulated by the dK/dV kernel with fp32 atomics.
  const bool atomic_dq = !p.deterministic;
  float* dq_accum = atomic_dq ? dsum + bwd_dq_accum_offset(p) : nullptr;
  if (atomic_dq && p.s_q > 0)
    PTE_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, bwd_dq_accum_elems(p, D) * sizeof(float), stream));
  if (p.s_q > 0) launch_bwd_dot<T>(p, dsum, stream);
  if (p.s_kv > 0 && !launch_bwd_tiled<D, T>(p, dsum, dq_accum, stream)) {
    const dim3 grid(unsigned(ceil_div(p.s_kv, KV::BN) * KV::kSplit), unsigned(p.h_kv),
                    unsigned(p.b));
    const int smem = KV::template smem_bytes<T>(atomic_dq);
    bool_switch(p.dropout > 0.f, [&](auto drop) {
      bool_switch(atomic_dq, [&](auto atomic) {
        auto kernel = bwd_dkdv_kernel<KV, T, decltype(drop)::value, decltype(atomic)::value>;
        set_smem(kernel, smem);
        kernel<<<grid, KV::kThreads, smem, stream>>>(p, dsum, dq_accum);
        PTE_CUDA_CHECK_LAUNCH();
      });
    });
  }
  if (p.s_q > 0 && atomic_dq) {
    launch_dq_convert<T>(p, dq_accum, D, stream);
  } else if (p.s_q > 0) {
    const dim3 grid(unsigned(ceil_div(p.s_q, Q::BM)), unsigned(p.h), unsigned(p.b));
    constexpr int smem = Q::template smem_bytes<T>();
    bool_switch(p.dropout > 0.f, [&](auto drop) {
      auto kernel = bwd_dq_kernel<Q, T, decltype(drop)::value>;
      set_smem(kernel, smem);
      kernel<<<grid, Q::kThreads, smem, stream>>>(p, dsum);
      PTE_CUDA_CHECK_LAUNCH();
    });
  }
}

// Explicit instantiations, one per generated file
// sm80/inst/flash_{fwd,bwd}_sm80_hdim<D>_<dtype>.cu.
#define PTE_FLASH_INSTANTIATE_FWD(D, T) template void run_fwd<D, T>(const AttnProblem&);
#define PTE_FLASH_INSTANTIATE_BWD(D, T) template void run_bwd<D, T>(const AttnProblem&);

}  // namespace flash
}  // namespace pte
