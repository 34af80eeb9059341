// Generated: sm90 forward, head dim 192, bf16. Compiled for sm_90a only.
#include "cuda/attn/sm90/launch_fwd.h"

namespace pte {
namespace flash {
namespace sm90 {
PTE_FLASH_SM90_INSTANTIATE_FWD(192, __nv_bfloat16)
}  // namespace sm90
}  // namespace flash
}  // namespace pte
