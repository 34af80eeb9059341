// Merge shim (house refactor + main's sm90 family): the sm90 launchers, written before the
// csrc/cuda/attn/sm80/ split, include the sm80 launch helpers (zero_thd_tail, set_smem, the
// backward's preprocess and dQ conversion kernels) under their old path. Remove once
// csrc/cuda/attn/sm90/ includes "cuda/attn/sm80/launch_impl.h" (or the arch-neutral helpers).
#pragma once

#include "cuda/attn/sm80/launch_impl.h"
