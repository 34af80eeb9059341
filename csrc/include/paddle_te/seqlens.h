/* paddle_te C API: padding masks -> cumulative sequence lengths (SPEC §3).
 *
 * mask (bool, True = padding) is one of
 *   [b, 1, 1, s]            one mask for q and kv (self-attention), mask_kv absent;
 *   [b, 1, 1, s_q] + mask_kv [b, 1, 1, s_kv]   (cross-attention);
 *   [b, 1, s_q, s_kv]       a full padding mask: q length = rows with any False,
 *                           kv length = columns with any False.
 * Outputs cu_seqlens_q / cu_seqlens_kv: int32 [b+1], cu[0] = 0.
 * Only right padding is accepted. The kernels never fail on a mask that is not right padding
 * (that would need a host sync on the GPU): they write the verdict to `valid` (int32 [1],
 * 1 = right padding, 0 = not) and the caller decides when to look.
 */
#ifndef PADDLE_TE_SEQLENS_H_
#define PADDLE_TE_SEQLENS_H_

#include "paddle_te/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  pte_tensor_t mask;          /* bool, see above */
  pte_tensor_t mask_kv;       /* optional bool [b, 1, 1, s_kv] */
  pte_tensor_t cu_seqlens_q;  /* int32 [b+1] out */
  pte_tensor_t cu_seqlens_kv; /* int32 [b+1] out */
  pte_tensor_t valid;         /* int32 [1] out: 1 if every mask is right padding */
  void* stream;
} pte_seqlens_params_t;

PTE_API void pte_seqlens_params_init(pte_seqlens_params_t* p);
PTE_API pte_status_t pte_mask_to_cu_seqlens(const pte_seqlens_params_t* p);

#ifdef __cplusplus
}
#endif

#endif /* PADDLE_TE_SEQLENS_H_ */
