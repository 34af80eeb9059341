// pte::cuda::softmax_fwd / softmax_bwd: resolve the problem into kernel arguments and pick the
// storage type. The kernels and their dispatch by row size live in softmax.cuh; each storage
// type is compiled in its own file (fwd_*.cu, bwd.cu) to keep compile units small.
#include "core/kernels.h"
#include "cuda/softmax/softmax.cuh"

namespace pte {
namespace cuda {

namespace {

softmax::Args make_args(const SoftmaxProblem& p, bool forward) {
  softmax::Args a{};
  a.rows = p.b * p.h * p.s_q;
  a.s_kv = p.s_kv;
  a.s_q = p.s_q;
  a.h = p.h;
  if (forward) {
    a.x = p.x;
    a.out = p.y;
    a.mask = p.mask;
    a.mask_batch_stride = p.mask && p.mask_batch != 1 ? p.s_q * p.s_kv : 0;
    a.scale = float(double(p.scale) * 1.4426950408889634);  // exp(s*x) = exp2(s*log2(e)*x)
    a.causal = p.causal;
    a.delta = p.causal == PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT ? p.s_kv - p.s_q : 0;
    // With a mask, run the heads of one (batch, query) together: the mask row is shared by
    // all of them and stays in L2 between their reads.
    a.head_inner = p.mask != nullptr && p.h > 1;
    a.heads_per_item = 1;  // the register kernels may group heads (softmax.cuh, with_head_groups)
    constexpr int64_t k31 = int64_t(1) << 31;
    a.small = a.rows < k31 && p.h * p.s_q < k31;
    if (a.small) {
      a.div_hg = softmax::FastDiv(uint32_t(p.h));
      a.div_sq = softmax::FastDiv(uint32_t(p.s_q));
      a.div_hsq = softmax::FastDiv(uint32_t(p.h * p.s_q));
    }
  } else {
    a.x = p.y;
    a.x2 = p.d_y;
    a.out = p.d_x;
    a.scale = p.scale;
  }
  return a;
}

template <typename Fn>
void by_dtype(pte_dtype_t dtype, const char* what, Fn&& fn) {
  switch (dtype) {
    case PTE_FLOAT16: fn(__half{}); return;
    case PTE_BFLOAT16: fn(__nv_bfloat16{}); return;
    case PTE_FLOAT32: fn(float{}); return;
    default:
      PTE_UNSUPPORTED(what, ": dtype=", pte_dtype_name(dtype),
                      " is not supported on CUDA (float16, bfloat16, float32)");
  }
}

}  // namespace

void softmax_fwd(const SoftmaxProblem& p) {
  const softmax::Args a = make_args(p, true);
  if (a.rows == 0 || a.s_kv == 0) return;
  by_dtype(p.dtype, "x", [&](auto tag) {
    softmax::launch_fwd<decltype(tag)>(a, static_cast<cudaStream_t>(p.stream));
  });
}

void softmax_bwd(const SoftmaxProblem& p) {
  const softmax::Args a = make_args(p, false);
  if (a.rows == 0 || a.s_kv == 0) return;
  by_dtype(p.dtype, "y", [&](auto tag) {
    softmax::launch_bwd<decltype(tag)>(a, static_cast<cudaStream_t>(p.stream));
  });
}

}  // namespace cuda
}  // namespace pte
