// Paddle custom op pte_attn_bwd_step: the fused attention backward (pte_attn_bwd) as an op of its
// own, for context parallelism (paddle_te/distributed). A ring step's backward recomputes the
// probabilities of its keys from the *final* output and lse of the whole ring (so the gradients
// of every step are those of the full softmax), which the registered grad op of pte_fused_attn
// cannot be asked to do: Paddle's autograd calls it only with the forward's own out and lse.
// Attributes as pte_fused_attn's, plus nothing: the step's (seed, offset) comes in seed_offset.
#include <string>
#include <vector>

#include "paddle/attn_params.h"
#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

// A ring step is bshd or sbhd (its lse is sliced as [b, h, s_q]) and expresses the causality of
// a chunk pair as a window, so it takes the mask types without a bottom-right variant. Other
// words are refused here; fill_attn_params parses the rest.
void check_step_attrs(const AttnAttrs& a) {
  if (a.qkv_format != "bshd" && a.qkv_format != "sbhd")
    PTE_OP_THROW("[paddle_te:invalid_argument] qkv_format=\"", a.qkv_format,
                 "\": allowed \"bshd\", \"sbhd\"");
  const std::string& m = a.mask_type;
  if (m != "no_mask" && m != "padding" && m != "causal" && m != "padding_causal")
    PTE_OP_THROW("[paddle_te:invalid_argument] mask_type=\"", m,
                 "\": allowed \"no_mask\", \"padding\", \"causal\", \"padding_causal\"");
}

std::vector<paddle::Tensor> AttnBwdStep(
    const paddle::Tensor& q,      // [b, s_q, h, d] | [s_q, b, h, d]
    const paddle::Tensor& k,      // [b, s_kv, h_kv, d] | ...
    const paddle::Tensor& v,      // [b, s_kv, h_kv, d_v] | ...
    const paddle::Tensor& out,    // the final output over all keys, like q with head dim d_v
    const paddle::Tensor& lse,    // float32 [b, h, s_q]: the final lse over all keys
    const paddle::Tensor& d_out,  // like out
    const paddle::optional<paddle::Tensor>& cu_seqlens_q,   // int32 [b+1]
    const paddle::optional<paddle::Tensor>& cu_seqlens_kv,  // int32 [b+1]
    const paddle::Tensor& seed_offset,                      // int64 [2] = {seed, offset}
    const std::string& qkv_format, const std::string& mask_type, const std::string& backend,
    int64_t max_seqlen_q, int64_t max_seqlen_kv, int window_left, int window_right,
    const std::string& softmax_scale, float dropout, bool deterministic) {
  const AttnAttrs a{qkv_format,  mask_type,    backend,       max_seqlen_q, max_seqlen_kv,
                    window_left, window_right, softmax_scale, dropout,      deterministic};
  check_step_attrs(a);
  pte_attn_params_t p;
  paddle::Tensor seed_host;
  fill_attn_params(&p, a, q, cu_seqlens_q, cu_seqlens_kv, seed_offset, &seed_host);
  p.lse = to_pte(lse);
  return attn_backward(&p, q, k, v, out, d_out, "pte_attn_bwd_step");
}

std::vector<std::vector<int64_t>> AttnBwdStepInferShape(
    const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
    const std::vector<int64_t>& out, const std::vector<int64_t>& lse,
    const std::vector<int64_t>& d_out, const paddle::optional<std::vector<int64_t>>& cu_seqlens_q,
    const paddle::optional<std::vector<int64_t>>& cu_seqlens_kv,
    const std::vector<int64_t>& seed_offset) {
  return {q, k, v};
}

std::vector<paddle::DataType> AttnBwdStepInferDtype(
    const paddle::DataType& q, const paddle::DataType& k, const paddle::DataType& v,
    const paddle::DataType& out, const paddle::DataType& lse, const paddle::DataType& d_out,
    const paddle::optional<paddle::DataType>& cu_seqlens_q,
    const paddle::optional<paddle::DataType>& cu_seqlens_kv, const paddle::DataType& seed_offset) {
  return {q, k, v};
}

}  // namespace
}  // namespace pte_paddle

PD_BUILD_OP(pte_attn_bwd_step)
    .Inputs({"q", "k", "v", "out", "lse", "d_out", paddle::Optional("cu_seqlens_q"),
             paddle::Optional("cu_seqlens_kv"), "seed_offset"})
    .Outputs({"d_q", "d_k", "d_v"})
    .Attrs(pte_paddle::attn_attr_decls())
    .SetKernelFn(PD_KERNEL(pte_paddle::AttnBwdStep))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::AttnBwdStepInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::AttnBwdStepInferDtype));
