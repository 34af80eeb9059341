// Backward softmax kernels for every storage type (no mask variants: fewer instantiations).
#include "cuda/softmax/softmax.cuh"

namespace pte {
namespace cuda {
namespace softmax {
template void launch_bwd<__half>(const Args&, cudaStream_t);
template void launch_bwd<__nv_bfloat16>(const Args&, cudaStream_t);
template void launch_bwd<float>(const Args&, cudaStream_t);
}  // namespace softmax
}  // namespace cuda
}  // namespace pte
