// The fused-attention backends, one entry each (core/attn_backends.h). A backend left out of the
// build keeps its entry, with the reason, so every caller sees the same "why not" text.
#include "core/attn_backends.h"

#include "core/error.h"
#include "core/kernels.h"

namespace pte {
namespace {

// ---- cpu: the reference kernels -------------------------------------------------------------
const char* cpu_check(const AttnProblem&, bool) { return ""; }
size_t no_workspace(const AttnProblem&) { return 0; }
std::string always_available() { return ""; }

// A dtype the CPU kernels lack is the caller's mistake (INVALID_ARGUMENT), not a capability gap
// that `auto` could route around: on CPU tensors there is no other backend.
void check_cpu_dtype(const AttnProblem& p) {
  PTE_CHECK(p.dtype == PTE_FLOAT32 || p.dtype == PTE_FLOAT64, "q has dtype ",
            pte_dtype_name(p.dtype),
            ": the CPU kernels take float32 or float64 (convert float16/bfloat16 first)");
}
void cpu_fwd(const AttnProblem& p) {
  check_cpu_dtype(p);
  cpu::attn_fwd(p);
}
void cpu_bwd(const AttnProblem& p) {
  check_cpu_dtype(p);
  cpu::attn_bwd(p);
}

// ---- CUDA backends --------------------------------------------------------------------------
#ifdef PTE_WITH_CUDA
// Every CUDA backend needs a usable device of sm_80 or newer.
std::string cuda_device_reason() {
  try {
    const int arch = cuda::device_arch(-1);
    if (arch < 80) return str("needs an sm_80 or newer GPU; this one is sm_", arch);
  } catch (const std::exception& e) {
    return str("no usable CUDA device: ", e.what());
  }
  return "";
}
#define PTE_CUDA_ONLY(text) text
#else
#define PTE_CUDA_ONLY(text) "this paddle_te was compiled without CUDA"
#endif

#ifdef PTE_WITH_CUDNN
std::string cudnn_available() {
  std::string why = cuda_device_reason();
  if (why.empty() && cudnn::runtime_version() == 0)
    why = "the cuDNN library (libcudnn.so.9) could not be loaded";
  return why;
}
#endif

// An entry for a backend that this build left out.
constexpr AttnBackend absent(pte_backend_t id, pte_device_t device, bool philox_dropout,
                             const char* why) {
  return {id, device, philox_dropout, why, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
}

// `auto`'s order without dropout: by measured speed (cuDNN leads on every case of
// docs/performance.md), the CPU last (it only ever runs CPU tensors). With dropout the entries
// with philox_dropout move to the front (api_attention.cc): flash's mask is the documented
// Philox function (the CPU kernels' too), so forward and backward then come from one backend
// whatever each pass's capability check says; cuDNN draws its own mask, so a cuDNN forward paired
// with another backend's backward would give wrong gradients.
const AttnBackend kBackends[] = {
#ifdef PTE_WITH_CUDNN
    {PTE_BACKEND_CUDNN, PTE_DEVICE_CUDA, false, nullptr, cudnn::check, cudnn::fwd_workspace_size,
     cudnn::bwd_workspace_size, cudnn::attn_fwd, cudnn::attn_bwd, cudnn_available},
#else
    absent(PTE_BACKEND_CUDNN, PTE_DEVICE_CUDA, false,
           PTE_CUDA_ONLY("the cuDNN / cudnn-frontend headers were not found at build time")),
#endif
#ifdef PTE_WITH_FLASH
    {PTE_BACKEND_FLASH, PTE_DEVICE_CUDA, true, nullptr, flash::check, flash::fwd_workspace_size,
     flash::bwd_workspace_size, flash::attn_fwd, flash::attn_bwd, cuda_device_reason},
#else
    absent(PTE_BACKEND_FLASH, PTE_DEVICE_CUDA, true,
           PTE_CUDA_ONLY("this paddle_te was compiled without the flash kernels")),
#endif
    {PTE_BACKEND_CPU, PTE_DEVICE_CPU, true, nullptr, cpu_check, no_workspace, no_workspace,
     cpu_fwd, cpu_bwd, always_available},
};
#undef PTE_CUDA_ONLY

}  // namespace

const AttnBackend* attn_backends(size_t* n) {
  *n = sizeof(kBackends) / sizeof(kBackends[0]);
  return kBackends;
}

const AttnBackend* find_attn_backend(pte_backend_t id) {
  for (const AttnBackend& b : kBackends)
    if (b.id == id) return &b;
  return nullptr;
}

}  // namespace pte
