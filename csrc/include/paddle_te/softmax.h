/* paddle_te C API: masked softmax forward and backward (SPEC §3).
 *
 * y = softmax(scale * x) over the last axis with masked elements excluded; a row whose every
 * element is masked gives 0. x, y, d_y, d_x: [b, h, s_q, s_kv], contiguous, same dtype.
 */
#ifndef PADDLE_TE_SOFTMAX_H_
#define PADDLE_TE_SOFTMAX_H_

#include "paddle_te/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  PTE_SOFTMAX_NO_CAUSAL = 0,
  PTE_SOFTMAX_CAUSAL_TOP_LEFT = 1,     /* key j visible from query i iff j <= i */
  PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT = 2  /* iff j <= i + s_kv - s_q */
} pte_softmax_causal_t;

typedef struct {
  pte_tensor_t x;    /* forward input  [b, h, s_q, s_kv] */
  pte_tensor_t y;    /* forward output / backward input, like x */
  pte_tensor_t d_y;  /* backward input, like x */
  pte_tensor_t d_x;  /* backward output, like x */
  pte_tensor_t mask; /* optional bool [b or 1, 1, s_q, s_kv], True = masked out */
  double scale;      /* finite; the backward multiplies by it too */
  pte_softmax_causal_t causal;
  void* stream;      /* cudaStream_t; NULL = default stream */
} pte_softmax_params_t;

PTE_API void pte_softmax_params_init(pte_softmax_params_t* p);
PTE_API pte_status_t pte_softmax_fwd(const pte_softmax_params_t* p);
/* d_x = scale * y * (d_y - sum(d_y * y)) */
PTE_API pte_status_t pte_softmax_bwd(const pte_softmax_params_t* p);

#ifdef __cplusplus
}
#endif

#endif /* PADDLE_TE_SOFTMAX_H_ */
