// Paddle custom op pte_attn_merge: Paddle tensors -> pte_merge_params_t -> pte_attn_merge.
// Forward only: context parallelism (paddle_te/distributed) merges partial results inside its own
// PyLayer, whose backward recomputes each step from the final output and lse, so no gradient
// ever flows through a merge.
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

std::vector<paddle::Tensor> AttnMergeForward(const paddle::Tensor& out_a,  // [b, s, h, d] | ...
                                             const paddle::Tensor& lse_a,  // float32 [b, h, s]
                                             const paddle::Tensor& out_b,  // like out_a
                                             const paddle::Tensor& lse_b,  // like lse_a
                                             const std::string& qkv_format) {
  // CPU: float16/bfloat16 are merged in float32 (SPEC §3's rule for the CPU kernels).
  const bool cast_a = needs_fp32_on_cpu(out_a);
  const paddle::Tensor oa = to_compute(out_a, cast_a), ob = to_compute(out_b, needs_fp32_on_cpu(out_b));
  paddle::Tensor out = paddle::empty(oa.shape(), oa.dtype(), out_a.place());
  paddle::Tensor lse = paddle::empty(lse_a.shape(), paddle::DataType::FLOAT32, out_a.place());
  pte_merge_params_t p;
  pte_merge_params_init(&p);
  p.out_a = to_pte(oa);
  p.lse_a = to_pte(lse_a);
  p.out_b = to_pte(ob);
  p.lse_b = to_pte(lse_b);
  p.out = to_pte(out);
  p.lse = to_pte(lse);
  p.qkv_format = parse_word(pte_qkv_format_parse, qkv_format);
  p.stream = stream_of(out_a);
  check_status(pte_attn_merge(&p), "pte_attn_merge");
  if (cast_a) out = out.cast(out_a.dtype());
  return {out, lse};
}

std::vector<std::vector<int64_t>> AttnMergeInferShape(const std::vector<int64_t>& out_a,
                                                      const std::vector<int64_t>& lse_a,
                                                      const std::vector<int64_t>& out_b,
                                                      const std::vector<int64_t>& lse_b) {
  return {out_a, lse_a};
}

std::vector<paddle::DataType> AttnMergeInferDtype(const paddle::DataType& out_a,
                                                  const paddle::DataType& lse_a,
                                                  const paddle::DataType& out_b,
                                                  const paddle::DataType& lse_b) {
  return {out_a, paddle::DataType::FLOAT32};
}

}  // namespace
}  // namespace pte_paddle

PD_BUILD_OP(pte_attn_merge)
    .Inputs({"out_a", "lse_a", "out_b", "lse_b"})
    .Outputs({"out", "lse"})
    .Attrs({"qkv_format: std::string"})
    .SetKernelFn(PD_KERNEL(pte_paddle::AttnMergeForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::AttnMergeInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::AttnMergeInferDtype));
