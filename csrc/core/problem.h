// The validated, layout-resolved form of a fused-attention call: what every kernel sees.
// Built by the core from pte_attn_params_t (api_attention.cc) after all argument checks, so
// kernels can trust every field. No framework types here, and nothing CUDA-specific, so the
// header is shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "paddle_te/attention.h"

#if defined(__CUDACC__)
#define PTE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PTE_HOST_DEVICE inline
#endif

namespace pte {

// Element strides of a [batch, seq, head, dim] view; dim is contiguous (stride 1).
// thd tensors have batch == 0 and seq == the token stride: sequences start at cu_seqlens[b].
struct Strides {
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t head = 0;
};

struct AttnProblem {
  pte_dtype_t dtype;  // of q, k, v, out, d_out, d_q, d_k, d_v (all equal)
  pte_device_t device;
  int32_t device_id;

  int64_t b;     // batch (number of sequences)
  int64_t h;     // query heads
  int64_t h_kv;  // kv heads; query head i uses kv head i / (h / h_kv)
  int64_t d;     // q/k head dim
  int64_t d_v;   // v/out head dim
  int64_t s_q;   // padded q length (bshd/sbhd) or max_seqlen_q (thd): bound on every L_q
  int64_t s_kv;  // same for keys
  int64_t t_q;   // thd: rows of q (tokens after cu_seqlens_q[b] are untouched padding); else b*s_q
  int64_t t_kv;
  bool thd;

  // Tensor base pointers (bwd fields null in the forward) and their strides.
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // [b, h, s_q] or thd [h, t_q]; may be null in a forward without dropout
  // Gradients (backward only; named grad_* since d / d_v name head dims).
  const void* grad_out;
  void* grad_q;
  void* grad_k;
  void* grad_v;
  Strides q_st, k_st, v_st, out_st, grad_out_st, grad_q_st, grad_k_st, grad_v_st;

  // int32 [b+1] or null (then every L_q = s_q, L_kv = s_kv). Values are validated on the CPU;
  // CUDA kernels clamp lengths to [0, s_q] / [0, s_kv] so a bad value cannot read out of bounds.
  const int32_t* cu_q;
  const int32_t* cu_kv;

  // Visibility: key j visible from query i iff i + delta - left <= j <= i + delta + right,
  // left/right < 0 = unbounded, delta = bottom_right ? L_kv - L_q : 0. Causal already folded in
  // (right == 0).
  int64_t window_left;
  int64_t window_right;
  bool bottom_right;

  // Double so float64 inputs keep full precision; float kernels convert once at launch.
  double scale;
  double dropout;  // 0 = none; the keep threshold uses the float value (attention.h)
  uint64_t seed;
  uint64_t offset;
  const int64_t* seed_offset_device;  // CUDA: read {seed, offset} here when non-null

  // FlashMask (SPEC §9, core/flashmask_rule.h): null = none. int32 [b, startend_heads, s_kv,
  // startend_c] contiguous; query head i uses mask head i / (h / startend_heads). Only with
  // bshd/sbhd and mask type no_mask or causal (startend_causal), so L_q = s_q and L_kv = s_kv.
  const int32_t* startend;
  int32_t startend_c;       // 1, 2 or 4
  int64_t startend_heads;   // 1, h_kv or h
  bool startend_causal;     // the op's causal flag (selects the meaning of the C columns)
  // CUDA: per (batch, mask head, chunk of 32 keys), per bound column, {min, max} over the chunk's
  // columns < s_kv: int32 [b][startend_heads][ceil(s_kv / 32)][startend_c][2], in the workspace,
  // written by flash::flashmask_summarize before the attention kernels run. Null on the CPU.
  const int32_t* startend_summary;

  bool deterministic;
  void* stream;
  void* workspace;
  size_t workspace_size;

  // Where sequence `bi` starts in a tensor with strides `st` / cu_seqlens `cu`.
  PTE_HOST_DEVICE int64_t seq_start(const Strides& st, const int32_t* cu, int64_t bi) const {
    return thd ? int64_t(cu[bi]) * st.seq : bi * st.batch;
  }
  // Index of lse for (bi, head, i).
  PTE_HOST_DEVICE int64_t lse_index(int64_t bi, int64_t head, int64_t i) const {
    return thd ? head * t_q + int64_t(cu_q[bi]) + i : (bi * h + head) * s_q + i;
  }
};

// Actual length of sequence bi given cu_seqlens (or the padded length when absent), clamped.
PTE_HOST_DEVICE int64_t seq_len(const int32_t* cu, int64_t bi, int64_t s_max) {
  if (cu == nullptr) return s_max;
  int64_t l = int64_t(cu[bi + 1]) - int64_t(cu[bi]);
  return l < 0 ? 0 : (l > s_max ? s_max : l);
}

// The visible key range [lo, hi] (inclusive, clamped to [0, L_kv-1]) of query i; empty if lo > hi.
PTE_HOST_DEVICE void visible_range(int64_t i, int64_t L_q, int64_t L_kv, int64_t left,
                                   int64_t right, bool bottom_right, int64_t* lo, int64_t* hi) {
  int64_t delta = bottom_right ? L_kv - L_q : 0;
  int64_t l = left < 0 ? 0 : i + delta - left;
  int64_t r = right < 0 ? L_kv - 1 : i + delta + right;
  *lo = l < 0 ? 0 : l;
  *hi = r > L_kv - 1 ? L_kv - 1 : r;
}

}  // namespace pte
