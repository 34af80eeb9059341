// Device queries used by the core's dispatch (backend availability, arch checks).
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

}  // namespace cuda
}  // namespace pte
