// Paddle custom ops pte_fused_attn (forward) and its grad op: Paddle tensors -> pte_attn_params_t
// -> pte_attn_fwd / pte_attn_bwd. Argument policy (defaults, window policy, dropout on/off,
// max_seqlen derivation) lives in paddle_te/ops.py; every shape/value check lives in the core.
#include <cstring>
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

// The attributes of both ops, in declaration order.
struct Attrs {
  std::string qkv_format;
  std::string mask_type;
  std::string backend;
  int64_t max_seqlen_q;
  int64_t max_seqlen_kv;
  int window_left;
  int window_right;
  std::string softmax_scale;  // decimal, see parse_scale
  float dropout;
  bool deterministic;
};

// Fill the parts of the params shared by forward and backward: layout, mask, window, scale,
// dropout stream, backend, stream.
void fill_common(pte_attn_params_t* p, const Attrs& a, const paddle::Tensor& q,
                 const paddle::optional<paddle::Tensor>& cu_seqlens_q,
                 const paddle::optional<paddle::Tensor>& cu_seqlens_kv,
                 const paddle::Tensor& seed_offset, paddle::Tensor* seed_offset_host) {
  pte_attn_params_init(p);
  p->cu_seqlens_q = to_pte(cu_seqlens_q);
  p->cu_seqlens_kv = to_pte(cu_seqlens_kv);
  p->max_seqlen_q = a.max_seqlen_q;
  p->max_seqlen_kv = a.max_seqlen_kv;
  p->qkv_format = parse_word(pte_qkv_format_parse, a.qkv_format);
  p->mask_type = parse_word(pte_mask_type_parse, a.mask_type,
                            " (\"arbitrary\" runs through the unfused path)");
  p->window_left = a.window_left;
  p->window_right = a.window_right;
  p->softmax_scale = parse_scale(a.softmax_scale, "softmax_scale");
  p->dropout = a.dropout;
  p->deterministic = a.deterministic ? 1 : 0;
  p->backend = parse_word(pte_backend_parse, a.backend);
  p->stream = stream_of(q);

  // seed_offset: int64 [2] = {seed, offset}, drawn from Paddle's generator in Python. On the GPU
  // the kernels read it on the device (no host sync); on the CPU we read the two values.
  PD_CHECK(seed_offset.dtype() == paddle::DataType::INT64 && seed_offset.numel() == 2,
           "[paddle_te:invalid_argument] seed_offset: must be an int64 tensor of 2 elements, got ",
           phi::DataTypeToString(seed_offset.dtype()), " with ", seed_offset.numel(), " elements");
  if (on_gpu(q) && on_gpu(seed_offset)) {
    p->seed_offset_device = seed_offset.data<int64_t>();
  } else {
    *seed_offset_host = on_gpu(seed_offset) ? seed_offset.copy_to(paddle::CPUPlace(), true)
                                            : seed_offset;
    const int64_t* so = seed_offset_host->data<int64_t>();
    p->seed = static_cast<uint64_t>(so[0]);
    p->offset = static_cast<uint64_t>(so[1]);
  }
}

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

// Allocate the workspace the call needs on `place` (Paddle's allocator, on the op's stream) and
// run the forward or the backward.
void run_with_workspace(pte_attn_params_t* p, bool backward, const paddle::Place& place,
                        const char* op) {
  size_t bytes = 0;
  check_status(backward ? pte_attn_bwd_workspace_size(p, &bytes)
                        : pte_attn_fwd_workspace_size(p, &bytes),
               op);
  paddle::Tensor ws = workspace(bytes, place);
  p->workspace = bytes ? ws.data() : nullptr;
  p->workspace_size = bytes;
  check_status(backward ? pte_attn_bwd(p) : pte_attn_fwd(p), op);
}

std::vector<paddle::Tensor> FusedAttnForward(
    const paddle::Tensor& q,                               // bshd [b, s_q, h, d] | ...
    const paddle::Tensor& k,                               // [b, s_kv, h_kv, d] | ...
    const paddle::Tensor& v,                               // [b, s_kv, h_kv, d_v] | ...
    const paddle::optional<paddle::Tensor>& cu_seqlens_q,  // int32 [b+1]
    const paddle::optional<paddle::Tensor>& cu_seqlens_kv, // int32 [b+1]
    const paddle::Tensor& seed_offset,                     // int64 [2]
    const std::string& qkv_format, const std::string& mask_type, const std::string& backend,
    int64_t max_seqlen_q, int64_t max_seqlen_kv, int window_left, int window_right,
    const std::string& softmax_scale, float dropout, bool deterministic) {
  const Attrs a{qkv_format,  mask_type,    backend,       max_seqlen_q, max_seqlen_kv,
                window_left, window_right, softmax_scale, dropout,      deterministic};
  const bool cast = needs_fp32_on_cpu(q);
  const paddle::Tensor qc = to_compute(q, cast), kc = to_compute(k, cast),
                       vc = to_compute(v, cast);

  paddle::Tensor out = paddle::empty(out_shape(qc.shape(), vc.shape()), qc.dtype(), q.place());
  paddle::Tensor lse =
      paddle::empty(lse_shape(qc.shape(), qkv_format, 0), paddle::DataType::FLOAT32, q.place());

  pte_attn_params_t p;
  paddle::Tensor seed_host;
  fill_common(&p, a, q, cu_seqlens_q, cu_seqlens_kv, seed_offset, &seed_host);
  p.q = to_pte(qc);
  p.k = to_pte(kc);
  p.v = to_pte(vc);
  p.out = to_pte(out);
  p.lse = to_pte(lse);

  run_with_workspace(&p, /*backward=*/false, q.place(), "pte_fused_attn");

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
  const Attrs a{qkv_format,  mask_type,    backend,       max_seqlen_q, max_seqlen_kv,
                window_left, window_right, softmax_scale, dropout,      deterministic};
  const bool cast = needs_fp32_on_cpu(q);
  const paddle::Tensor qc = to_compute(q, cast), kc = to_compute(k, cast),
                       vc = to_compute(v, cast), oc = to_compute(out, cast),
                       doc = to_compute(d_out, cast);

  paddle::Tensor d_q = paddle::empty(qc.shape(), qc.dtype(), q.place());
  paddle::Tensor d_k = paddle::empty(kc.shape(), kc.dtype(), k.place());
  paddle::Tensor d_v = paddle::empty(vc.shape(), vc.dtype(), v.place());

  pte_attn_params_t p;
  paddle::Tensor seed_host;
  fill_common(&p, a, q, cu_seqlens_q, cu_seqlens_kv, seed_offset, &seed_host);
  p.q = to_pte(qc);
  p.k = to_pte(kc);
  p.v = to_pte(vc);
  p.out = to_pte(oc);
  p.lse = to_pte(lse);
  p.d_out = to_pte(doc);
  p.d_q = to_pte(d_q);
  p.d_k = to_pte(d_k);
  p.d_v = to_pte(d_v);

  run_with_workspace(&p, /*backward=*/true, q.place(), "pte_fused_attn_grad");

  if (cast) {
    d_q = d_q.cast(q.dtype());
    d_k = d_k.cast(k.dtype());
    d_v = d_v.cast(v.dtype());
  }
  return {d_q, d_k, d_v};
}

std::vector<std::vector<int64_t>> FusedAttnInferShape(
    const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
    const paddle::optional<std::vector<int64_t>>& cu_seqlens_q,
    const paddle::optional<std::vector<int64_t>>& cu_seqlens_kv,
    const std::vector<int64_t>& seed_offset, const std::string& qkv_format) {
  return {out_shape(q, v), lse_shape(q, qkv_format, -1)};
}

std::vector<paddle::DataType> FusedAttnInferDtype(
    const paddle::DataType& q, const paddle::DataType& k, const paddle::DataType& v,
    const paddle::optional<paddle::DataType>& cu_seqlens_q,
    const paddle::optional<paddle::DataType>& cu_seqlens_kv, const paddle::DataType& seed_offset) {
  return {q, paddle::DataType::FLOAT32};
}

// Grad op: shapes and dtypes of q, k, v. No attributes (PADDLE_NOTES: a grad InferShapeFn with
// attributes breaks).
std::vector<std::vector<int64_t>> FusedAttnGradInferShape(
    const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
    const std::vector<int64_t>& out, const std::vector<int64_t>& lse,
    const std::vector<int64_t>& d_out, const paddle::optional<std::vector<int64_t>>& cu_seqlens_q,
    const paddle::optional<std::vector<int64_t>>& cu_seqlens_kv,
    const std::vector<int64_t>& seed_offset) {
  return {q, k, v};
}

std::vector<paddle::DataType> FusedAttnGradInferDtype(
    const paddle::DataType& q, const paddle::DataType& k, const paddle::DataType& v,
    const paddle::DataType& out, const paddle::DataType& lse, const paddle::DataType& d_out,
    const paddle::optional<paddle::DataType>& cu_seqlens_q,
    const paddle::optional<paddle::DataType>& cu_seqlens_kv, const paddle::DataType& seed_offset) {
  return {q, k, v};
}

}  // namespace
}  // namespace pte_paddle

// Attribute order matters: InferShape takes a prefix of the attribute list positionally.
PD_BUILD_OP(pte_fused_attn)
    .Inputs({"q", "k", "v", paddle::Optional("cu_seqlens_q"), paddle::Optional("cu_seqlens_kv"),
             "seed_offset"})
    .Outputs({"out", "lse"})
    .Attrs({"qkv_format: std::string", "mask_type: std::string", "backend: std::string",
            "max_seqlen_q: int64_t", "max_seqlen_kv: int64_t", "window_left: int",
            "window_right: int", "softmax_scale: std::string", "dropout: float",
            "deterministic: bool"})
    .SetKernelFn(PD_KERNEL(pte_paddle::FusedAttnForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::FusedAttnInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::FusedAttnInferDtype));

PD_BUILD_GRAD_OP(pte_fused_attn)
    .Inputs({"q", "k", "v", "out", "lse", paddle::Grad("out"), paddle::Optional("cu_seqlens_q"),
             paddle::Optional("cu_seqlens_kv"), "seed_offset"})
    .Outputs({paddle::Grad("q"), paddle::Grad("k"), paddle::Grad("v")})
    .Attrs({"qkv_format: std::string", "mask_type: std::string", "backend: std::string",
            "max_seqlen_q: int64_t", "max_seqlen_kv: int64_t", "window_left: int",
            "window_right: int", "softmax_scale: std::string", "dropout: float",
            "deterministic: bool"})
    .SetKernelFn(PD_KERNEL(pte_paddle::FusedAttnBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::FusedAttnGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::FusedAttnGradInferDtype));
