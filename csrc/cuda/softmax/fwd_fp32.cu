// Forward masked softmax kernels for float (one storage type per file: compile time).
#include "cuda/softmax/softmax.cuh"

namespace pte {
namespace cuda {
namespace softmax {
template void launch_fwd<float>(const Args&, cudaStream_t);
}  // namespace softmax
}  // namespace cuda
}  // namespace pte
