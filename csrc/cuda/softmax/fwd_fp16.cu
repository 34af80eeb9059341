// Forward masked softmax kernels for __half (one storage type per file: compile time).
#include "cuda/softmax/softmax.cuh"

namespace pte {
namespace cuda {
namespace softmax {
template void launch_fwd<__half>(const Args&, cudaStream_t);
}  // namespace softmax
}  // namespace cuda
}  // namespace pte
