// Declarations of the flash launchers (defined in launch_impl.h, instantiated once per
// (head dim, dtype) in the generated inst/*.cu files).
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

// Workspace of the backward: Dsum = rowsum(dO o O), fp32 in lse's layout.
inline size_t bwd_dsum_elems(const AttnProblem& p) {
  return size_t(p.thd ? p.h * p.t_q : p.b * p.h * p.s_q);
}

}  // namespace flash
}  // namespace pte
