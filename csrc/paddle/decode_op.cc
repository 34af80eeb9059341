// Paddle custom op pte_decode_attn (SPEC §10): Paddle tensors -> pte_decode_params_t ->
// pte_decode_attn. The caches are in-place inputs (SetInplaceMap): k_new / v_new are written into
// them and the op's k_cache_out / v_cache_out are the same tensors, so static graphs and saved
// models see the write. Inference only: no grad op. Argument policy (defaults, window policy,
// dygraph value checks) lives in paddle_te/ops.py; every shape/dtype check lives in the core.
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/op_utils.h"

namespace pte_paddle {
namespace {

pte_backend_t parse_decode_backend(const std::string& s) {
  if (s == "auto") return PTE_BACKEND_AUTO;
  if (s == "flash") return PTE_BACKEND_FLASH;
  if (s == "cpu") return PTE_BACKEND_CPU;
  PTE_OP_THROW("[paddle_te:invalid_argument] backend=\"", s,
               "\": decode_attn takes \"auto\", \"flash\", \"cpu\"");
}

// out [b, s_q, h, d_v]; lse float32 [b, h, s_q]. A q or cache of the wrong rank gets `bad`
// (-1 in InferShape, 0 in the kernel, where the core then names the argument).
std::vector<int64_t> out_shape(const std::vector<int64_t>& q, const std::vector<int64_t>& v,
                               int64_t bad) {
  if (q.size() != 4 || v.size() != 4) return {bad};
  return {q[0], q[1], q[2], v[3]};
}
std::vector<int64_t> lse_shape(const std::vector<int64_t>& q, int64_t bad) {
  if (q.size() != 4) return {bad};
  return {q[0], q[2], q[1]};
}

std::vector<paddle::Tensor> DecodeAttnForward(
    const paddle::Tensor& q,                           // [b, s_q, h, d]
    paddle::Tensor& k_cache,                           // [b, s_max, h_kv, d] | [pages, page, h_kv, d]
    paddle::Tensor& v_cache,                           // same with d_v
    const paddle::Tensor& cache_seqlens,               // int32 [b]
    const paddle::optional<paddle::Tensor>& k_new,     // [b, s_q, h_kv, d]
    const paddle::optional<paddle::Tensor>& v_new,     // [b, s_q, h_kv, d_v]
    const paddle::optional<paddle::Tensor>& block_table,  // int32 [b, pages_per_seq]
    const std::string& softmax_scale, int window_left, int num_splits,
    const std::string& backend) {
  paddle::Tensor out =
      paddle::empty(out_shape(q.shape(), v_cache.shape(), 0), q.dtype(), q.place());
  paddle::Tensor lse = paddle::empty(lse_shape(q.shape(), 0), paddle::DataType::FLOAT32, q.place());

  pte_decode_params_t p;
  pte_decode_params_init(&p);
  p.q = to_pte(q);
  p.k_cache = to_pte(k_cache);
  p.v_cache = to_pte(v_cache);
  p.cache_seqlens = to_pte(cache_seqlens);
  p.k_new = to_pte(k_new);
  p.v_new = to_pte(v_new);
  p.block_table = to_pte(block_table);
  p.out = to_pte(out);
  p.lse = to_pte(lse);
  p.softmax_scale = parse_scale(softmax_scale, "softmax_scale");
  p.window_left = window_left;
  p.window_right = 0;
  p.num_splits = num_splits;
  p.backend = parse_decode_backend(backend);
  p.stream = stream_of(q);

  run_with_workspace(&p, pte_decode_workspace_size, pte_decode_attn, q.place(), "pte_decode_attn");
  return {out, lse};
}

std::vector<std::vector<int64_t>> DecodeAttnInferShape(
    const std::vector<int64_t>& q, const std::vector<int64_t>& k_cache,
    const std::vector<int64_t>& v_cache, const std::vector<int64_t>& cache_seqlens,
    const paddle::optional<std::vector<int64_t>>& k_new,
    const paddle::optional<std::vector<int64_t>>& v_new,
    const paddle::optional<std::vector<int64_t>>& block_table) {
  return {out_shape(q, v_cache, -1), lse_shape(q, -1), k_cache, v_cache};
}

std::vector<paddle::DataType> DecodeAttnInferDtype(
    const paddle::DataType& q, const paddle::DataType& k_cache, const paddle::DataType& v_cache,
    const paddle::DataType& cache_seqlens, const paddle::optional<paddle::DataType>& k_new,
    const paddle::optional<paddle::DataType>& v_new,
    const paddle::optional<paddle::DataType>& block_table) {
  return {q, paddle::DataType::FLOAT32, k_cache, v_cache};
}

}  // namespace
}  // namespace pte_paddle

PD_BUILD_OP(pte_decode_attn)
    .Inputs({"q", "k_cache", "v_cache", "cache_seqlens", paddle::Optional("k_new"),
             paddle::Optional("v_new"), paddle::Optional("block_table")})
    .Outputs({"out", "lse", "k_cache_out", "v_cache_out"})
    .SetInplaceMap({{"k_cache", "k_cache_out"}, {"v_cache", "v_cache_out"}})
    .Attrs({"softmax_scale: std::string", "window_left: int", "num_splits: int",
            "backend: std::string"})
    .SetKernelFn(PD_KERNEL(pte_paddle::DecodeAttnForward))
    .SetInferShapeFn(PD_INFER_SHAPE(pte_paddle::DecodeAttnInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(pte_paddle::DecodeAttnInferDtype));
