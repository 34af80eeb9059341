// Forward masked softmax kernels for __nv_bfloat16 (one storage type per file: compile time).
#include "cuda/softmax/softmax.cuh"

namespace pte {
namespace cuda {
namespace softmax {
template void launch_fwd<__nv_bfloat16>(const Args&, cudaStream_t);
}  // namespace softmax
}  // namespace cuda
}  // namespace pte
