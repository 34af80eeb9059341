// Declarations of the flash launchers of the sm80 (mma.sync) family, which runs on every
// supported arch (defined in sm80/launch_impl.h, instantiated once per (head dim, dtype) in the
// generated sm80/inst/*.cu files), and the backward's workspace layout.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/problem.h"

namespace pte {
namespace flash {

// D is the compiled head dim (>= the call's d, a multiple of 8); T is __half or __nv_bfloat16.
template <int D, typename T>
void run_fwd(const AttnProblem& p);
template <int D, typename T>
void run_bwd(const AttnProblem& p);

// Workspace of the backward, in 4-byte elements:
// * Dsum = rowsum(dO o O), fp32 in lse's layout;
// * where the run accumulates dQ (every default run; a deterministic one on the sm90 family,
//   whose dK/dV kernel also produces dQ, not on the sm80 family, whose dQ kernel needs no
//   buffer): the fp32 dQ accumulator, [rows of lse's layout][D] with D the compiled head dim
//   (columns past d accumulate zeros, so the kernels need no column test), starting at a 16-byte
//   boundary;
// * deterministic on the sm90 family: right after the accumulator (zeroed with it by one
//   memset), the int32 turn counters of its dQ tiles, [b][h][ceil(s_q / kDqTurnRows)]
//   (sm90/bwd_kernel.h).
// `sm90`: the run takes the sm90 backward (flash_api.cu sizes with the same choice it runs).
constexpr int kDqTurnRows = 64;  // query rows of one dQ tile: the sm90 backward's BM
inline size_t bwd_dsum_elems(const AttnProblem& p) {
  return size_t(p.thd ? p.h * p.t_q : p.b * p.h * p.s_q);
}
inline size_t bwd_dq_accum_offset(const AttnProblem& p) { return (bwd_dsum_elems(p) + 3) / 4 * 4; }
inline size_t bwd_dq_accum_elems(const AttnProblem& p, int D) {
  return bwd_dsum_elems(p) * size_t(D);
}
inline size_t bwd_dq_turns_offset(const AttnProblem& p, int D) {
  return bwd_dq_accum_offset(p) + bwd_dq_accum_elems(p, D);
}
// Turn counters per (sequence, query head): s_q bounds every L_q (thd: max_seqlen_q), so a
// sequence's tiles fit its row of counters.
inline int64_t bwd_dq_turn_tiles(const AttnProblem& p) {
  return (p.s_q + kDqTurnRows - 1) / kDqTurnRows;
}
inline size_t bwd_dq_turns_elems(const AttnProblem& p) {
  return size_t(p.b * p.h * bwd_dq_turn_tiles(p));
}
inline size_t bwd_workspace_elems(const AttnProblem& p, int D, bool sm90) {
  if (!p.deterministic) return bwd_dq_turns_offset(p, D);
  return sm90 ? bwd_dq_turns_offset(p, D) + bwd_dq_turns_elems(p) : bwd_dsum_elems(p);
}

}  // namespace flash
}  // namespace pte
