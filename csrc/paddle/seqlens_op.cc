// Paddle custom op pte_mask_to_cu_seqlens: right-padding masks -> int32 cu_seqlens (SPEC §3).
// The kernel never fails on a mask that is not right padding (on the GPU that would need a host
// sync); it writes the verdict to `valid` and paddle_te/ops.py raises in dygraph.
// No grad op: the inputs are bool and the outputs integer.
#include <vector>

#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

std::vector<paddle::Tensor> MaskToCuSeqlens(
    const paddle::Tensor& mask,                        // bool [b,1,1,s] | [b,1,1,s_q] | [b,1,s_q,s_kv]
    const paddle::optional<paddle::Tensor>& mask_kv) {  // bool [b,1,1,s_kv] or None
  const int64_t b = mask.shape().empty() ? 0 : mask.shape()[0];
  paddle::Tensor cu_q = paddle::empty({b + 1}, paddle::DataType::INT32, mask.place());
  paddle::Tensor cu_kv = paddle::empty({b + 1}, paddle::DataType::INT32, mask.place());
  paddle::Tensor valid = paddle::empty({1}, paddle::DataType::INT32, mask.place());

  pte_seqlens_params_t p;
  pte_seqlens_params_init(&p);
  p.mask = to_pte(mask);
  p.mask_kv = to_pte(mask_kv);
  p.cu_seqlens_q = to_pte(cu_q);
  p.cu_seqlens_kv = to_pte(cu_kv);
  p.valid = to_pte(valid);
  p.stream = stream_of(mask);
  check_status(pte_mask_to_cu_seqlens(&p), "pte_mask_to_cu_seqlens");
  return {cu_q, cu_kv, valid};
}

std::vector<std::vector<int64_t>> MaskToCuSeqlensInferShape(
    const std::vector<int64_t>& mask, const paddle::optional<std::vector<int64_t>>& mask_kv) {
  const int64_t b = mask.empty() ? -1 : mask[0];
  const int64_t n = b < 0 ? -1 : b + 1;
  return {{n}, {n}, {1}};
}

std::vector<paddle::DataType> MaskToCuSeqlensInferDtype(
    const paddle::DataType& mask, const paddle::optional<paddle::DataType>& mask_kv) {
  return {paddle::DataType::INT32, paddle::DataType::INT32, paddle::DataType::INT32};
}

}  // namespace
}  // namespace pte_paddle

PD_BUILD_OP(pte_mask_to_cu_seqlens)
    .Inputs({"mask", paddle::Optional("mask_kv")})
    .Outputs({"cu_seqlens_q", "cu_seqlens_kv", "valid"})
    .SetKernelFn(PD_KERNEL(pte_paddle::MaskToCuSeqlens))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::MaskToCuSeqlensInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::MaskToCuSeqlensInferDtype));
