// C API for decode_attn (SPEC §10): validate every argument, resolve the problem, route to the
// CPU or CUDA decode kernels. Value checks of cache_seqlens / block_table happen in the CPU
// kernel (the CUDA path never reads device values on the host; see decode.h).
#include <cmath>

#include "core/api_common.h"
#include "core/decode_problem.h"
#include "paddle_te/paddle_te.h"

namespace pte {
namespace {

constexpr int64_t kMaxPageSize = 256;
constexpr int32_t kMaxSplits = 256;

Strides strides4(const pte_tensor_t& t) {
  Strides s;
  s.batch = t.strides[0];
  s.seq = t.strides[1];
  s.head = t.strides[2];
  return s;
}

void check_float_tensor(const pte_tensor_t& t, const char* name, const pte_tensor_t& q,
                        const std::vector<int64_t>& shape, const char* layout) {
  check_shape(t, name, shape, layout);
  PTE_CHECK(t.dtype == q.dtype, name, " has dtype ", pte_dtype_name(t.dtype),
            ": must be q's dtype ", pte_dtype_name(q.dtype));
  check_same_device(t, name, q, "q");
  check_inner_contiguous(t, name);
  check_data(t, name);
}

void check_int_tensor(const pte_tensor_t& t, const char* name, const pte_tensor_t& q,
                      const std::vector<int64_t>& shape, const char* layout) {
  check_shape(t, name, shape, layout);
  check_dtype(t, name, PTE_INT32);
  check_same_device(t, name, q, "q");
  check_contiguous(t, name);
  check_data(t, name);
}

DecodeProblem resolve(const pte_decode_params_t& p) {
  const pte_tensor_t& q = p.q;
  check_ndim(q, "q", 4, "[b, s_q, h, d]");
  PTE_CHECK(q.dtype == PTE_FLOAT32 || q.dtype == PTE_FLOAT64 || q.dtype == PTE_FLOAT16 ||
                q.dtype == PTE_BFLOAT16,
            "q has dtype ", pte_dtype_name(q.dtype),
            ": allowed float16, bfloat16 (GPU), float32, float64 (CPU)");
  check_inner_contiguous(q, "q");
  check_data(q, "q");
  DecodeProblem pr{};
  pr.dtype = q.dtype;
  pr.device = q.device;
  pr.device_id = q.device_id;
  pr.b = q.shape[0];
  pr.s_q = q.shape[1];
  pr.h = q.shape[2];
  pr.d = q.shape[3];
  PTE_CHECK(pr.s_q >= 1, "q has shape ", shape_str(q), ": s_q (dim 1) must be >= 1");
  PTE_CHECK(pr.h >= 1 && pr.d >= 1, "q has shape ", shape_str(q),
            ": heads and head dim must be >= 1");

  const bool paged = present(p.block_table);
  pr.paged = paged;
  const char* kv_layout =
      paged ? "[num_pages, page_size, h_kv, d] (paged)" : "[b, s_max, h_kv, d] (contiguous)";
  check_ndim(p.k_cache, "k_cache", 4, kv_layout);
  check_ndim(p.v_cache, "v_cache", 4, kv_layout);
  const pte_tensor_t& kc = p.k_cache;
  const pte_tensor_t& vc = p.v_cache;
  pr.h_kv = kc.shape[2];
  pr.d_v = vc.shape[3];
  PTE_CHECK(pr.h_kv >= 1 && pr.h % pr.h_kv == 0, "k_cache has ", pr.h_kv,
            " heads (dim 2): must divide q's ", pr.h, " heads (GQA/MQA)");
  PTE_CHECK(kc.shape[3] == pr.d, "k_cache has head dim ", kc.shape[3], ": must equal q's ", pr.d);
  PTE_CHECK(pr.d_v >= 1, "v_cache has shape ", shape_str(vc), ": head dim must be >= 1");
  check_float_tensor(kc, "k_cache", q, {kc.shape[0], kc.shape[1], pr.h_kv, pr.d}, kv_layout);
  check_float_tensor(vc, "v_cache", q, {kc.shape[0], kc.shape[1], pr.h_kv, pr.d_v}, kv_layout);
  if (paged) {
    pr.num_pages = kc.shape[0];
    pr.page_size = kc.shape[1];
    PTE_CHECK(pr.page_size >= 1 && pr.page_size <= kMaxPageSize, "k_cache has page_size ",
              pr.page_size, " (dim 1): must be in [1, ", kMaxPageSize, "]");
    check_ndim(p.block_table, "block_table", 2, "int32 [b, pages_per_seq]");
    pr.pages_per_seq = p.block_table.shape[1];
    check_int_tensor(p.block_table, "block_table", q, {pr.b, pr.pages_per_seq},
                     "int32 [b, pages_per_seq]");
    pr.capacity = pr.pages_per_seq * pr.page_size;
    pr.block_table = static_cast<const int32_t*>(p.block_table.data);
  } else {
    PTE_CHECK(kc.shape[0] == pr.b, "k_cache has batch ", kc.shape[0], ": must equal q's ", pr.b,
              " (contiguous cache [b, s_max, h_kv, d]; pass block_table for a paged one)");
    pr.capacity = kc.shape[1];
  }
  check_int_tensor(p.cache_seqlens, "cache_seqlens", q, {pr.b}, "(int32 [b])");

  const bool has_k_new = present(p.k_new), has_v_new = present(p.v_new);
  PTE_CHECK(has_k_new == has_v_new, has_k_new ? "k_new" : "v_new",
            " given without ", has_k_new ? "v_new" : "k_new", ": pass both or neither");
  if (has_k_new) {
    check_float_tensor(p.k_new, "k_new", q, {pr.b, pr.s_q, pr.h_kv, pr.d}, "[b, s_q, h_kv, d]");
    check_float_tensor(p.v_new, "v_new", q, {pr.b, pr.s_q, pr.h_kv, pr.d_v},
                       "[b, s_q, h_kv, d_v]");
    PTE_CHECK(pr.capacity >= pr.s_q, "k_cache holds ", pr.capacity,
              " positions per sequence: cannot append s_q=", pr.s_q, " new keys");
    pr.k_new = p.k_new.data;
    pr.v_new = p.v_new.data;
    pr.kn_st = strides4(p.k_new);
    pr.vn_st = strides4(p.v_new);
  }
  check_float_tensor(p.out, "out", q, {pr.b, pr.s_q, pr.h, pr.d_v}, "[b, s_q, h, d_v]");
  if (present(p.lse)) {
    check_shape(p.lse, "lse", {pr.b, pr.h, pr.s_q}, "(float32 [b, h, s_q])");
    check_dtype(p.lse, "lse", PTE_FLOAT32);
    check_same_device(p.lse, "lse", q, "q");
    check_contiguous(p.lse, "lse");
    check_data(p.lse, "lse");
    pr.lse = static_cast<float*>(p.lse.data);
  }
  PTE_CHECK(std::isfinite(p.softmax_scale) && p.softmax_scale > 0, "softmax_scale=",
            p.softmax_scale, ": must be finite and > 0");
  PTE_CHECK(p.window_left >= -1, "window_size=(", p.window_left, ", ", p.window_right,
            "): left must be >= -1 (-1 = unbounded)");
  PTE_CHECK(p.window_right >= -1, "window_size=(", p.window_left, ", ", p.window_right,
            "): right must be >= -1 (decoding is causal: it is read as 0)");
  PTE_CHECK(p.num_splits >= 0 && p.num_splits <= kMaxSplits, "num_splits=", p.num_splits,
            ": must be 0 (automatic) or in [1, ", kMaxSplits, "]");
  PTE_CHECK(p.backend == PTE_BACKEND_AUTO || p.backend == PTE_BACKEND_FLASH ||
                p.backend == PTE_BACKEND_CPU,
            "backend=", pte_backend_name(p.backend),
            ": decode_attn runs on \"auto\", \"flash\" (the CUDA decode kernels) or \"cpu\"");

  pr.q = q.data;
  pr.k_cache = kc.data;
  pr.v_cache = vc.data;
  pr.out = p.out.data;
  pr.q_st = strides4(q);
  pr.kc_st = strides4(kc);
  pr.vc_st = strides4(vc);
  pr.out_st = strides4(p.out);
  pr.cache_seqlens = static_cast<const int32_t*>(p.cache_seqlens.data);
  pr.scale = p.softmax_scale;
  pr.window_left = p.window_left;
  pr.num_splits = p.num_splits;
  pr.stream = p.stream;
  pr.workspace = p.workspace;
  pr.workspace_size = p.workspace_size;
  return pr;
}

// The backend that runs pr: the device decides; an explicit backend must match it.
pte_backend_t choose(const DecodeProblem& pr, pte_backend_t requested) {
  if (pr.device == PTE_DEVICE_CPU) {
    PTE_CHECK(requested != PTE_BACKEND_FLASH,
              "backend=flash: the CUDA decode kernels need CUDA tensors (q is on the CPU)");
    PTE_CHECK(pr.dtype == PTE_FLOAT32 || pr.dtype == PTE_FLOAT64 || pr.dtype == PTE_FLOAT16 ||
                  pr.dtype == PTE_BFLOAT16,
              "q has dtype ", pte_dtype_name(pr.dtype), ": not supported on the CPU");
    return PTE_BACKEND_CPU;
  }
  PTE_CHECK(requested != PTE_BACKEND_CPU,
            "backend=cpu: q is on a CUDA device; the CPU kernels need CPU tensors");
#ifdef PTE_WITH_CUDA
  const char* why = cuda::decode_check(pr);
  if (why != nullptr && *why != '\0') PTE_UNSUPPORTED("decode_attn on CUDA: ", why);
  return PTE_BACKEND_FLASH;
#else
  PTE_UNSUPPORTED("q is on a CUDA device but this paddle_te was compiled without CUDA");
#endif
}

size_t workspace_size(const DecodeProblem& pr, pte_backend_t b, int32_t* splits) {
  *splits = 1;
#ifdef PTE_WITH_CUDA
  if (b == PTE_BACKEND_FLASH) {
    *splits = cuda::decode_num_splits(pr);
    return cuda::decode_workspace_size(pr, *splits);
  }
#endif
  (void)pr;
  (void)b;
  return 0;
}

void run(const pte_decode_params_t* p) {
  PTE_CHECK(p != nullptr, "params: null pointer");
  DecodeProblem pr = resolve(*p);
  const pte_backend_t b = choose(pr, p->backend);
  if (b == PTE_BACKEND_CPU) {
    cpu::decode_attn(pr);
    return;
  }
#ifdef PTE_WITH_CUDA
  int32_t splits = 1;
  const size_t need = workspace_size(pr, b, &splits);
  PTE_CHECK(pr.workspace_size >= need && (need == 0 || pr.workspace != nullptr),
            "workspace_size=", pr.workspace_size, ": decode_attn with ", splits,
            " splits needs ", need, " bytes (pte_decode_workspace_size)");
  pr.num_splits = splits;
  cuda::decode_attn(pr);
#endif
}

}  // namespace
}  // namespace pte

extern "C" {

void pte_decode_params_init(pte_decode_params_t* p) {
  if (p == nullptr) return;
  *p = pte_decode_params_t{};
  p->window_left = -1;
  p->window_right = 0;
  p->num_splits = 0;
  p->backend = PTE_BACKEND_AUTO;
}

pte_status_t pte_decode_workspace_size(const pte_decode_params_t* p, size_t* bytes) {
  return pte::api_guard([&] {
    PTE_CHECK(p != nullptr && bytes != nullptr, "params/bytes: null pointer");
    pte::DecodeProblem pr = pte::resolve(*p);
    int32_t splits = 1;
    *bytes = pte::workspace_size(pr, pte::choose(pr, p->backend), &splits);
  });
}

pte_status_t pte_decode_num_splits(const pte_decode_params_t* p, int32_t* num_splits) {
  return pte::api_guard([&] {
    PTE_CHECK(p != nullptr && num_splits != nullptr, "params/num_splits: null pointer");
    pte::DecodeProblem pr = pte::resolve(*p);
    pte::workspace_size(pr, pte::choose(pr, p->backend), num_splits);
  });
}

pte_status_t pte_decode_attn(const pte_decode_params_t* p) {
  return pte::api_guard([&] { pte::run(p); });
}

}  // extern "C"
