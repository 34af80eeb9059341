/* paddle_te C API: merging two partial attention results through their lse (SPEC §11).
 *
 * Attention of one query row over a key set split in two parts A and B gives, per part, an
 * output O_A, O_B (each normalised over its own keys) and a log-sum-exp lse_A, lse_B (natural
 * log, as the fused attention op returns it). The result over A ∪ B is
 *   lse = log(exp(lse_A) + exp(lse_B)) = m + log(exp(lse_A - m) + exp(lse_B - m)),  m = max(.,.)
 *   O   = exp(lse_A - lse) * O_A + exp(lse_B - lse) * O_B
 * computed in float32 whatever the storage dtype. A part with lse = -inf (its keys were all
 * masked) contributes nothing, and its output is never read as a number (0 * NaN would poison
 * the row); a row where both parts saw no key gives O = 0 and lse = -inf (SPEC §2's rule), never
 * NaN. Merging is commutative (swapping A and B gives the same bits) and, up to rounding,
 * associative, so a ring of any length folds its steps into one running (O, lse) pair.
 *
 * Layouts (qkv_format, as the fused attention op):
 *   bshd  out [b, s, h, d], lse [b, h, s]
 *   sbhd  out [s, b, h, d], lse [b, h, s]
 *   thd   out [t, h, d],    lse [h, t]
 * Tensors may be strided views (the innermost dim of the outputs contiguous, strides >= 0), so a
 * merge can write into a slice of a larger buffer. out may alias out_a and lse may alias lse_a
 * (an in-place running accumulator); no other overlap is allowed.
 * dtypes: out_a and out share one dtype; out_b may have another (e.g. a float16 partial merged
 * into a float32 accumulator). CPU: float32, float64. CUDA: float32, float16, bfloat16.
 * lse tensors are float32.
 */
#ifndef PADDLE_TE_MERGE_H_
#define PADDLE_TE_MERGE_H_

#include "paddle_te/attention.h"
#include "paddle_te/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  pte_tensor_t out_a;          /* [b, s, h, d] | [s, b, h, d] | [t, h, d]: the running output */
  pte_tensor_t lse_a;          /* float32 [b, h, s] | [h, t] */
  pte_tensor_t out_b;          /* like out_a (its own dtype allowed): the partial to fold in */
  pte_tensor_t lse_b;          /* float32, like lse_a */
  pte_tensor_t out;            /* like out_a, same dtype; may alias out_a */
  pte_tensor_t lse;            /* float32, like lse_a; may alias lse_a */
  pte_qkv_format_t qkv_format; /* bshd | sbhd | thd */
  void* stream;                /* cudaStream_t; NULL = default stream */
} pte_merge_params_t;

/* Defaults: every tensor absent, bshd, default stream. */
PTE_API void pte_merge_params_init(pte_merge_params_t* p);

PTE_API pte_status_t pte_attn_merge(const pte_merge_params_t* p);

#ifdef __cplusplus
}
#endif

#endif /* PADDLE_TE_MERGE_H_ */
