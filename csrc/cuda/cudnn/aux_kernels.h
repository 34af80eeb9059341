// Small CUDA kernels around the cuDNN SDPA graphs: they turn paddle_te's conventions into cuDNN's
// and back without a host sync.
//   * cu_seqlens -> per-sequence lengths (cuDNN's padding mask) and ragged offsets (thd);
//   * our lse [h, t_q] (thd) <-> cuDNN's padded softmax stats [b, h, s_q];
//   * the SPEC §2 guarantees cuDNN does not give: rows that see no key get output 0 and lse -inf,
//     positions past a sequence's length (and thd tokens after cu_seqlens[b]) get 0.
// Every kernel is launched on the caller's stream and only when the problem needs it, so a dense
// call runs cuDNN alone.
#pragma once

#include <cstdint>

#include "core/problem.h"

namespace pte {
namespace cudnn {

// Tensors whose ragged offsets the graph reads (fwd uses the first four).
enum RaggedSlot { kRagQ = 0, kRagK, kRagV, kRagO, kRagDO, kRagDQ, kRagDK, kRagDV, kNumRagged };

struct SeqlenParams {
  const int32_t* cu_q;   // [b+1] or null (every length = s_q)
  const int32_t* cu_kv;  // [b+1] or null
  int64_t b, s_q, s_kv;
  int32_t* len_q;   // [b] out, clamped to [0, s_q]
  int32_t* len_kv;  // [b] out
  // Ragged offsets (thd): off[k][i] = cu[i] * seq_stride[k] elements for i in [0, b];
  // null entries are skipped. int64 when wide, else int32.
  void* off[kNumRagged];
  int64_t seq_stride[kNumRagged];
  bool kv_side[kNumRagged];  // offsets from cu_kv instead of cu_q
  bool wide;
};
void launch_seqlens(const SeqlenParams& p, void* stream);

// cuDNN stats for the backward, [b, h, s_q] float32, from our lse: rows past L_q and rows that
// see no key get +inf, so exp(score - stats) is exactly 0 there whatever the masked score is.
void launch_lse_to_stats(const AttnProblem& p, const float* lse, float* stats, void* stream);

// Zero the rows of one side (q or kv) that SPEC §2 wants zero:
//   q side:  positions i >= L_q, rows with no visible key (these also get lse = -inf), thd tokens
//            at or after cu_q[b]; with `stats` (thd forward) the lse of the other rows is copied
//            from cuDNN's padded stats into our [h, t_q] layout;
//   kv side: positions j >= L_kv and thd tokens at or after cu_kv[b].
struct RowFixTensor {
  void* data;  // 2-byte elements (fp16/bf16); null = unused slot
  Strides st;
  int64_t heads, dim;
};
struct RowFixParams {
  RowFixTensor x[2];
  bool kv_side;
  float* lse;          // q side: our lse, -inf on empty rows (null: none)
  const float* stats;  // q side, thd forward: cuDNN stats [b, h, s_q] to copy into lse
};
void launch_row_fix(const AttnProblem& p, const RowFixParams& f, void* stream);

// True when some query row of p can see no key (host-side, from the static shape; with
// cu_seqlens any row may be empty since a length may be 0).
bool may_have_empty_rows(const AttnProblem& p);

}  // namespace cudnn
}  // namespace pte
