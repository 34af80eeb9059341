// Declarations of the flash launchers of the sm80 (mma.sync) family, which runs on every
// supported arch (defined in sm80/launch_impl.h, instantiated once per (head dim, dtype) in the
// generated sm80/inst/*.cu files), and the backward's workspace layout.
#pragma once

#include <cstddef>

#include "core/problem.h"

namespace pte {
namespace flash {

// D is the compiled head dim (>= the call's d, a multiple of 8); T is __half or __nv_bfloat16.
template <int D, typename T>
void run_fwd(const AttnProblem& p);
template <int D, typename T>
void run_bwd(const AttnProblem& p);

// Workspace of the backward, fp32: Dsum = rowsum(dO o O) in lse's layout; without
// `deterministic` also the dQ accumulator of the atomic-dQ kernels, [rows of lse's layout][D] with
// D the compiled head dim (columns past d accumulate zeros, so the kernels need no column test),
// starting at a 16-byte boundary.
inline size_t bwd_dsum_elems(const AttnProblem& p) {
  return size_t(p.thd ? p.h * p.t_q : p.b * p.h * p.s_q);
}
inline size_t bwd_dq_accum_offset(const AttnProblem& p) { return (bwd_dsum_elems(p) + 3) / 4 * 4; }
inline size_t bwd_dq_accum_elems(const AttnProblem& p, int D) {
  return p.deterministic ? 0 : bwd_dsum_elems(p) * size_t(D);
}
inline size_t bwd_workspace_elems(const AttnProblem& p, int D) {
  return p.deterministic ? bwd_dsum_elems(p) : bwd_dq_accum_offset(p) + bwd_dq_accum_elems(p, D);
}

}  // namespace flash
}  // namespace pte
