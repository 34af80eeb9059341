// C API for masked softmax: validate, resolve into pte::SoftmaxProblem, dispatch by device.
#include <cmath>

#include "core/api_common.h"
#include "core/kernels.h"
#include "paddle_te/paddle_te.h"

namespace pte {
namespace {

const char* kLayout = "[b, h, s_q, s_kv]";

SoftmaxProblem resolve(const pte_softmax_params_t& p, bool backward) {
  const pte_tensor_t& x = backward ? p.y : p.x;
  const char* x_name = backward ? "y" : "x";
  check_ndim(x, x_name, 4, kLayout);
  check_contiguous(x, x_name);
  check_data(x, x_name);
  const pte_dtype_t dt = x.dtype;
  PTE_CHECK(dt == PTE_FLOAT32 || dt == PTE_FLOAT64 || dt == PTE_FLOAT16 || dt == PTE_BFLOAT16,
            x_name, " has dtype ", pte_dtype_name(dt),
            ": must be float16, bfloat16, float32 or float64");
  PTE_CHECK(std::isfinite(p.scale) && p.scale > 0, "scale=", p.scale, ": must be finite and > 0");
  PTE_CHECK(p.causal == PTE_SOFTMAX_NO_CAUSAL || p.causal == PTE_SOFTMAX_CAUSAL_TOP_LEFT ||
                p.causal == PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT,
            "causal=", int(p.causal), ": must be none, top_left or bottom_right");
  std::vector<int64_t> shape(x.shape, x.shape + 4);
  SoftmaxProblem sp{};
  sp.dtype = dt;
  sp.device = x.device;
  sp.b = shape[0];
  sp.h = shape[1];
  sp.s_q = shape[2];
  sp.s_kv = shape[3];
  sp.scale = p.scale;
  sp.causal = p.causal;
  sp.stream = p.stream;
  auto check_like_x = [&](const pte_tensor_t& t, const char* name) {
    check_shape(t, name, shape, kLayout);
    check_dtype(t, name, dt);
    check_same_device(t, name, x, x_name);
    check_contiguous(t, name);
    check_data(t, name);
  };
  if (backward) {
    check_like_x(p.d_y, "d_y");
    check_like_x(p.d_x, "d_x");
    sp.y = p.y.data;
    sp.d_y = p.d_y.data;
    sp.d_x = p.d_x.data;
    return sp;
  }
  check_like_x(p.y, "y");
  sp.x = p.x.data;
  sp.y = p.y.data;
  if (present(p.mask)) {
    const pte_tensor_t& m = p.mask;
    check_ndim(m, "mask", 4, "[b or 1, 1, s_q, s_kv]");
    check_dtype(m, "mask", PTE_BOOL);
    check_same_device(m, "mask", x, "x");
    check_contiguous(m, "mask");
    check_data(m, "mask");
    PTE_CHECK((m.shape[0] == sp.b || m.shape[0] == 1) && m.shape[1] == 1 && m.shape[2] == sp.s_q &&
                  m.shape[3] == sp.s_kv,
              "mask has shape ", shape_str(m), ": expected [", sp.b, " or 1, 1, ", sp.s_q, ", ",
              sp.s_kv, "] for x of shape ", shape_str(x));
    sp.mask = static_cast<const uint8_t*>(m.data);
    sp.mask_batch = m.shape[0];
  }
  return sp;
}

void run(const pte_softmax_params_t* p, bool backward) {
  PTE_CHECK(p != nullptr, "params: null pointer");
  SoftmaxProblem sp = resolve(*p, backward);
  if (sp.device == PTE_DEVICE_CPU) {
    PTE_CHECK(sp.dtype == PTE_FLOAT32 || sp.dtype == PTE_FLOAT64, "x has dtype ",
              pte_dtype_name(sp.dtype),
              ": the CPU kernels take float32 or float64 (convert float16/bfloat16 first)");
    backward ? cpu::softmax_bwd(sp) : cpu::softmax_fwd(sp);
    return;
  }
#ifdef PTE_WITH_CUDA
  backward ? cuda::softmax_bwd(sp) : cuda::softmax_fwd(sp);
#else
  PTE_UNSUPPORTED("x is on a CUDA device but this paddle_te was compiled without CUDA");
#endif
}

}  // namespace
}  // namespace pte

extern "C" {

void pte_softmax_params_init(pte_softmax_params_t* p) {
  if (p == nullptr) return;
  *p = pte_softmax_params_t{};
  p->scale = 1.0;
  p->causal = PTE_SOFTMAX_NO_CAUSAL;
}

pte_status_t pte_softmax_fwd(const pte_softmax_params_t* p) {
  return pte::api_guard([&] { pte::run(p, false); });
}

pte_status_t pte_softmax_bwd(const pte_softmax_params_t* p) {
  return pte::api_guard([&] { pte::run(p, true); });
}

}  // extern "C"
