// Generated: sm90 backward, head dim 64, fp16. Compiled for sm_90a only.
#include "cuda/attn/sm90/launch_bwd.h"

namespace pte {
namespace flash {
namespace sm90 {
PTE_FLASH_SM90_INSTANTIATE_BWD(64, __half)
}  // namespace sm90
}  // namespace flash
}  // namespace pte
