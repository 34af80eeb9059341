/* paddle_te C API: attention over a KV cache for decoding (SPEC §10).
 *
 * q [b, s_q, h, d] attends to the first n_b keys of sequence b's cache, where
 *   n_b = cache_seqlens[b] + (s_q if k_new is given else 0).
 * Query i of sequence b sees key j iff
 *   j <= n_b - s_q + i                        (bottom-right causal, SPEC §2 with delta = n_b - s_q)
 *   j >= n_b - s_q + i - window_left          (only when window_left >= 0)
 * A row that sees no key gives output 0 and lse -inf.
 *
 * Caches:
 *   contiguous  k_cache [b, s_max, h_kv, d], v_cache [b, s_max, h_kv, d_v]; capacity = s_max
 *   paged       k_cache [num_pages, page_size, h_kv, d], v_cache [.., d_v], block_table int32
 *               [b, pages_per_seq]: position p of sequence b lives in page
 *               block_table[b, p / page_size], row p % page_size; capacity = pages_per_seq *
 *               page_size; 1 <= page_size <= 256.
 * k_new [b, s_q, h_kv, d] / v_new [b, s_q, h_kv, d_v] (both or neither) are written into the
 * cache in place at positions cache_seqlens[b] .. cache_seqlens[b] + s_q - 1 before attending;
 * cache_seqlens itself is not changed. Every other cache row is left untouched.
 *
 * Values of cache_seqlens and block_table: the CPU kernels check them (cache_seqlens[b] + s_q
 * (with k_new) or cache_seqlens[b] (without) <= capacity; every page index a sequence uses in
 * [0, num_pages)) and fail with INVALID_ARGUMENT naming the element. The CUDA kernels never read
 * values on the host (no sync, CUDA-graph capturable): they clamp n_b to the capacity and treat
 * keys on out-of-range pages as masked (nothing is read or written out of bounds); callers that
 * want the error check the values before launching (paddle_te.ops.decode_attn does in dygraph).
 *
 * Split-KV: the CUDA kernels may split each sequence's keys over several thread blocks and merge
 * the partial results through their lse (num_splits: 0 = chosen from the shapes, else forced).
 * The partial results live in the caller's workspace (pte_decode_workspace_size). The choice
 * depends on shapes and the device only, never on cache_seqlens, so a captured CUDA graph can be
 * replayed with new lengths.
 */
#ifndef PADDLE_TE_DECODE_H_
#define PADDLE_TE_DECODE_H_

#include "paddle_te/attention.h"
#include "paddle_te/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  pte_tensor_t q;             /* [b, s_q, h, d] */
  pte_tensor_t k_cache;       /* [b, s_max, h_kv, d] | paged [num_pages, page_size, h_kv, d]; in/out */
  pte_tensor_t v_cache;       /* same with head dim d_v; in/out */
  pte_tensor_t cache_seqlens; /* int32 [b]: tokens already cached per sequence */
  pte_tensor_t k_new;         /* optional [b, s_q, h_kv, d] */
  pte_tensor_t v_new;         /* optional [b, s_q, h_kv, d_v] */
  pte_tensor_t block_table;   /* optional int32 [b, pages_per_seq]: paged cache when present */
  pte_tensor_t out;           /* [b, s_q, h, d_v] out */
  pte_tensor_t lse;           /* optional float32 [b, h, s_q] out */
  double softmax_scale;       /* > 0 and finite */
  int64_t window_left;        /* -1 = unbounded */
  int64_t window_right;       /* decoding is causal: any value is read as 0 (as for causal types) */
  int32_t num_splits;         /* 0 = choose from the shapes; >= 1 forced (CUDA; the CPU ignores it) */
  pte_backend_t backend;      /* auto | flash (the CUDA decode kernels) | cpu */
  void* stream;               /* cudaStream_t; NULL = default stream */
  void* workspace;            /* on the tensors' device, >= pte_decode_workspace_size bytes */
  size_t workspace_size;
} pte_decode_params_t;

/* Defaults: every tensor absent, window (-1, 0), scale 0 (the caller must set it), num_splits 0,
 * backend auto. */
PTE_API void pte_decode_params_init(pte_decode_params_t* p);

/* Workspace (bytes) the call needs; validates the arguments. */
PTE_API pte_status_t pte_decode_workspace_size(const pte_decode_params_t* p, size_t* bytes);

/* The split count the CUDA kernels would use (1 on the CPU); validates the arguments. */
PTE_API pte_status_t pte_decode_num_splits(const pte_decode_params_t* p, int32_t* num_splits);

PTE_API pte_status_t pte_decode_attn(const pte_decode_params_t* p);

#ifdef __cplusplus
}
#endif

#endif /* PADDLE_TE_DECODE_H_ */
