// CUDA kernel of the lse merge (paddle_te/merge.h). One warp per (batch, position, head) row:
// the lanes read the two lse values, agree on the weights, stream the head dim (d elements,
// strided by 32 lanes) and lane 0 writes the merged lse after the warp has read both inputs, so
// lse may alias lse_a. All math in float32; rows where both parts saw no key give 0 and -inf.
// Memory-bound: one read of each output row and one write, coalesced along d (bshd rows of one
// position are adjacent, so consecutive warps touch consecutive memory).
#include <cmath>

#include "core/merge_problem.h"
#include "cuda/common.cuh"

namespace pte {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = 8;  // 256 threads: enough rows in flight per SM for a copy-like op

template <typename Acc, typename Part>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    merge_kernel(MergeProblem p) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t rows = p.b * p.s * p.h;
  if (row >= rows) return;
  const int64_t hi = row % p.h, si = (row / p.h) % p.s, bi = row / (p.h * p.s);
  const int64_t la_off = bi * p.lse_a.sb + hi * p.lse_a.sh + si * p.lse_a.ss;
  const int64_t lb_off = bi * p.lse_b.sb + hi * p.lse_b.sh + si * p.lse_b.ss;
  const float la = p.lse_a.data[la_off];
  const float lb = p.lse_b.data[lb_off];
  __syncwarp();  // every lane has read lse_a before lane 0 may overwrite it (lse aliasing lse_a)
  const Acc* oa = static_cast<const Acc*>(p.out_a.data) + bi * p.out_a.sb + si * p.out_a.ss +
                  hi * p.out_a.sh;
  const Part* ob = static_cast<const Part*>(p.out_b.data) + bi * p.out_b.sb + si * p.out_b.ss +
                   hi * p.out_b.sh;
  Acc* o = static_cast<Acc*>(p.out.data) + bi * p.out.sb + si * p.out.ss + hi * p.out.sh;
  float* lse = p.lse.data + bi * p.lse.sb + hi * p.lse.sh + si * p.lse.ss;
  const float m = fmaxf(la, lb);
  if (!(m > -INFINITY)) {  // both parts empty (or NaN): output 0, lse -inf, never NaN
    for (int64_t j = lane; j < p.d; j += 32) o[j] = from_float<Acc>(0.f);
    if (lane == 0) *lse = -INFINITY;
    return;
  }
  // exp of -inf is 0, but the part's output must not be read then (0 * NaN = NaN).
  const float wa = la > -INFINITY ? expf(la - m) : 0.f;
  const float wb = lb > -INFINITY ? expf(lb - m) : 0.f;
  const float sum = wa + wb;
  const float ca = wa / sum, cb = wb / sum;
  // Products rounded separately and then added (no fused multiply-add), so the result does not
  // depend on which part is a and which is b (the ring merges in any order, bit for bit).
  for (int64_t j = lane; j < p.d; j += 32) {
    const float va = wa > 0.f ? __fmul_rn(ca, to_float(oa[j])) : 0.f;
    const float vb = wb > 0.f ? __fmul_rn(cb, to_float(ob[j])) : 0.f;
    o[j] = from_float<Acc>(__fadd_rn(va, vb));
  }
  if (lane == 0) *lse = m + logf(sum);
}

template <typename Acc, typename Part>
void launch(const MergeProblem& p) {
  const int64_t rows = p.b * p.s * p.h;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  PTE_CHECK(blocks <= int64_t(0x7fffffff), "out_a: ", rows, " rows exceed one launch");
  merge_kernel<Acc, Part><<<unsigned(blocks), kWarpsPerBlock * 32, 0,
                            static_cast<cudaStream_t>(p.stream)>>>(p);
  PTE_CUDA_CHECK_LAUNCH();
}

template <typename Acc>
void launch_part(const MergeProblem& p) {
  switch (p.part_dtype) {
    case PTE_FLOAT32:
      return launch<Acc, float>(p);
    case PTE_FLOAT16:
      return launch<Acc, __half>(p);
    case PTE_BFLOAT16:
      return launch<Acc, __nv_bfloat16>(p);
    default:
      PTE_INTERNAL("attn_merge: out_b dtype ", pte_dtype_name(p.part_dtype), " not dispatched");
  }
}

}  // namespace

void attn_merge(const MergeProblem& p) {
  switch (p.acc_dtype) {
    case PTE_FLOAT32:
      return launch_part<float>(p);
    case PTE_FLOAT16:
      return launch_part<__half>(p);
    case PTE_BFLOAT16:
      return launch_part<__nv_bfloat16>(p);
    default:
      PTE_INTERNAL("attn_merge: out_a dtype ", pte_dtype_name(p.acc_dtype), " not dispatched");
  }
}

}  // namespace cuda
}  // namespace pte
