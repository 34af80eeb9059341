// Paddle custom ops pte_fused_attn (forward) and its grad op: Paddle tensors -> pte_attn_params_t
// -> pte_attn_fwd / pte_attn_bwd. The optional startend_row_indices (FlashMask, SPEC §9) has no
// gradient (PADDLE_NOTES: optional inputs with gradients break under PIR). Argument policy (defaults, window policy, dropout on/off,
// max_seqlen derivation) lives in paddle_te/ops.py; every shape/value check lives in the core.
#include <cstring>
#include <string>
#include <vector>

#include "paddle/attn_params.h"
#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

// out: q's shape with v's head dim. lse: float32 [b, h, s_q] (bshd/sbhd) or [h, t_q] (thd).
std::vector<int64_t> out_shape(const std::vector<int64_t>& q, const std::vector<int64_t>& v) {
  std::vector<int64_t> s = q;
  if (!s.empty() && !v.empty()) s.back() = v.back();
  return s;
}

// A q of the wrong rank gets `bad_rank` (-1 = unknown in InferShape, 0 = an empty tensor in the
// kernel): the core then rejects q with a message naming it.
std::vector<int64_t> lse_shape(const std::vector<int64_t>& q, const std::string& fmt,
                               int64_t bad_rank) {
  if (fmt == "thd") {
    if (q.size() == 3) return {q[1], q[0]};
  } else if (q.size() == 4) {
    return fmt == "sbhd" ? std::vector<int64_t>{q[1], q[2], q[0]}
                         : std::vector<int64_t>{q[0], q[2], q[1]};
  }
  return {bad_rank};
}

std::vector<paddle::Tensor> FusedAttnForward(
    const paddle::Tensor& q,                               // bshd [b, s_q, h, d] | ...
    const paddle::Tensor& k,                               // [b, s_kv, h_kv, d] | ...
    const paddle::Tensor& v,                               // [b, s_kv, h_kv, d_v] | ...
    const paddle::optional<paddle::Tensor>& cu_seqlens_q,  // int32 [b+1]
    const paddle::optional<paddle::Tensor>& cu_seqlens_kv, // int32 [b+1]
    const paddle::Tensor& seed_offset,                     // int64 [2]
    const paddle::optional<paddle::Tensor>& startend_row_indices,  // int32 [b, m, s_kv, C]
    const std::string& qkv_format, const std::string& mask_type, const std::string& backend,
    int64_t max_seqlen_q, int64_t max_seqlen_kv, int window_left, int window_right,
    const std::string& softmax_scale, float dropout, bool deterministic) {
  const AttnAttrs a{qkv_format,  mask_type,    backend,       max_seqlen_q, max_seqlen_kv,
                    window_left, window_right, softmax_scale, dropout,      deterministic};
  const bool cast = needs_fp32_on_cpu(q);
  const paddle::Tensor qc = to_compute(q, cast), kc = to_compute(k, cast),
                       vc = to_compute(v, cast);

  paddle::Tensor out = paddle::empty(out_shape(qc.shape(), vc.shape()), qc.dtype(), q.place());
  paddle::Tensor lse =
      paddle::empty(lse_shape(qc.shape(), qkv_format, 0), paddle::DataType::FLOAT32, q.place());

  pte_attn_params_t p;
  paddle::Tensor seed_host;
  fill_attn_params(&p, a, q, cu_seqlens_q, cu_seqlens_kv, seed_offset, &seed_host);
  p.q = to_pte(qc);
  p.k = to_pte(kc);
  p.v = to_pte(vc);
  p.out = to_pte(out);
  p.lse = to_pte(lse);
  p.startend_row_indices = to_pte(startend_row_indices);

  run_with_workspace(&p, pte_attn_fwd_workspace_size, pte_attn_fwd, q.place(), "pte_fused_attn");

  if (cast) out = out.cast(q.dtype());
  return {out, lse};
}

std::vector<paddle::Tensor> FusedAttnBackward(
    const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
    const paddle::Tensor& out,       // like q with head dim d_v
    const paddle::Tensor& lse,       // float32 [b, h, s_q] | [h, t_q]
    const paddle::Tensor& d_out,     // like out; uninitialized when out got no gradient
    const paddle::optional<paddle::Tensor>& cu_seqlens_q,
    const paddle::optional<paddle::Tensor>& cu_seqlens_kv, const paddle::Tensor& seed_offset,
    const paddle::optional<paddle::Tensor>& startend_row_indices,
    const std::string& qkv_format, const std::string& mask_type, const std::string& backend,
    int64_t max_seqlen_q, int64_t max_seqlen_kv, int window_left, int window_right,
    const std::string& softmax_scale, float dropout, bool deterministic) {
  // Only lse was used downstream (its gradient is not propagated): every gradient is zero.
  // Grad(out) is then an uninitialized tensor whose data() must not be touched.
  if (!d_out.initialized()) {
    return {paddle::zeros(q.shape(), q.dtype(), q.place()),
            paddle::zeros(k.shape(), k.dtype(), k.place()),
            paddle::zeros(v.shape(), v.dtype(), v.place())};
  }
  const AttnAttrs a{qkv_format,  mask_type,    backend,       max_seqlen_q, max_seqlen_kv,
                    window_left, window_right, softmax_scale, dropout,      deterministic};
  pte_attn_params_t p;
  paddle::Tensor seed_host;
  fill_attn_params(&p, a, q, cu_seqlens_q, cu_seqlens_kv, seed_offset, &seed_host);
  p.lse = to_pte(lse);
  p.startend_row_indices = to_pte(startend_row_indices);
  return attn_backward(&p, q, k, v, out, d_out, "pte_fused_attn_grad");
}

std::vector<std::vector<int64_t>> FusedAttnInferShape(
    const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
    const paddle::optional<std::vector<int64_t>>& cu_seqlens_q,
    const paddle::optional<std::vector<int64_t>>& cu_seqlens_kv,
    const std::vector<int64_t>& seed_offset,
    const paddle::optional<std::vector<int64_t>>& startend_row_indices,
    const std::string& qkv_format) {
  return {out_shape(q, v), lse_shape(q, qkv_format, -1)};
}

std::vector<paddle::DataType> FusedAttnInferDtype(
    const paddle::DataType& q, const paddle::DataType& k, const paddle::DataType& v,
    const paddle::optional<paddle::DataType>& cu_seqlens_q,
    const paddle::optional<paddle::DataType>& cu_seqlens_kv, const paddle::DataType& seed_offset,
    const paddle::optional<paddle::DataType>& startend_row_indices) {
  return {q, paddle::DataType::FLOAT32};
}

// Grad op: shapes and dtypes of q, k, v. No attributes (PADDLE_NOTES: a grad InferShapeFn with
// attributes breaks).
std::vector<std::vector<int64_t>> FusedAttnGradInferShape(
    const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
    const std::vector<int64_t>& out, const std::vector<int64_t>& lse,
    const std::vector<int64_t>& d_out, const paddle::optional<std::vector<int64_t>>& cu_seqlens_q,
    const paddle::optional<std::vector<int64_t>>& cu_seqlens_kv,
    const std::vector<int64_t>& seed_offset,
    const paddle::optional<std::vector<int64_t>>& startend_row_indices) {
  return {q, k, v};
}

std::vector<paddle::DataType> FusedAttnGradInferDtype(
    const paddle::DataType& q, const paddle::DataType& k, const paddle::DataType& v,
    const paddle::DataType& out, const paddle::DataType& lse, const paddle::DataType& d_out,
    const paddle::optional<paddle::DataType>& cu_seqlens_q,
    const paddle::optional<paddle::DataType>& cu_seqlens_kv, const paddle::DataType& seed_offset,
    const paddle::optional<paddle::DataType>& startend_row_indices) {
  return {q, k, v};
}

}  // namespace
}  // namespace pte_paddle

// Attribute order matters: InferShape takes a prefix of the attribute list positionally.
PD_BUILD_OP(pte_fused_attn)
    .Inputs({"q", "k", "v", paddle::Optional("cu_seqlens_q"), paddle::Optional("cu_seqlens_kv"),
             "seed_offset", paddle::Optional("startend_row_indices")})
    .Outputs({"out", "lse"})
    .Attrs(pte_paddle::attn_attr_decls())
    .SetKernelFn(PD_KERNEL(pte_paddle::FusedAttnForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::FusedAttnInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::FusedAttnInferDtype));

PD_BUILD_GRAD_OP(pte_fused_attn)
    .Inputs({"q", "k", "v", "out", "lse", paddle::Grad("out"), paddle::Optional("cu_seqlens_q"),
             paddle::Optional("cu_seqlens_kv"), "seed_offset",
             paddle::Optional("startend_row_indices")})
    .Outputs({paddle::Grad("q"), paddle::Grad("k"), paddle::Grad("v")})
    .Attrs(pte_paddle::attn_attr_decls())
    .SetKernelFn(PD_KERNEL(pte_paddle::FusedAttnBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::FusedAttnGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::FusedAttnGradInferDtype));
