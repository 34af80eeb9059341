/* paddle_te C API: fused attention forward and backward.
 *
 * Visibility (SPEC §2): for one sequence with actual lengths L_q and L_k, query i sees key j iff
 *   i + delta - left <= j <= i + delta + right
 * with left/right == -1 meaning unbounded, delta = 0 (top-left alignment) or L_k - L_q
 * (bottom-right alignment). Causal types force right = 0. A row that sees no key gives
 * output 0, lse = -inf and zero gradients. Positions past L_q / L_k give 0.
 *
 * Dropout: the keep decision for element (batch b, query head h, query i, key j) is
 *   r = philox4x32_10(key = {lo32(seed), hi32(seed) + hi32(offset)},
 *                     counter = {j / 4, i, b * H + h, lo32(offset)})[j % 4]
 *   keep iff r >= threshold, threshold = min(floor(p * 2^32), 2^32 - 1)
 * where H is the number of query heads and i, j are positions within the sequence
 * (0-based, independent of padding and layout). Kept probabilities are scaled by 1/(1-p).
 * pte_dropout_keep() below evaluates exactly this function.
 */
#ifndef PADDLE_TE_ATTENTION_H_
#define PADDLE_TE_ATTENTION_H_

#include "paddle_te/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  PTE_QKV_BSHD = 0, /* [b, s, h, d] */
  PTE_QKV_SBHD = 1, /* [s, b, h, d] */
  PTE_QKV_THD = 2   /* [t, h, d], sequences packed back to back, cu_seqlens required */
} pte_qkv_format_t;

typedef enum {
  PTE_MASK_NO_MASK = 0,
  PTE_MASK_PADDING = 1,
  PTE_MASK_CAUSAL = 2,
  PTE_MASK_PADDING_CAUSAL = 3,
  PTE_MASK_CAUSAL_BOTTOM_RIGHT = 4,
  PTE_MASK_PADDING_CAUSAL_BOTTOM_RIGHT = 5
  /* "arbitrary" is not a core concept: the layers run it through the unfused path. */
} pte_mask_type_t;

typedef enum {
  PTE_BACKEND_AUTO = 0,
  PTE_BACKEND_FLASH = 1, /* paddle_te's own CUDA kernels */
  PTE_BACKEND_CUDNN = 2, /* cuDNN fused attention via cudnn-frontend */
  PTE_BACKEND_CPU = 3,   /* reference CPU kernels */
  PTE_BACKEND_COUNT = 4
} pte_backend_t;

/* One params struct for the whole family (forward and backward).
 * Tensor shapes use b = batch, s_q/s_kv = padded lengths, t_q/t_kv = packed tokens,
 * h = query heads, h_kv = kv heads (h % h_kv == 0), d = q/k head dim, d_v = v head dim. */
typedef struct {
  /* forward inputs */
  pte_tensor_t q; /* bshd [b, s_q, h, d] | sbhd [s_q, b, h, d] | thd [t_q, h, d] */
  pte_tensor_t k; /* same layout, h_kv heads, s_kv / t_kv tokens */
  pte_tensor_t v; /* same as k with head dim d_v */
  /* forward outputs (backward inputs) */
  pte_tensor_t out; /* q's layout with head dim d_v */
  pte_tensor_t lse; /* float32 [b, h, s_q] | thd: [h, t_q]; optional in forward without dropout */
  /* backward only */
  pte_tensor_t d_out; /* like out */
  pte_tensor_t d_q;   /* like q */
  pte_tensor_t d_k;   /* like k */
  pte_tensor_t d_v;   /* like v */
  /* sequence lengths: int32 [b+1], cu[0] == 0, non-decreasing. Optional for bshd/sbhd
   * (actual lengths, right padding), required for thd (token offsets). */
  pte_tensor_t cu_seqlens_q;
  pte_tensor_t cu_seqlens_kv;
  int64_t max_seqlen_q;  /* upper bound of the lengths; <= 0: derive (may sync) */
  int64_t max_seqlen_kv;

  pte_qkv_format_t qkv_format;
  pte_mask_type_t mask_type;
  int64_t window_left;  /* -1 = unbounded; causal types force window_right = 0 */
  int64_t window_right;
  double softmax_scale; /* > 0 and finite */

  float dropout;  /* probability in [0, 1) */
  uint64_t seed;  /* Philox key, see the header comment */
  uint64_t offset;
  /* Optional device pointer to int64 {seed, offset}; when set (CUDA only) the kernels read the
   * pair there at run time instead of the two fields above, so no host sync is needed. */
  const int64_t* seed_offset_device;

  int32_t deterministic; /* backward bitwise repeatable */
  pte_backend_t backend;
  void* stream;         /* cudaStream_t; NULL = default stream; ignored on the CPU */
  void* workspace;      /* caller-allocated on the tensors' device, >= workspace_size */
  size_t workspace_size;
} pte_attn_params_t;

/* Fill p with defaults: every tensor absent, no mask, window (-1, -1), scale 0 (invalid: the
 * caller must set it), backend auto. */
PTE_API void pte_attn_params_init(pte_attn_params_t* p);

/* Which backend `auto` would pick for this call; sets *chosen. Fails (NOT_SUPPORTED with the
 * reasons of every backend) when none can run it. */
PTE_API pte_status_t pte_attn_select_backend(const pte_attn_params_t* p, int backward,
                                             pte_backend_t* chosen);

/* Can `backend` run this call? PTE_SUCCESS, or NOT_SUPPORTED/INVALID_ARGUMENT with the reason in
 * pte_last_error(). backward != 0 checks the backward pass. */
PTE_API pte_status_t pte_attn_check(const pte_attn_params_t* p, pte_backend_t backend,
                                    int backward);

/* Workspace the call needs (bytes) for the backend that would run it. */
PTE_API pte_status_t pte_attn_fwd_workspace_size(const pte_attn_params_t* p, size_t* bytes);
PTE_API pte_status_t pte_attn_bwd_workspace_size(const pte_attn_params_t* p, size_t* bytes);

PTE_API pte_status_t pte_attn_fwd(const pte_attn_params_t* p);
PTE_API pte_status_t pte_attn_bwd(const pte_attn_params_t* p);

/* Whether this build and the current device can run `backend` at all; if not, *reason (static
 * or thread-local text) says why. */
PTE_API int pte_backend_available(pte_backend_t backend, const char** reason);

/* The one spelling of each vocabulary word, shared by every front end (the Paddle ops, the
 * pybind11 module): "bshd"/"sbhd"/"thd"; "no_mask", "padding", "causal", "padding_causal",
 * "causal_bottom_right", "padding_causal_bottom_right"; "auto", "flash", "cudnn", "cpu".
 * The *_name functions return NULL for a value outside the enum, so a front end lists the
 * allowed words by counting up from 0 until NULL. The *_parse functions set *out, or fail with
 * INVALID_ARGUMENT and "<argument>='<name>': must be one of '...', ..." in pte_last_error(), the
 * argument named as the Python API names it (qkv_format, attn_mask_type, backend). */
PTE_API const char* pte_qkv_format_name(pte_qkv_format_t format);
PTE_API const char* pte_mask_type_name(pte_mask_type_t mask_type);
PTE_API const char* pte_backend_name(pte_backend_t backend);
PTE_API pte_status_t pte_qkv_format_parse(const char* name, pte_qkv_format_t* out);
PTE_API pte_status_t pte_mask_type_parse(const char* name, pte_mask_type_t* out);
PTE_API pte_status_t pte_backend_parse(const char* name, pte_backend_t* out);

/* The dropout keep decision for one element, exactly as the kernels compute it. */
PTE_API int pte_dropout_keep(uint64_t seed, uint64_t offset, float p, int64_t batch,
                             int64_t head, int64_t num_heads, int64_t query, int64_t key);

#ifdef __cplusplus
}
#endif

#endif /* PADDLE_TE_ATTENTION_H_ */
