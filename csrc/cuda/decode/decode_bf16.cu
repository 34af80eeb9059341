// Decode kernels for __nv_bfloat16 (one storage type per file: compile time).
#include "cuda/decode/decode.cuh"

namespace pte {
namespace cuda {
namespace decode {
void launch_bf16(const Args<__nv_bfloat16>& a, const Plan& plan, cudaStream_t stream) {
  launch<__nv_bfloat16>(a, plan, stream);
}
}  // namespace decode
}  // namespace cuda
}  // namespace pte
