// Paddle custom op pte_attn_bwd_step: the fused attention backward (pte_attn_bwd) as an op of its
// own, for context parallelism (paddle_te/distributed). A ring step's backward recomputes the
// probabilities of its keys from the *final* output and lse of the whole ring (so the gradients
// of every step are those of the full softmax), which the registered grad op of pte_fused_attn
// cannot be asked to do: Paddle's autograd calls it only with the forward's own out and lse.
// Attributes as pte_fused_attn's, plus nothing: the step's (seed, offset) comes in seed_offset.
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

pte_qkv_format_t step_format(const std::string& s) {
  if (s == "bshd") return PTE_QKV_BSHD;
  if (s == "sbhd") return PTE_QKV_SBHD;
  PD_THROW("[paddle_te:invalid_argument] qkv_format=\"", s, "\": allowed \"bshd\", \"sbhd\"");
}

// The mask types a ring step uses (causality of a chunk pair is expressed as a window).
pte_mask_type_t step_mask(const std::string& s) {
  if (s == "no_mask") return PTE_MASK_NO_MASK;
  if (s == "padding") return PTE_MASK_PADDING;
  if (s == "causal") return PTE_MASK_CAUSAL;
  if (s == "padding_causal") return PTE_MASK_PADDING_CAUSAL;
  PD_THROW("[paddle_te:invalid_argument] mask_type=\"", s,
           "\": allowed \"no_mask\", \"padding\", \"causal\", \"padding_causal\"");
}

pte_backend_t step_backend(const std::string& s) {
  if (s == "auto") return PTE_BACKEND_AUTO;
  if (s == "flash") return PTE_BACKEND_FLASH;
  if (s == "cudnn") return PTE_BACKEND_CUDNN;
  if (s == "cpu") return PTE_BACKEND_CPU;
  PD_THROW("[paddle_te:invalid_argument] backend=\"", s,
           "\": allowed \"auto\", \"flash\", \"cudnn\", \"cpu\"");
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
    const paddle::Tensor& seed_offset,                      // int64 [2], read on the host
    const std::string& qkv_format, const std::string& mask_type, const std::string& backend,
    int64_t max_seqlen_q, int64_t max_seqlen_kv, int window_left, int window_right,
    const std::string& softmax_scale, float dropout, bool deterministic) {
  const bool cast = needs_fp32_on_cpu(q);
  const paddle::Tensor qc = to_compute(q, cast), kc = to_compute(k, cast),
                       vc = to_compute(v, cast), oc = to_compute(out, cast),
                       doc = to_compute(d_out, cast);
  paddle::Tensor d_q = paddle::empty(qc.shape(), qc.dtype(), q.place());
  paddle::Tensor d_k = paddle::empty(kc.shape(), kc.dtype(), k.place());
  paddle::Tensor d_v = paddle::empty(vc.shape(), vc.dtype(), v.place());

  pte_attn_params_t p;
  pte_attn_params_init(&p);
  p.q = to_pte(qc);
  p.k = to_pte(kc);
  p.v = to_pte(vc);
  p.out = to_pte(oc);
  p.lse = to_pte(lse);
  p.d_out = to_pte(doc);
  p.d_q = to_pte(d_q);
  p.d_k = to_pte(d_k);
  p.d_v = to_pte(d_v);
  p.cu_seqlens_q = to_pte(cu_seqlens_q);
  p.cu_seqlens_kv = to_pte(cu_seqlens_kv);
  p.max_seqlen_q = max_seqlen_q;
  p.max_seqlen_kv = max_seqlen_kv;
  p.qkv_format = step_format(qkv_format);
  p.mask_type = step_mask(mask_type);
  p.window_left = window_left;
  p.window_right = window_right;
  p.softmax_scale = parse_scale(softmax_scale, "softmax_scale");
  p.dropout = dropout;
  p.deterministic = deterministic ? 1 : 0;
  p.backend = step_backend(backend);
  p.stream = stream_of(q);
  PD_CHECK(seed_offset.dtype() == paddle::DataType::INT64 && seed_offset.numel() == 2,
           "[paddle_te:invalid_argument] seed_offset: must be an int64 tensor of 2 elements");
  paddle::Tensor so_host;
  if (on_gpu(q) && on_gpu(seed_offset)) {
    p.seed_offset_device = seed_offset.data<int64_t>();
  } else {
    so_host = on_gpu(seed_offset) ? seed_offset.copy_to(paddle::CPUPlace(), true) : seed_offset;
    p.seed = static_cast<uint64_t>(so_host.data<int64_t>()[0]);
    p.offset = static_cast<uint64_t>(so_host.data<int64_t>()[1]);
  }
  size_t bytes = 0;
  check_status(pte_attn_bwd_workspace_size(&p, &bytes), "pte_attn_bwd_step");
  paddle::Tensor ws = workspace(bytes, q.place());
  p.workspace = bytes ? ws.data() : nullptr;
  p.workspace_size = bytes;
  check_status(pte_attn_bwd(&p), "pte_attn_bwd_step");
  if (cast) {
    d_q = d_q.cast(q.dtype());
    d_k = d_k.cast(k.dtype());
    d_v = d_v.cast(v.dtype());
  }
  return {d_q, d_k, d_v};
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
    .Attrs({"qkv_format: std::string", "mask_type: std::string", "backend: std::string",
            "max_seqlen_q: int64_t", "max_seqlen_kv: int64_t", "window_left: int",
            "window_right: int", "softmax_scale: std::string", "dropout: float",
            "deterministic: bool"})
    .SetKernelFn(PD_KERNEL(pte_paddle::AttnBwdStep))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::AttnBwdStepInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::AttnBwdStepInferDtype));
