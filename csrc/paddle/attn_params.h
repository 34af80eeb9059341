// Paddle attributes and tensors -> pte_attn_params_t, shared by the attention ops: pte_fused_attn
// and its grad op (attention_op.cc) and pte_attn_bwd_step (attn_bwd_step_op.cc), which declare
// the same attributes in the same order.
#pragma once

#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {

// The attribute declarations of the attention ops, in AttnAttrs' order (InferShape takes a
// prefix of the list positionally, so the order matters).
inline std::vector<std::string> attn_attr_decls() {
  return {"qkv_format: std::string", "mask_type: std::string", "backend: std::string",
          "max_seqlen_q: int64_t", "max_seqlen_kv: int64_t", "window_left: int",
          "window_right: int", "softmax_scale: std::string", "dropout: float",
          "deterministic: bool"};
}

// The attributes of the attention ops, as the kernels receive them.
struct AttnAttrs {
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

// Initialise the params and fill the parts every attention call shares: sequence lengths,
// layout, mask, window, scale, dropout stream, backend, stream. `seed_offset_host` keeps the host
// copy of seed_offset alive when one is made.
inline void fill_attn_params(pte_attn_params_t* p, const AttnAttrs& a, const paddle::Tensor& q,
                             const paddle::optional<paddle::Tensor>& cu_seqlens_q,   // int32 [b+1]
                             const paddle::optional<paddle::Tensor>& cu_seqlens_kv,  // int32 [b+1]
                             const paddle::Tensor& seed_offset,                      // int64 [2]
                             paddle::Tensor* seed_offset_host) {
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
  PTE_OP_CHECK(seed_offset.dtype() == paddle::DataType::INT64 && seed_offset.numel() == 2,
               "[paddle_te:invalid_argument] seed_offset: must be an int64 tensor of 2 "
               "elements, got ", phi::DataTypeToString(seed_offset.dtype()), " with ",
               seed_offset.numel(), " elements");
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

// The backward of both ops, once `p` is filled (fill_attn_params, lse and any FlashMask bounds):
// d_q, d_k, d_v of q, k, v. On the CPU, float16/bfloat16 are computed in float32 and the
// gradients cast back.
inline std::vector<paddle::Tensor> attn_backward(
    pte_attn_params_t* p, const paddle::Tensor& q, const paddle::Tensor& k,
    const paddle::Tensor& v,
    const paddle::Tensor& out,    // like q with head dim d_v
    const paddle::Tensor& d_out,  // like out
    const char* op) {
  const bool cast = needs_fp32_on_cpu(q);
  const paddle::Tensor qc = to_compute(q, cast), kc = to_compute(k, cast),
                       vc = to_compute(v, cast), oc = to_compute(out, cast),
                       doc = to_compute(d_out, cast);
  paddle::Tensor d_q = paddle::empty(qc.shape(), qc.dtype(), q.place());
  paddle::Tensor d_k = paddle::empty(kc.shape(), kc.dtype(), k.place());
  paddle::Tensor d_v = paddle::empty(vc.shape(), vc.dtype(), v.place());
  p->q = to_pte(qc);
  p->k = to_pte(kc);
  p->v = to_pte(vc);
  p->out = to_pte(oc);
  p->d_out = to_pte(doc);
  p->d_q = to_pte(d_q);
  p->d_k = to_pte(d_k);
  p->d_v = to_pte(d_v);

  run_with_workspace(p, pte_attn_bwd_workspace_size, pte_attn_bwd, q.place(), op);

  if (cast) {
    d_q = d_q.cast(q.dtype());
    d_k = d_k.cast(k.dtype());
    d_v = d_v.cast(v.dtype());
  }
  return {d_q, d_k, d_v};
}

}  // namespace pte_paddle
