// Decode kernels for __half (one storage type per file: compile time).
#include "cuda/decode/decode.cuh"

namespace pte {
namespace cuda {
namespace decode {
void launch_fp16(const Args<__half>& a, const Plan& plan, cudaStream_t stream) {
  launch<__half>(a, plan, stream);
}
}  // namespace decode
}  // namespace cuda
}  // namespace pte
