// Resolved lse-merge problem (paddle_te/merge.h) and the entry points of its kernels. The core
// (api_merge.cc) validates every argument and resolves layouts to element strides, so the kernels
// see one shape [b, s, h, d] whatever the qkv_format.
#pragma once

#include <cstdint>

#include "paddle_te/common.h"

namespace pte {

struct MergeProblem {
  // A strided view of an output [b, s, h, d] (element strides; d is contiguous).
  struct Out {
    void* data;
    int64_t sb, ss, sh;
  };
  // A strided view of an lse [b, h, s] (float32, element strides).
  struct Lse {
    float* data;
    int64_t sb, sh, ss;
  };
  pte_device_t device;
  int device_id;
  int64_t b, s, h, d;
  pte_dtype_t acc_dtype;   // out_a and out
  pte_dtype_t part_dtype;  // out_b
  Out out_a, out_b, out;
  Lse lse_a, lse_b, lse;
  void* stream;
};

namespace cpu {
void attn_merge(const MergeProblem& p);
}

#ifdef PTE_WITH_CUDA
namespace cuda {
void attn_merge(const MergeProblem& p);
}
#endif

}  // namespace pte
