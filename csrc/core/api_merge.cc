// C API for the lse merge (paddle_te/merge.h): validate, resolve the layout to strides, dispatch
// by device.
#include "core/api_common.h"
#include "core/merge_problem.h"
#include "paddle_te/paddle_te.h"

namespace pte {
namespace {

const char* layout_of(pte_qkv_format_t f) {
  switch (f) {
    case PTE_QKV_BSHD:
      return "[b, s, h, d]";
    case PTE_QKV_SBHD:
      return "[s, b, h, d]";
    case PTE_QKV_THD:
      return "[t, h, d]";
  }
  return "?";
}

bool allowed_dtype(pte_dtype_t t, pte_device_t dev) {
  if (dev == PTE_DEVICE_CPU) return t == PTE_FLOAT32 || t == PTE_FLOAT64;
  return t == PTE_FLOAT32 || t == PTE_FLOAT16 || t == PTE_BFLOAT16;
}

void check_out_dtype(const pte_tensor_t& t, const char* name) {
  PTE_CHECK(allowed_dtype(t.dtype, t.device), name, " has dtype ", pte_dtype_name(t.dtype),
            ": allowed ",
            t.device == PTE_DEVICE_CPU ? "float32, float64 (CPU)"
                                       : "float32, float16, bfloat16 (CUDA)");
}

// out-like tensor -> strided view [b, s, h, d]; checks shape against the reference dims.
MergeProblem::Out out_view(const pte_tensor_t& t, const char* name, pte_qkv_format_t f,
                           const pte_tensor_t& ref, const char* ref_name) {
  const int rank = f == PTE_QKV_THD ? 3 : 4;
  check_present(t, name);
  check_ndim(t, name, rank, layout_of(f));
  check_same_device(t, name, ref, ref_name);
  check_inner_contiguous(t, name);
  PTE_CHECK(t.strides[rank - 1] == 1 || t.shape[rank - 1] == 1, name, " with shape ",
            shape_str(t), ": the head dim must be contiguous (stride 1)");
  for (int i = 0; i < rank; ++i)
    PTE_CHECK(t.shape[i] == ref.shape[i], name, " has shape ", shape_str(t), ": must equal ",
              ref_name, "'s shape ", shape_str(ref));
  check_data(t, name);
  MergeProblem::Out v{t.data, 0, 0, 0};
  if (f == PTE_QKV_BSHD) {
    v.sb = t.strides[0], v.ss = t.strides[1], v.sh = t.strides[2];
  } else if (f == PTE_QKV_SBHD) {
    v.ss = t.strides[0], v.sb = t.strides[1], v.sh = t.strides[2];
  } else {
    v.sb = 0, v.ss = t.strides[0], v.sh = t.strides[1];
  }
  return v;
}

MergeProblem::Lse lse_view(const pte_tensor_t& t, const char* name, pte_qkv_format_t f,
                           const MergeProblem& p, const pte_tensor_t& ref) {
  check_present(t, name);
  check_dtype(t, name, PTE_FLOAT32);
  check_same_device(t, name, ref, "out_a");
  check_inner_contiguous(t, name);
  if (f == PTE_QKV_THD) {
    check_shape(t, name, {p.h, p.s}, "[h, t] (float32)");
  } else {
    check_shape(t, name, {p.b, p.h, p.s}, "[b, h, s] (float32)");
  }
  check_data(t, name);
  MergeProblem::Lse v{static_cast<float*>(t.data), 0, 0, 0};
  if (f == PTE_QKV_THD) {
    v.sh = t.strides[0], v.ss = t.strides[1];
  } else {
    v.sb = t.strides[0], v.sh = t.strides[1], v.ss = t.strides[2];
  }
  return v;
}

void run(const pte_merge_params_t* params) {
  PTE_CHECK(params != nullptr, "params: null pointer");
  const pte_merge_params_t& a = *params;
  const pte_qkv_format_t f = a.qkv_format;
  PTE_CHECK(f == PTE_QKV_BSHD || f == PTE_QKV_SBHD || f == PTE_QKV_THD, "qkv_format=",
            int(f), ": allowed bshd (0), sbhd (1), thd (2)");
  const pte_tensor_t& ref = a.out_a;
  check_present(ref, "out_a");
  check_ndim(ref, "out_a", f == PTE_QKV_THD ? 3 : 4, layout_of(f));
  check_out_dtype(ref, "out_a");
  check_out_dtype(a.out_b, "out_b");
  check_dtype(a.out, "out", ref.dtype);

  MergeProblem p{};
  p.device = ref.device;
  p.device_id = ref.device_id;
  if (f == PTE_QKV_BSHD) {
    p.b = ref.shape[0], p.s = ref.shape[1];
  } else if (f == PTE_QKV_SBHD) {
    p.s = ref.shape[0], p.b = ref.shape[1];
  } else {
    p.b = 1, p.s = ref.shape[0];
  }
  const int rank = f == PTE_QKV_THD ? 3 : 4;
  p.h = ref.shape[rank - 2];
  p.d = ref.shape[rank - 1];
  p.acc_dtype = ref.dtype;
  p.part_dtype = a.out_b.dtype;
  p.out_a = out_view(ref, "out_a", f, ref, "out_a");
  p.out_b = out_view(a.out_b, "out_b", f, ref, "out_a");
  p.out = out_view(a.out, "out", f, ref, "out_a");
  p.lse_a = lse_view(a.lse_a, "lse_a", f, p, ref);
  p.lse_b = lse_view(a.lse_b, "lse_b", f, p, ref);
  p.lse = lse_view(a.lse, "lse", f, p, ref);
  p.stream = a.stream;
  if (p.b * p.s * p.h * p.d == 0) return;
  // Only the documented in-place forms: out over out_a, lse over lse_a (the kernels read a row's
  // inputs before writing it). The partial must not be overwritten while it is read.
  PTE_CHECK(a.out.data != a.out_b.data, "out aliases out_b: only out_a may be overwritten");
  PTE_CHECK(a.lse.data != a.lse_b.data, "lse aliases lse_b: only lse_a may be overwritten");
  if (p.device == PTE_DEVICE_CPU) {
    cpu::attn_merge(p);
    return;
  }
#ifdef PTE_WITH_CUDA
  cuda::attn_merge(p);
#else
  PTE_UNSUPPORTED("out_a is on a CUDA device but this paddle_te was compiled without CUDA");
#endif
}

}  // namespace
}  // namespace pte

extern "C" {

void pte_merge_params_init(pte_merge_params_t* p) {
  if (p == nullptr) return;
  *p = pte_merge_params_t{};
  p->qkv_format = PTE_QKV_BSHD;
}

pte_status_t pte_attn_merge(const pte_merge_params_t* p) {
  return pte::api_guard([&] { pte::run(p); });
}

}  // extern "C"
