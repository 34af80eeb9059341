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

namespace {

// A device attribute that cannot change in a process, read once per device (the query is a driver
// call; launchers ask on every call). Thread-safe: a racing first read stores the same value.
template <cudaDeviceAttr kAttr>
int cached_attribute(int device_id) {
  if (device_id < 0) PTE_CUDA_CHECK(cudaGetDevice(&device_id));
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};  // 0: not asked yet
  if (device_id < kMaxDevices) {
    const int v = cache[device_id].load(std::memory_order_relaxed);
    if (v != 0) return v;
  }
  int value = 0;
  PTE_CUDA_CHECK(cudaDeviceGetAttribute(&value, kAttr, device_id));
  if (device_id < kMaxDevices) cache[device_id].store(value, std::memory_order_relaxed);
  return value;
}

}  // namespace

int max_smem_optin(int device_id) {
  return cached_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(device_id);
}

int sm_count(int device_id) { return cached_attribute<cudaDevAttrMultiProcessorCount>(device_id); }

int smem_per_sm(int device_id) {
  return cached_attribute<cudaDevAttrMaxSharedMemoryPerMultiprocessor>(device_id);
}

}  // namespace cuda
}  // namespace pte
