// Device queries used by the core's dispatch (backend availability, arch checks).
#include <atomic>

#include "core/kernels.h"
#include "cuda/common.cuh"

namespace pte {
namespace cuda {

int device_arch(int device_id) {
  // device_id < 0: the calling thread's current device (pte_backend_available asks for that).
  if (device_id < 0) PTE_CUDA_CHECK(cudaGetDevice(&device_id));
  int major = 0, minor = 0;
  PTE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_id));
  PTE_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_id));
  return major * 10 + minor;
}

int max_smem_optin(int device_id) {
  if (device_id < 0) PTE_CUDA_CHECK(cudaGetDevice(&device_id));
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};  // 0: not asked yet
  if (device_id < kMaxDevices) {
    const int v = cache[device_id].load(std::memory_order_relaxed);
    if (v != 0) return v;
  }
  int bytes = 0;
  PTE_CUDA_CHECK(
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_id));
  if (device_id < kMaxDevices) cache[device_id].store(bytes, std::memory_order_relaxed);
  return bytes;
}

}  // namespace cuda
}  // namespace pte
