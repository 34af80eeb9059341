// Entry points of the "flash" backend (core/kernels.h): capability check with a reason,
// workspace sizes, and dispatch to the compiled (head dim, dtype) instantiations.
//
// Head dims: the build compiles kernels for a set of head dims D (PTE_HDIMS, e.g. "64;128",
// passed as -DPTE_FLASH_HDIM_64 -DPTE_FLASH_HDIM_128). A call with head dim d (a multiple of 8)
// runs the smallest compiled D >= d: columns past d are zero-filled in shared memory and never
// stored, so d = 80 runs on the D = 128 kernels (at D = 128's cost). check() names the compiled
// set when d exceeds it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/kernels.h"
#include "cuda/attn/flashmask.h"
#include "cuda/attn/launch.h"
#include "cuda/common.cuh"
#ifdef PTE_FLASH_SM90
#include "cuda/attn/sm90/launch.h"
#endif

namespace pte {
namespace flash {

namespace {

// Compiled head dims: the build defines PTE_FLASH_HDIM_<D> for each D of PTE_HDIMS (one macro
// each: nvcc splits a comma-separated -D value into several definitions).
constexpr int kHdims[] = {
#ifdef PTE_FLASH_HDIM_32
    32,
#endif
#ifdef PTE_FLASH_HDIM_64
    64,
#endif
#ifdef PTE_FLASH_HDIM_96
    96,
#endif
#ifdef PTE_FLASH_HDIM_128
    128,
#endif
#ifdef PTE_FLASH_HDIM_160
    160,
#endif
#ifdef PTE_FLASH_HDIM_192
    192,
#endif
#ifdef PTE_FLASH_HDIM_224
    224,
#endif
#ifdef PTE_FLASH_HDIM_256
    256,
#endif
    0};
constexpr int kAllHdims[] = {32, 64, 96, 128, 160, 192, 224, 256};  // what the generator emits

constexpr bool compiled(int D) {
  for (int x : kHdims)
    if (x == D) return true;
  return false;
}

// Smallest compiled head dim >= d, or 0.
int pick_hdim(int64_t d) {
  for (int D : kAllHdims)
    if (compiled(D) && d <= D) return D;
  return 0;
}

std::string compiled_hdims() {
  std::string s;
  for (int D : kAllHdims) {
    if (!compiled(D)) continue;
    if (!s.empty()) s += ", ";
    s += std::to_string(D);
  }
  return s.empty() ? "none" : s;
}

// Kernel family. `auto` runs the sm90 (wgmma/TMA) kernels on sm_90 devices where this build has
// them for the head dim, the sm80 (mma.sync) kernels elsewhere; the environment variable
// PTE_FLASH_VARIANT=sm80|sm90 forces one (tests run the grid through both). The sm90 backward
// covers both modes (`deterministic=True`: its dQ adds in a fixed order, sm90/bwd_kernel.h)
// except deterministic FlashMask, which runs the sm80 family's three-kernel backward (its dQ
// kernel owns each dQ tile, so needs no order).
enum class Variant { kAuto, kSm80, kSm90, kInvalid };

Variant requested_variant() {
  const int c = cuda::env_choice("PTE_FLASH_VARIANT", "sm80", "sm90");
  return c < 0 ? Variant::kInvalid : Variant(c);
}

// Smallest head dim >= d with a compiled sm90 forward (backward), or 0.
int pick_sm90_hdim(int64_t d, bool backward = false) {
#ifdef PTE_FLASH_SM90
  if (backward) {
    for (int D : sm90::kBwdHdims)
      if (compiled(D) && d <= D) return D;
    return 0;
  }
  for (int D : sm90::kFwdHdims)
    if (compiled(D) && d <= D) return D;
#else
  (void)d;
  (void)backward;
#endif
  return 0;
}

// Why the sm90 forward cannot run p ("" when it can).
std::string sm90_fwd_reason(const AttnProblem& p, int arch) {
#ifndef PTE_FLASH_SM90
  (void)p;
  (void)arch;
  return "flash: this build has no sm90 kernels (PTE_ARCHS without 90a)";
#else
  if (arch != 90) return str("flash: the sm90 kernels need compute capability 9.0, not ", arch / 10, ".", arch % 10);
  if (pick_sm90_hdim(p.d) == 0)
    return str("flash: head_dim=", p.d, ": no sm90 forward for it in this build (sm90 head dims: 64, "
               "128, 192, 256 where compiled)");
  // TMA: 16-byte aligned bases and strides (the generic check below asks for multiples of 8
  // elements, i.e. 16 bytes in 16-bit types).
  return "";
#endif
}

// Why the sm90 backward cannot run p ("" when it can).
std::string sm90_bwd_reason(const AttnProblem& p, int arch) {
  std::string why = sm90_fwd_reason(p, arch);
  if (!why.empty()) return why;
  if (p.deterministic && p.startend != nullptr)
    return "flash: deterministic=True with startend_row_indices (FlashMask) runs the sm80 "
           "backward";
  // The dQ accumulator's row length is the compiled head dim of launch.h's workspace size.
  if (pick_sm90_hdim(p.d, true) != pick_hdim(p.d))
    return str("flash: head_dim=", p.d, ": the sm90 backward's head dim differs from the "
               "workspace's (", pick_hdim(p.d), ")");
  return "";
}

bool use_sm90(const AttnProblem& p, bool backward) {
  const Variant v = requested_variant();
  if (v == Variant::kSm80) return false;
#ifdef PTE_FLASH_SM90
  if (v == Variant::kAuto && p.startend != nullptr && !sm90::kFlashMaskPreferred) return false;
#endif
  const int arch = cuda::device_arch(p.device_id);
  if (!backward) {
#ifdef PTE_FLASH_SM90
    if (v == Variant::kAuto && !sm90::fwd_preferred(pick_sm90_hdim(p.d))) return false;
#endif
    return sm90_fwd_reason(p, arch).empty();
  }
#ifdef PTE_FLASH_SM90
  if (v == Variant::kAuto && !sm90::bwd_preferred(pick_sm90_hdim(p.d, true))) return false;
#endif
  return sm90_bwd_reason(p, arch).empty();
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }
bool strides8(const Strides& st) { return st.batch % 8 == 0 && st.seq % 8 == 0 && st.head % 8 == 0; }

// FlashMask in the CUDA kernels is on by default since tests/gpu/test_flashmask_gpu.py passed on
// an H200 (2026-12-04); PTE_FLASHMASK_CUDA=0 turns it off (the Paddle layers then take the
// unfused path with the dense mask), e.g. to bisect a suspected kernel problem.
bool flashmask_cuda_enabled() {
  const char* v = std::getenv("PTE_FLASHMASK_CUDA");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

std::string reason(const AttnProblem& p, bool backward) {
  if (p.device != PTE_DEVICE_CUDA) return "flash: tensors must be on a CUDA device";
  if (p.dtype != PTE_FLOAT16 && p.dtype != PTE_BFLOAT16)
    return str("flash: dtype=", pte_dtype_name(p.dtype), ": must be float16 or bfloat16");
  const int arch = cuda::device_arch(p.device_id);
  if (arch < 80) return str("flash: compute capability ", arch / 10, ".", arch % 10, " < 8.0");
  if (p.d != p.d_v) return str("flash: head_dim_v=", p.d_v, " != head_dim=", p.d, " is not supported");
  if (p.d % 8 != 0 || p.d <= 0) return str("flash: head_dim=", p.d, ": must be a multiple of 8");
  if (pick_hdim(p.d) == 0)
    return str("flash: head_dim=", p.d, ": this build has flash kernels for head dims <= ",
               "{", compiled_hdims(), "} (set PTE_HDIMS at build time)");
  if (p.b > 65535 || p.h > 65535 || p.h_kv > 65535)
    return str("flash: batch=", p.b, ", heads=", p.h, ": each must be <= 65535");
  if (p.startend != nullptr && !flashmask_cuda_enabled())
    return "flash: startend_row_indices (FlashMask) in the CUDA kernels is turned off "
           "(PTE_FLASHMASK_CUDA=0)";
  // 16-byte vector loads (cp.async) of 8 elements.
  const void* ptrs[] = {p.q, p.k, p.v, p.out, p.grad_out, p.grad_q, p.grad_k, p.grad_v};
  const Strides* sts[] = {&p.q_st, &p.k_st, &p.v_st, &p.out_st,
                          &p.grad_out_st, &p.grad_q_st, &p.grad_k_st, &p.grad_v_st};
  const char* names[] = {"q", "k", "v", "out", "d_out", "d_q", "d_k", "d_v"};
  const int n = backward ? 8 : 4;
  for (int i = 0; i < n; ++i) {
    if (ptrs[i] != nullptr && !aligned16(ptrs[i]))
      return str("flash: ", names[i], " must be 16-byte aligned");
    if (ptrs[i] != nullptr && !strides8(*sts[i]))
      return str("flash: ", names[i], " strides must be multiples of 8 elements");
  }
  const Variant variant = requested_variant();
  if (variant == Variant::kInvalid)
    return str("flash: PTE_FLASH_VARIANT=", std::getenv("PTE_FLASH_VARIANT"),
               ": must be auto, sm80 or sm90");
  if (variant == Variant::kSm90) {
    // Forcing sm90 refuses devices and head dims without sm90 kernels; a backward the sm90
    // family does not cover (deterministic FlashMask, a head dim without an sm90 backward)
    // still runs, on the sm80 family.
    std::string why = sm90_fwd_reason(p, arch);
    if (!why.empty()) return str(why, " (PTE_FLASH_VARIANT=sm90)");
  }
  if (backward && p.lse == nullptr) return "flash: the backward needs lse from the forward";
  if (p.dropout > 0.f && p.lse == nullptr) return "flash: dropout needs lse";
  return "";
}

template <int D, bool kBwd, typename T>
void call(const AttnProblem& p) {
  if constexpr (compiled(D)) {
    if (kBwd)
      run_bwd<D, T>(p);
    else
      run_fwd<D, T>(p);
  } else {
    PTE_INTERNAL("flash: head dim ", D, " was not compiled");
  }
}

template <bool kBwd, typename T>
void dispatch_sm90(const AttnProblem& p) {
#ifdef PTE_FLASH_SM90
  switch (pick_sm90_hdim(p.d, kBwd)) {
#if defined(PTE_FLASH_HDIM_64)
    case 64: return kBwd ? sm90::run_bwd<64, T>(p) : sm90::run_fwd<64, T>(p);
#endif
#if defined(PTE_FLASH_HDIM_128)
    case 128: return kBwd ? sm90::run_bwd<128, T>(p) : sm90::run_fwd<128, T>(p);
#endif
#if defined(PTE_FLASH_HDIM_192)
    case 192: if constexpr (!kBwd) return sm90::run_fwd<192, T>(p); break;
#endif
#if defined(PTE_FLASH_HDIM_256)
    case 256: if constexpr (!kBwd) return sm90::run_fwd<256, T>(p); break;
#endif
    default: break;
  }
#endif
  PTE_UNSUPPORTED("flash: head_dim=", p.d, ": no compiled sm90 kernel");
}

template <bool kBwd, typename T>
void dispatch(const AttnProblem& p) {
  if (use_sm90(p, kBwd)) return dispatch_sm90<kBwd, T>(p);
  switch (pick_hdim(p.d)) {
    case 32: return call<32, kBwd, T>(p);
    case 64: return call<64, kBwd, T>(p);
    case 96: return call<96, kBwd, T>(p);
    case 128: return call<128, kBwd, T>(p);
    case 160: return call<160, kBwd, T>(p);
    case 192: return call<192, kBwd, T>(p);
    case 224: return call<224, kBwd, T>(p);
    case 256: return call<256, kBwd, T>(p);
    default:
      PTE_UNSUPPORTED("flash: head_dim=", p.d, ": no compiled kernel (compiled: ",
                      compiled_hdims(), ")");
  }
}

// Bytes of the workspace before the FlashMask summary (the backward's fp32 buffers). Their layout
// depends on the family only in deterministic mode (launch.h), the one case that asks use_sm90:
// sizing and running take the same choice.
size_t base_workspace_bytes(const AttnProblem& p, bool backward) {
  if (!backward) return 0;
  const bool sm90 = p.deterministic && p.device == PTE_DEVICE_CUDA && use_sm90(p, true);
  return bwd_workspace_elems(p, pick_hdim(p.d), sm90) * sizeof(float);
}

template <bool kBwd>
void run(const AttnProblem& p) {
  std::string why = reason(p, kBwd);
  if (!why.empty()) PTE_UNSUPPORTED(why);
  AttnProblem q = p;
  if (p.startend != nullptr) {
    // FlashMask: the per-chunk bound summary goes after the backward's buffers; every kernel
    // family reads it through FlashMaskView (flashmask.h).
    int32_t* summary = reinterpret_cast<int32_t*>(
        static_cast<char*>(p.workspace) + flashmask_summary_offset(base_workspace_bytes(p, kBwd)));
    flashmask_summarize(p, summary, static_cast<cudaStream_t>(p.stream));
    q.startend_summary = summary;
  }
  if (q.dtype == PTE_FLOAT16)
    dispatch<kBwd, __half>(q);
  else
    dispatch<kBwd, __nv_bfloat16>(q);
}

}  // namespace

const char* check(const AttnProblem& p, bool backward) {
  thread_local std::string text;  // per thread: callers run without the GIL
  text = reason(p, backward);
  return text.c_str();
}

static size_t workspace_size(const AttnProblem& p, bool backward) {
  const size_t base = base_workspace_bytes(p, backward);
  if (p.startend == nullptr) return base;
  return flashmask_summary_offset(base) + flashmask_summary_bytes(p);
}

size_t fwd_workspace_size(const AttnProblem& p) { return workspace_size(p, false); }

size_t bwd_workspace_size(const AttnProblem& p) { return workspace_size(p, true); }

void attn_fwd(const AttnProblem& p) { run<false>(p); }

// The core checked the workspace against bwd_workspace_size (core/api_attention.cc).
void attn_bwd(const AttnProblem& p) { run<true>(p); }

}  // namespace flash
}  // namespace pte
