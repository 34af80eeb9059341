// CUDA decode kernels (SPEC §10): split-KV attention over a contiguous or paged cache with the
// in-place append fused in, and the lse combine of the splits. The launchers of both attention
// kernels (decode_simt.cuh, decode_mma.cuh) and of the combine (decode_combine.cuh); the host
// side that picks one (decode_api.cu) passes a Plan.
#pragma once

#include "cuda/decode/decode_args.cuh"
#include "cuda/decode/decode_combine.cuh"
#include "cuda/decode/decode_mma.cuh"
#include "cuda/decode/decode_simt.cuh"

namespace pte {
namespace cuda {
namespace decode {

template <typename T, int D, int kRows>
void launch_simt(const Args<T>& a, cudaStream_t stream) {
  const dim3 grid(a.row_chunks * a.num_splits, a.h_kv, a.b);
  simt_kernel<T, D, kRows><<<grid, kThreads, 0, stream>>>(a);
  PTE_CUDA_CHECK_LAUNCH();
}

template <typename T, int D>
void launch_simt_rows(const Args<T>& a, int rows_per, cudaStream_t stream) {
  switch (rows_per) {
    case 1: return launch_simt<T, D, 1>(a, stream);
    case 2: return launch_simt<T, D, 2>(a, stream);
    case 4: return launch_simt<T, D, 4>(a, stream);
    case 8: return launch_simt<T, D, 8>(a, stream);
    default: PTE_INTERNAL("decode: rows per block ", rows_per, " not instantiated (1, 2, 4, 8)");
  }
}

template <typename T, int D, int MT, bool Deep>
void launch_mma(const Args<T>& a, cudaStream_t stream) {
  constexpr int smem = MmaConfig<D, MT, Deep>::template smem_bytes<T>();
  const auto kernel = mma_kernel<T, D, MT, Deep>;
  PTE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(a.row_chunks * a.num_splits, a.h_kv, a.b);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  PTE_CUDA_CHECK_LAUNCH();
}

// The m16 row tiles per block of the tensor-core kernel for `rows` rows per kv head (a GQA group
// x s_q): one up to 16 rows, two above (fewer passes over the keys) where the fp32 output tile of
// 32 rows fits the registers (D <= 128). decode_api.cu plans with it.
constexpr int mma_tiles(int rows, int d) { return rows <= 16 || d > 128 ? 1 : 2; }

template <typename T, int D, bool Deep>
void launch_mma_rows(const Args<T>& a, int tile_rows, cudaStream_t stream) {
  switch (tile_rows) {
    case 16: return launch_mma<T, D, 1, Deep>(a, stream);
    case 32:
      if constexpr (mma_tiles(32, D) == 2) return launch_mma<T, D, 2, Deep>(a, stream);
      [[fallthrough]];
    default:
      PTE_INTERNAL("decode: ", tile_rows, " rows per block not instantiated for head dim ", D,
                   " (16; 32 for head dims <= 128)");
  }
}

template <typename T, int D>
void launch_attn(const Args<T>& a, const Plan& plan, cudaStream_t stream) {
  if (plan.kernel == Kernel::kMma && plan.deep)
    launch_mma_rows<T, D, true>(a, plan.tile_rows, stream);
  else if (plan.kernel == Kernel::kMma)
    launch_mma_rows<T, D, false>(a, plan.tile_rows, stream);
  else
    launch_simt_rows<T, D>(a, plan.tile_rows, stream);
}

// The combine of the split-KV partials: one block per output row. With pdl (sm_90, Plan), as a
// programmatic dependent of the attention kernel just launched on `stream`: its launch and
// prologue overlap the attention's last blocks, and it waits in-kernel (pdl_wait_primary) for
// the partials. That wait exists only in code compiled for sm_90+; a combine JIT-compiled from
// sm_80 PTX would not have it, so the attribute is set only when the loaded code has it. Under
// stream capture the attribute becomes a programmatic edge of the graph.
template <typename T>
void launch_combine(const Args<T>& a, bool pdl, cudaStream_t stream) {
  const auto kernel = combine_kernel<T>;
  if (pdl) {
    cudaFuncAttributes fa{};
    PTE_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
    pdl = fa.ptxVersion >= 90;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(a.b * a.h * a.s_q));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  PTE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, a));
}

// Attention with the fused in-place append, then the combine (num_splits > 1), on `stream`.
template <typename T>
void launch(const Args<T>& a, const Plan& plan, cudaStream_t stream) {
  switch (a.d) {
    case 64: launch_attn<T, 64>(a, plan, stream); break;
    case 128: launch_attn<T, 128>(a, plan, stream); break;
    case 256: launch_attn<T, 256>(a, plan, stream); break;
    default: PTE_INTERNAL("decode: head dim ", a.d, " not instantiated (64, 128, 256)");
  }
  if (a.num_splits > 1) launch_combine(a, plan.pdl, stream);
}

// One instantiation per storage type, each in its own .cu file (compile time).
void launch_fp16(const Args<__half>& a, const Plan& plan, cudaStream_t stream);
void launch_bf16(const Args<__nv_bfloat16>& a, const Plan& plan, cudaStream_t stream);

}  // namespace decode
}  // namespace cuda
}  // namespace pte
