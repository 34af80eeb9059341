// Internal entry points of each backend. The core (api_*.cc) validates every argument, builds
// the resolved problem, and calls exactly one of these; the attention backends are reached
// through the table in core/attn_backends.cc, which also checks the caller's workspace against
// *_workspace_size before attn_fwd/attn_bwd run. They throw pte::Error on failure.
#pragma once

#include <cstddef>

#include "core/problem.h"
#include "paddle_te/seqlens.h"
#include "paddle_te/softmax.h"

namespace pte {

// Resolved masked-softmax problem: x, y, d_y, d_x are contiguous [b, h, s_q, s_kv].
struct SoftmaxProblem {
  pte_dtype_t dtype;
  pte_device_t device;
  int64_t b, h, s_q, s_kv;
  const void* x;
  void* y;
  const void* d_y;
  void* d_x;
  const uint8_t* mask;   // bool [mask_b, 1, s_q, s_kv] (contiguous) or null
  int64_t mask_batch;    // 1 (broadcast over batch) or b
  double scale;  // double so float64 inputs keep full precision
  pte_softmax_causal_t causal;
  void* stream;
};

// Resolved mask -> cu_seqlens problem. Exactly one of the three forms (see seqlens.h).
struct SeqlensProblem {
  pte_device_t device;
  int64_t b;
  int64_t s_q, s_kv;       // mask lengths; for the single [b,1,1,s] form s_q == s_kv == s
  const uint8_t* mask;     // contiguous bool
  const uint8_t* mask_kv;  // contiguous bool [b,1,1,s_kv] or null
  bool full;               // mask is [b, 1, s_q, s_kv]
  int32_t* cu_q;           // [b+1]
  int32_t* cu_kv;          // [b+1]
  int32_t* valid;          // [1]: 1 if right padding everywhere, else 0
  void* stream;
};

namespace cpu {
void attn_fwd(const AttnProblem& p);
void attn_bwd(const AttnProblem& p);
void softmax_fwd(const SoftmaxProblem& p);
void softmax_bwd(const SoftmaxProblem& p);
void mask_to_cu_seqlens(const SeqlensProblem& p);
}  // namespace cpu

#ifdef PTE_WITH_CUDA
namespace cuda {
void softmax_fwd(const SoftmaxProblem& p);
void softmax_bwd(const SoftmaxProblem& p);
void mask_to_cu_seqlens(const SeqlensProblem& p);
// Compute capability (major*10+minor) of device_id (-1 = the current device); throws
// pte::Error(PTE_ERROR_CUDA) when there is no usable device.
int device_arch(int device_id);
// Largest dynamic shared memory a block of device_id may opt in to, in bytes (cached per device).
int max_smem_optin(int device_id);
// Multiprocessors of device_id (cached per device).
int sm_count(int device_id);
// Shared memory of one multiprocessor of device_id, all resident blocks together, in bytes
// (cached per device).
int smem_per_sm(int device_id);
}  // namespace cuda

#endif

#ifdef PTE_WITH_FLASH
namespace flash {
// Empty string when the flash kernels can run p, else the reason.
const char* check(const AttnProblem& p, bool backward);
size_t fwd_workspace_size(const AttnProblem& p);
size_t bwd_workspace_size(const AttnProblem& p);
void attn_fwd(const AttnProblem& p);
void attn_bwd(const AttnProblem& p);
}  // namespace flash
#endif

#ifdef PTE_WITH_CUDNN
namespace cudnn {
// Empty string when cuDNN can run p, else the reason (returned string has static or
// thread-local storage).
const char* check(const AttnProblem& p, bool backward);
size_t fwd_workspace_size(const AttnProblem& p);
size_t bwd_workspace_size(const AttnProblem& p);
void attn_fwd(const AttnProblem& p);
void attn_bwd(const AttnProblem& p);
// Version of the cuDNN library loaded at run time, e.g. 91900; 0 if none.
size_t runtime_version();
}  // namespace cudnn
#endif

}  // namespace pte
