// Shared helpers of the CUDA kernels: the CUDA error check and element conversions.
// Every CUDA runtime call and every launch goes through PTE_CUDA_CHECK so a failure surfaces as
// pte::Error(PTE_ERROR_CUDA) with the runtime's own text, never as a silent wrong result.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

#define PTE_CUDA_CHECK(expr)                                                              \
  do {                                                                                    \
    cudaError_t pte_err_ = (expr);                                                        \
    if (pte_err_ != cudaSuccess)                                                          \
      throw ::pte::Error(PTE_ERROR_CUDA,                                                  \
                         ::pte::str(#expr, " failed: ", cudaGetErrorString(pte_err_),     \
                                    " (", __FILE__, ":", __LINE__, ")"));                 \
  } while (0)

// After a kernel launch: configuration errors (grid too large, too much shared memory) are
// reported by cudaGetLastError without a device sync.
#define PTE_CUDA_CHECK_LAUNCH() PTE_CUDA_CHECK(cudaGetLastError())

namespace pte {
namespace cuda {

// A kernel choice read from the environment at every call (benchmarks and tests switch it between
// calls): 0 = auto (unset, empty or "auto"), 1 = `first`, 2 = `second`, -1 = anything else, which
// the caller refuses with the reason. Callers' enums list auto, first, second in that order.
inline int env_choice(const char* name, const char* first, const char* second) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0 || std::strcmp(v, "auto") == 0) return 0;
  if (std::strcmp(v, first) == 0) return 1;
  if (std::strcmp(v, second) == 0) return 2;
  return -1;
}

// fp32 math for every storage type.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

inline bool is_aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace cuda
}  // namespace pte
