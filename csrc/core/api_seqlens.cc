// C API for padding mask -> cu_seqlens: validate the mask form, dispatch by device.
#include "core/api_common.h"
#include "core/kernels.h"
#include "paddle_te/paddle_te.h"

namespace pte {
namespace {

void check_mask(const pte_tensor_t& m, const char* name, const pte_tensor_t& ref) {
  check_ndim(m, name, 4, "[b, 1, 1, s] or [b, 1, s_q, s_kv] (bool, True = padding)");
  check_dtype(m, name, PTE_BOOL);
  check_same_device(m, name, ref, "mask");
  check_contiguous(m, name);
  check_data(m, name);
  PTE_CHECK(m.shape[1] == 1, name, " has shape ", shape_str(m),
            ": dim 1 must be 1 ([b, 1, 1, s] or [b, 1, s_q, s_kv])");
}

void check_out(const pte_tensor_t& t, const char* name, int64_t n, const pte_tensor_t& ref) {
  check_shape(t, name, {n}, "(int32)");
  check_dtype(t, name, PTE_INT32);
  check_same_device(t, name, ref, "mask");
  check_contiguous(t, name);
  check_data(t, name);
}

void run(const pte_seqlens_params_t* p) {
  PTE_CHECK(p != nullptr, "params: null pointer");
  const pte_tensor_t& m = p->mask;
  check_mask(m, "mask", m);
  SeqlensProblem sp{};
  sp.device = m.device;
  sp.b = m.shape[0];
  sp.mask = static_cast<const uint8_t*>(m.data);
  sp.stream = p->stream;
  if (present(p->mask_kv)) {
    const pte_tensor_t& mk = p->mask_kv;
    check_mask(mk, "mask_kv", m);
    PTE_CHECK(m.shape[2] == 1, "mask has shape ", shape_str(m),
              ": with mask_kv it must be the query padding mask [b, 1, 1, s_q]");
    PTE_CHECK(mk.shape[2] == 1, "mask_kv has shape ", shape_str(mk), ": must be [b, 1, 1, s_kv]");
    PTE_CHECK(mk.shape[0] == sp.b, "mask_kv has batch ", mk.shape[0], ": must equal mask's ",
              sp.b);
    sp.s_q = m.shape[3];
    sp.s_kv = mk.shape[3];
    sp.mask_kv = static_cast<const uint8_t*>(mk.data);
  } else if (m.shape[2] == 1) {
    sp.s_q = sp.s_kv = m.shape[3];
  } else {
    sp.full = true;
    sp.s_q = m.shape[2];
    sp.s_kv = m.shape[3];
  }
  check_out(p->cu_seqlens_q, "cu_seqlens_q", sp.b + 1, m);
  check_out(p->cu_seqlens_kv, "cu_seqlens_kv", sp.b + 1, m);
  check_out(p->valid, "valid", 1, m);
  PTE_CHECK(sp.s_q < (int64_t(1) << 31) && sp.s_kv < (int64_t(1) << 31) &&
                sp.b * (sp.s_q > sp.s_kv ? sp.s_q : sp.s_kv) < (int64_t(1) << 31),
            "mask has shape ", shape_str(m), ": total lengths must fit in int32 cu_seqlens");
  sp.cu_q = static_cast<int32_t*>(p->cu_seqlens_q.data);
  sp.cu_kv = static_cast<int32_t*>(p->cu_seqlens_kv.data);
  sp.valid = static_cast<int32_t*>(p->valid.data);
  if (sp.device == PTE_DEVICE_CPU) {
    cpu::mask_to_cu_seqlens(sp);
    return;
  }
#ifdef PTE_WITH_CUDA
  cuda::mask_to_cu_seqlens(sp);
#else
  PTE_UNSUPPORTED("mask is on a CUDA device but this paddle_te was compiled without CUDA");
#endif
}

}  // namespace
}  // namespace pte

extern "C" {

void pte_seqlens_params_init(pte_seqlens_params_t* p) {
  if (p != nullptr) *p = pte_seqlens_params_t{};
}

pte_status_t pte_mask_to_cu_seqlens(const pte_seqlens_params_t* p) {
  return pte::api_guard([&] { pte::run(p); });
}

}  // extern "C"
