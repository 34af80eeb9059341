// The validated form of a decode_attn call (SPEC §10): what the CPU and CUDA decode kernels see.
// Built by csrc/core/api_decode.cc after every argument check. No framework or CUDA types.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/problem.h"
#include "paddle_te/decode.h"

namespace pte {

struct DecodeProblem {
  pte_dtype_t dtype;  // of q, caches, k_new, v_new, out (all equal)
  pte_device_t device;
  int32_t device_id;

  int64_t b;     // batch
  int64_t s_q;   // query rows per sequence (and new keys per sequence when k_new is given)
  int64_t h;     // query heads
  int64_t h_kv;  // kv heads; query head i uses kv head i / (h / h_kv)
  int64_t d;     // q/k head dim
  int64_t d_v;   // v/out head dim

  bool paged;
  int64_t capacity;       // keys a sequence can hold: s_max or pages_per_seq * page_size
  int64_t page_size;      // paged only
  int64_t num_pages;      // paged only
  int64_t pages_per_seq;  // paged only

  // [b, s, h, d] views with the head dim contiguous. For a paged cache `batch` is the page
  // stride and `seq` the row stride within a page.
  const void* q;
  void* k_cache;
  void* v_cache;
  const void* k_new;  // null: nothing appended
  const void* v_new;
  void* out;
  Strides q_st, kc_st, vc_st, kn_st, vn_st, out_st;
  float* lse;  // contiguous [b, h, s_q] or null

  const int32_t* cache_seqlens;  // [b]
  const int32_t* block_table;    // contiguous [b, pages_per_seq] or null

  double scale;
  int64_t window_left;  // -1 = unbounded
  int32_t num_splits;   // resolved (>= 1) before a CUDA kernel runs; 0 = not yet chosen
  void* stream;
  void* workspace;
  size_t workspace_size;
};

namespace cpu {
void decode_attn(const DecodeProblem& p);
}  // namespace cpu

#ifdef PTE_WITH_CUDA
namespace cuda {
// Empty string when the CUDA decode kernels can run p, else the reason (static storage).
const char* decode_check(const DecodeProblem& p);
// Split count for p (p.num_splits when forced), from shapes and the device only.
int32_t decode_num_splits(const DecodeProblem& p);
size_t decode_workspace_size(const DecodeProblem& p, int32_t num_splits);
void decode_attn(const DecodeProblem& p);
}  // namespace cuda
#endif

}  // namespace pte
