// Paddle custom ops for the masked softmax family (SPEC §3), each with a grad op:
//   pte_scaled_softmax(x)                           softmax(scale * x)
//   pte_scaled_masked_softmax(x, mask)              bool mask [b or 1, 1, s_q, s_kv], True = out
//   pte_scaled_upper_triang_masked_softmax(x)       causal, top-left
//   pte_scaled_aligned_causal_masked_softmax(x)     causal, bottom-right
// x, y: [b, h, s_q, s_kv]. The backward needs only y (masked elements of y are 0), so the mask
// is not an input of the grad op and gets no gradient.
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

paddle::Tensor softmax_fwd(const paddle::Tensor& x, const paddle::Tensor* mask, double scale,
                           pte_softmax_causal_t causal, const char* op) {
  const bool cast = needs_fp32_on_cpu(x);
  const paddle::Tensor xc = to_compute(x, cast);
  paddle::Tensor y = paddle::empty(xc.shape(), xc.dtype(), x.place());

  pte_softmax_params_t p;
  pte_softmax_params_init(&p);
  p.x = to_pte(xc);
  p.y = to_pte(y);
  if (mask != nullptr) p.mask = to_pte(*mask);
  p.scale = scale;
  p.causal = causal;
  p.stream = stream_of(x);
  check_status(pte_softmax_fwd(&p), op);
  return cast ? y.cast(x.dtype()) : y;
}

paddle::Tensor softmax_bwd(const paddle::Tensor& y, const paddle::Tensor& d_y, double scale,
                           const char* op) {
  // Grad(y) is uninitialized when y received no gradient: the input gradient is then zero.
  if (!d_y.initialized()) return paddle::zeros(y.shape(), y.dtype(), y.place());
  const bool cast = needs_fp32_on_cpu(y);
  const paddle::Tensor yc = to_compute(y, cast), dyc = to_compute(d_y, cast);
  paddle::Tensor d_x = paddle::empty(yc.shape(), yc.dtype(), y.place());

  pte_softmax_params_t p;
  pte_softmax_params_init(&p);
  p.y = to_pte(yc);
  p.d_y = to_pte(dyc);
  p.d_x = to_pte(d_x);
  p.scale = scale;
  p.stream = stream_of(y);
  check_status(pte_softmax_bwd(&p), op);
  return cast ? d_x.cast(y.dtype()) : d_x;
}

// `scale` is a decimal string (parse_scale in op_utils.h: PIR has no double attribute).
std::vector<paddle::Tensor> ScaledSoftmaxForward(const paddle::Tensor& x,
                                                 const std::string& scale) {
  return {softmax_fwd(x, nullptr, parse_scale(scale, "scale"), PTE_SOFTMAX_NO_CAUSAL,
                      "pte_scaled_softmax")};
}

std::vector<paddle::Tensor> ScaledMaskedSoftmaxForward(const paddle::Tensor& x,
                                                       const paddle::Tensor& mask,
                                                       const std::string& scale) {
  return {softmax_fwd(x, &mask, parse_scale(scale, "scale"), PTE_SOFTMAX_NO_CAUSAL,
                      "pte_scaled_masked_softmax")};
}

std::vector<paddle::Tensor> UpperTriangSoftmaxForward(const paddle::Tensor& x,
                                                      const std::string& scale) {
  return {softmax_fwd(x, nullptr, parse_scale(scale, "scale"), PTE_SOFTMAX_CAUSAL_TOP_LEFT,
                      "pte_scaled_upper_triang_masked_softmax")};
}

std::vector<paddle::Tensor> AlignedCausalSoftmaxForward(const paddle::Tensor& x,
                                                        const std::string& scale) {
  return {softmax_fwd(x, nullptr, parse_scale(scale, "scale"), PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT,
                      "pte_scaled_aligned_causal_masked_softmax")};
}

std::vector<paddle::Tensor> SoftmaxBackward(const paddle::Tensor& y, const paddle::Tensor& d_y,
                                            const std::string& scale) {
  return {softmax_bwd(y, d_y, parse_scale(scale, "scale"), "pte_softmax_grad")};
}

std::vector<std::vector<int64_t>> SoftmaxInferShape(const std::vector<int64_t>& x) { return {x}; }

std::vector<paddle::DataType> SoftmaxInferDtype(const paddle::DataType& x) { return {x}; }

std::vector<std::vector<int64_t>> MaskedSoftmaxInferShape(const std::vector<int64_t>& x,
                                                          const std::vector<int64_t>& mask) {
  return {x};
}

std::vector<paddle::DataType> MaskedSoftmaxInferDtype(const paddle::DataType& x,
                                                      const paddle::DataType& mask) {
  return {x};
}

std::vector<std::vector<int64_t>> SoftmaxGradInferShape(const std::vector<int64_t>& y,
                                                        const std::vector<int64_t>& d_y) {
  return {y};
}

std::vector<paddle::DataType> SoftmaxGradInferDtype(const paddle::DataType& y,
                                                    const paddle::DataType& d_y) {
  return {y};
}

}  // namespace
}  // namespace pte_paddle

// One registration per op; the grad ops share SoftmaxBackward.
#define PTE_SOFTMAX_GRAD_OP(name)                                           \
  PD_BUILD_GRAD_OP(name)                                                    \
      .Inputs({"y", paddle::Grad("y")})                                     \
      .Outputs({paddle::Grad("x")})                                         \
      .Attrs({"scale: std::string"})                                       \
      .SetKernelFn(PD_KERNEL(pte_paddle::SoftmaxBackward))                  \
      .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::SoftmaxGradInferShape))   \
      .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::SoftmaxGradInferDtype))

PD_BUILD_OP(pte_scaled_softmax)
    .Inputs({"x"})
    .Outputs({"y"})
    .Attrs({"scale: std::string"})
    .SetKernelFn(PD_KERNEL(pte_paddle::ScaledSoftmaxForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::SoftmaxInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::SoftmaxInferDtype));
PTE_SOFTMAX_GRAD_OP(pte_scaled_softmax);

PD_BUILD_OP(pte_scaled_masked_softmax)
    .Inputs({"x", "mask"})
    .Outputs({"y"})
    .Attrs({"scale: std::string"})
    .SetKernelFn(PD_KERNEL(pte_paddle::ScaledMaskedSoftmaxForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::MaskedSoftmaxInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::MaskedSoftmaxInferDtype));
PTE_SOFTMAX_GRAD_OP(pte_scaled_masked_softmax);

PD_BUILD_OP(pte_scaled_upper_triang_masked_softmax)
    .Inputs({"x"})
    .Outputs({"y"})
    .Attrs({"scale: std::string"})
    .SetKernelFn(PD_KERNEL(pte_paddle::UpperTriangSoftmaxForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::SoftmaxInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::SoftmaxInferDtype));
PTE_SOFTMAX_GRAD_OP(pte_scaled_upper_triang_masked_softmax);

PD_BUILD_OP(pte_scaled_aligned_causal_masked_softmax)
    .Inputs({"x"})
    .Outputs({"y"})
    .Attrs({"scale: std::string"})
    .SetKernelFn(PD_KERNEL(pte_paddle::AlignedCausalSoftmaxForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::SoftmaxInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::SoftmaxInferDtype));
PTE_SOFTMAX_GRAD_OP(pte_scaled_aligned_causal_masked_softmax);
