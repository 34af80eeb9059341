// C API for fused attention: validate every argument, resolve the layout into a pte::AttnProblem,
// pick a backend, and dispatch. Kernels below this point trust the problem they are given.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/philox.h"
#include "core/api_common.h"
#include "core/attn_backends.h"
#include "paddle_te/paddle_te.h"

namespace pte {
namespace {

// "a, b, c": every word of a vocabulary (api_names.cc), for messages.
template <typename E>
std::string words(const char* (*name)(E)) {
  std::string s;
  for (int i = 0; name(E(i)) != nullptr; ++i) s += str(i ? ", " : "", name(E(i)));
  return s;
}

bool is_causal(pte_mask_type_t m) {
  return m == PTE_MASK_CAUSAL || m == PTE_MASK_PADDING_CAUSAL ||
         m == PTE_MASK_CAUSAL_BOTTOM_RIGHT || m == PTE_MASK_PADDING_CAUSAL_BOTTOM_RIGHT;
}
bool is_padding(pte_mask_type_t m) {
  return m == PTE_MASK_PADDING || m == PTE_MASK_PADDING_CAUSAL ||
         m == PTE_MASK_PADDING_CAUSAL_BOTTOM_RIGHT;
}
bool is_bottom_right(pte_mask_type_t m) {
  return m == PTE_MASK_CAUSAL_BOTTOM_RIGHT || m == PTE_MASK_PADDING_CAUSAL_BOTTOM_RIGHT;
}

// Dims of a [batch, seq, head, dim] view in the given format: (b, s, h, d) and strides.
struct View {
  int64_t b, s, h, d;
  Strides st;
};

View view_of(const pte_tensor_t& t, const char* name, pte_qkv_format_t f) {
  const char* layout = f == PTE_QKV_BSHD ? "[b, s, h, d] (qkv_format='bshd')"
                       : f == PTE_QKV_SBHD ? "[s, b, h, d] (qkv_format='sbhd')"
                                           : "[t, h, d] (qkv_format='thd')";
  check_ndim(t, name, f == PTE_QKV_THD ? 3 : 4, layout);
  check_inner_contiguous(t, name);
  check_data(t, name);
  View v;
  if (f == PTE_QKV_BSHD) {
    v = {t.shape[0], t.shape[1], t.shape[2], t.shape[3], {t.strides[0], t.strides[1], t.strides[2]}};
  } else if (f == PTE_QKV_SBHD) {
    v = {t.shape[1], t.shape[0], t.shape[2], t.shape[3], {t.strides[1], t.strides[0], t.strides[2]}};
  } else {
    v = {0, t.shape[0], t.shape[1], t.shape[2], {0, t.strides[0], t.strides[1]}};
  }
  PTE_CHECK(v.h > 0, name, " has shape ", shape_str(t), ": the number of heads must be > 0");
  PTE_CHECK(v.d > 0, name, " has shape ", shape_str(t), ": the head dimension must be > 0");
  return v;
}

// A tensor that must have exactly the dims (b, s, h, d) of `want` in format f.
Strides check_like(const pte_tensor_t& t, const char* name, pte_qkv_format_t f, const View& want,
                   pte_dtype_t dtype, const pte_tensor_t& ref, const char* ref_name) {
  View v = view_of(t, name, f);
  bool same = v.s == want.s && v.h == want.h && v.d == want.d && (f == PTE_QKV_THD || v.b == want.b);
  if (!same) {
    std::vector<int64_t> shape;
    if (f == PTE_QKV_BSHD) shape = {want.b, want.s, want.h, want.d};
    else if (f == PTE_QKV_SBHD) shape = {want.s, want.b, want.h, want.d};
    else shape = {want.s, want.h, want.d};
    pte_tensor_t tmp = t;
    for (size_t i = 0; i < shape.size(); ++i) tmp.shape[i] = shape[i];
    PTE_CHECK(false, name, " has shape ", shape_str(t), ": expected ", shape_str(tmp));
  }
  check_dtype(t, name, dtype);
  check_same_device(t, name, ref, ref_name);
  return v.st;
}

// cu_seqlens: int32 [b+1] on q's device. On the CPU the values are checked too: cu[0] == 0,
// non-decreasing, each length <= bound (padded layouts) and cu[b] <= total (thd). CUDA kernels
// clamp instead, since reading device values here would need a host sync.
void check_cu_seqlens(const pte_tensor_t& cu, const char* name, int64_t b, int64_t len_bound,
                      int64_t total, bool thd, const pte_tensor_t& q) {
  check_ndim(cu, name, 1, "[b + 1]");
  check_dtype(cu, name, PTE_INT32);
  check_same_device(cu, name, q, "q");
  check_contiguous(cu, name);
  check_data(cu, name);
  if (!thd) {
    PTE_CHECK(cu.shape[0] == b + 1, name, " has shape ", shape_str(cu), ": expected [", b + 1,
              "] (batch size + 1)");
  }
  PTE_CHECK(cu.shape[0] >= 2, name, " has shape ", shape_str(cu),
            ": must hold at least 2 offsets (batch size + 1)");
  if (cu.device != PTE_DEVICE_CPU) return;
  const int32_t* c = static_cast<const int32_t*>(cu.data);
  PTE_CHECK(c[0] == 0, name, "[0] = ", c[0], ": must be 0");
  for (int64_t i = 0; i + 1 < cu.shape[0]; ++i) {
    int64_t len = int64_t(c[i + 1]) - c[i];
    PTE_CHECK(len >= 0, name, " must be non-decreasing: ", name, "[", i + 1, "] = ", c[i + 1],
              " < ", name, "[", i, "] = ", c[i]);
    PTE_CHECK(len <= len_bound, name, ": sequence ", i, " has length ", len,
              thd ? " > max_seqlen " : " > the padded sequence length ", len_bound);
  }
  PTE_CHECK(int64_t(c[cu.shape[0] - 1]) <= total, name, "[-1] = ", c[cu.shape[0] - 1],
            ": exceeds the number of tokens ", total);
}

// Validate p and build the problem. `backward` also checks d_out, d_q, d_k, d_v and lse.
AttnProblem resolve(const pte_attn_params_t& p, bool backward) {
  PTE_CHECK(pte_qkv_format_name(p.qkv_format) != nullptr, "qkv_format=", int(p.qkv_format),
            ": must be one of ", words(pte_qkv_format_name));
  PTE_CHECK(pte_mask_type_name(p.mask_type) != nullptr, "attn_mask_type=", int(p.mask_type),
            ": must be one of ", words(pte_mask_type_name));
  PTE_CHECK(pte_backend_name(p.backend) != nullptr, "backend=", int(p.backend),
            ": must be one of ", words(pte_backend_name));
  const pte_qkv_format_t f = p.qkv_format;
  const bool thd = f == PTE_QKV_THD;

  View q = view_of(p.q, "q", f);
  View k = view_of(p.k, "k", f);
  View v = view_of(p.v, "v", f);
  const pte_dtype_t dt = p.q.dtype;
  PTE_CHECK(dt == PTE_FLOAT32 || dt == PTE_FLOAT64 || dt == PTE_FLOAT16 || dt == PTE_BFLOAT16,
            "q has dtype ", pte_dtype_name(dt), ": must be float16, bfloat16, float32 or float64");
  check_dtype(p.k, "k", dt);
  check_dtype(p.v, "v", dt);
  check_same_device(p.k, "k", p.q, "q");
  check_same_device(p.v, "v", p.q, "q");
  if (!thd) {
    PTE_CHECK(k.b == q.b, "k has batch ", k.b, ": must equal q's batch ", q.b);
    PTE_CHECK(v.b == q.b, "v has batch ", v.b, ": must equal q's batch ", q.b);
  }
  PTE_CHECK(v.s == k.s, "v has ", v.s, " tokens: must equal k's ", k.s);
  PTE_CHECK(v.h == k.h, "v has ", v.h, " heads: must equal k's ", k.h);
  PTE_CHECK(k.d == q.d, "k has head dim ", k.d, ": must equal q's head dim ", q.d);
  PTE_CHECK(q.h % k.h == 0, "k has ", k.h, " heads: must divide q's ", q.h,
            " heads (GQA/MQA groups)");

  AttnProblem pr{};
  pr.dtype = dt;
  pr.device = p.q.device;
  pr.device_id = p.q.device_id;
  pr.thd = thd;
  pr.h = q.h;
  pr.h_kv = k.h;
  pr.d = q.d;
  pr.d_v = v.d;
  pr.q = p.q.data;
  pr.k = p.k.data;
  pr.v = p.v.data;
  pr.q_st = q.st;
  pr.k_st = k.st;
  pr.v_st = v.st;

  // Sequence lengths.
  const bool has_cu_q = present(p.cu_seqlens_q), has_cu_kv = present(p.cu_seqlens_kv);
  PTE_CHECK(has_cu_q == has_cu_kv, has_cu_q ? "cu_seqlens_kv" : "cu_seqlens_q",
            ": cu_seqlens_q and cu_seqlens_kv must be given together");
  if (thd) {
    PTE_CHECK(has_cu_q, "cu_seqlens_q: required for qkv_format='thd'");
    pr.b = p.cu_seqlens_q.shape[0] - 1;
    pr.t_q = q.s;
    pr.t_kv = k.s;
    // max_seqlen is an upper bound; without one the token count is always safe (no host sync).
    // One past the token count bounds nothing more (no sequence is longer) and would only add
    // empty row blocks: a max_seqlen of 2^40 walked 2^34 of them on the CPU.
    pr.s_q = p.max_seqlen_q > 0 ? std::min(p.max_seqlen_q, q.s) : q.s;
    pr.s_kv = p.max_seqlen_kv > 0 ? std::min(p.max_seqlen_kv, k.s) : k.s;
    check_cu_seqlens(p.cu_seqlens_q, "cu_seqlens_q", pr.b, pr.s_q, pr.t_q, true, p.q);
    check_cu_seqlens(p.cu_seqlens_kv, "cu_seqlens_kv", pr.b, pr.s_kv, pr.t_kv, true, p.q);
    PTE_CHECK(p.cu_seqlens_kv.shape[0] == p.cu_seqlens_q.shape[0], "cu_seqlens_kv has shape ",
              shape_str(p.cu_seqlens_kv), ": must match cu_seqlens_q ",
              shape_str(p.cu_seqlens_q));
  } else {
    pr.b = q.b;
    pr.s_q = q.s;
    pr.s_kv = k.s;
    pr.t_q = q.b * q.s;
    pr.t_kv = k.b * k.s;
    if (is_padding(p.mask_type)) {
      PTE_CHECK(has_cu_q, "cu_seqlens_q: attn_mask_type='padding*' with qkv_format='",
                pte_qkv_format_name(f), "' needs cu_seqlens_q and cu_seqlens_kv");
    } else {
      PTE_CHECK(!has_cu_q, "cu_seqlens_q: given with an attn_mask_type that has no padding; use a "
                "'padding*' mask type to apply sequence lengths");
    }
    if (has_cu_q) {
      check_cu_seqlens(p.cu_seqlens_q, "cu_seqlens_q", pr.b, pr.s_q, pr.t_q, false, p.q);
      check_cu_seqlens(p.cu_seqlens_kv, "cu_seqlens_kv", pr.b, pr.s_kv, pr.t_kv, false, p.q);
    }
  }
  PTE_CHECK(p.max_seqlen_q >= 0, "max_seqlen_q=", p.max_seqlen_q, ": must be >= 0");
  PTE_CHECK(p.max_seqlen_kv >= 0, "max_seqlen_kv=", p.max_seqlen_kv, ": must be >= 0");
  pr.cu_q = has_cu_q ? static_cast<const int32_t*>(p.cu_seqlens_q.data) : nullptr;
  pr.cu_kv = has_cu_kv ? static_cast<const int32_t*>(p.cu_seqlens_kv.data) : nullptr;

  // Window and alignment.
  PTE_CHECK(p.window_left >= -1, "window_size=(", p.window_left, ", ", p.window_right,
            "): left must be >= -1 (-1 = unbounded)");
  PTE_CHECK(p.window_right >= -1, "window_size=(", p.window_left, ", ", p.window_right,
            "): right must be >= -1 (-1 = unbounded)");
  pr.window_left = p.window_left;
  pr.window_right = is_causal(p.mask_type) ? 0 : p.window_right;
  pr.bottom_right = is_bottom_right(p.mask_type);

  // FlashMask column bounds (SPEC §9).
  if (present(p.startend_row_indices)) {
    const pte_tensor_t& t = p.startend_row_indices;
    const char* name = "startend_row_indices";
    PTE_CHECK(!thd, name, ": not supported with qkv_format='thd' (use bshd or sbhd)");
    PTE_CHECK(p.mask_type == PTE_MASK_NO_MASK || p.mask_type == PTE_MASK_CAUSAL, name,
              ": needs attn_mask_type 'no_mask' or 'causal', got '",
              pte_mask_type_name(p.mask_type), "'");
    check_ndim(t, name, 4, "[b, mask_heads, s_kv, C] (int32)");
    check_dtype(t, name, PTE_INT32);
    check_same_device(t, name, p.q, "q");
    check_contiguous(t, name);
    check_data(t, name);
    const bool causal = p.mask_type == PTE_MASK_CAUSAL;
    const int64_t c = t.shape[3], m = t.shape[1];
    PTE_CHECK(t.shape[0] == pr.b && t.shape[2] == pr.s_kv, name, " has shape ", shape_str(t),
              ": expected [", pr.b, ", mask_heads, ", pr.s_kv, ", C] (batch, key length)");
    PTE_CHECK(causal ? (c == 1 || c == 2) : (c == 2 || c == 4), name, " has shape ", shape_str(t),
              ": C = ", c, causal ? " with causal=True must be 1 or 2"
                                  : " with causal=False must be 2 or 4");
    PTE_CHECK(m == 1 || m == pr.h_kv || m == pr.h, name, " has shape ", shape_str(t),
              ": mask_heads = ", m, " must be 1, the kv heads (", pr.h_kv,
              ") or the query heads (", pr.h, ")");
    if (t.device == PTE_DEVICE_CPU) {
      const int32_t* v = static_cast<const int32_t*>(t.data);
      const int64_t n = pr.b * m * pr.s_kv * c;
      for (int64_t e = 0; e < n; ++e) {
        PTE_CHECK(v[e] >= 0 && v[e] <= pr.s_q, name, ": value ", v[e], " at flat index ", e,
                  " is outside [0, s_q = ", pr.s_q, "]");
      }
    }
    pr.startend = static_cast<const int32_t*>(t.data);
    pr.startend_c = int32_t(c);
    pr.startend_heads = m;
    pr.startend_causal = causal;
  }

  PTE_CHECK(std::isfinite(p.softmax_scale) && p.softmax_scale > 0, "softmax_scale=",
            p.softmax_scale, ": must be finite and > 0");
  pr.scale = p.softmax_scale;
  PTE_CHECK(p.dropout >= 0.f && p.dropout < 1.f, "dropout=", p.dropout, ": must be in [0, 1)");
  pr.dropout = p.dropout;
  pr.seed = p.seed;
  pr.offset = p.offset;
  pr.seed_offset_device = p.seed_offset_device;
  PTE_CHECK(p.seed_offset_device == nullptr || p.q.device == PTE_DEVICE_CUDA,
            "seed_offset_device: only for CUDA tensors; on the CPU pass seed and offset");
  pr.deterministic = p.deterministic != 0;
  pr.stream = p.stream;
  pr.workspace = p.workspace;
  pr.workspace_size = p.workspace_size;

  // Outputs.
  View ov{q.b, q.s, q.h, v.d, {}};
  const bool need_lse = backward || p.dropout > 0.f;
  if (present(p.lse) || need_lse) {
    if (thd) check_shape(p.lse, "lse", {pr.h, pr.t_q}, "[h, t_q] (float32)");
    else check_shape(p.lse, "lse", {pr.b, pr.h, pr.s_q}, "[b, h, s_q] (float32)");
    check_dtype(p.lse, "lse", PTE_FLOAT32);
    check_same_device(p.lse, "lse", p.q, "q");
    check_contiguous(p.lse, "lse");
    check_data(p.lse, "lse");
    pr.lse = static_cast<float*>(p.lse.data);
  }
  pr.out_st = check_like(p.out, "out", f, ov, dt, p.q, "q");
  pr.out = p.out.data;
  if (backward) {
    pr.grad_out_st = check_like(p.d_out, "d_out", f, ov, dt, p.q, "q");
    pr.grad_q_st = check_like(p.d_q, "d_q", f, q, dt, p.q, "q");
    pr.grad_k_st = check_like(p.d_k, "d_k", f, k, dt, p.q, "q");
    pr.grad_v_st = check_like(p.d_v, "d_v", f, v, dt, p.q, "q");
    pr.grad_out = p.d_out.data;
    pr.grad_q = p.d_q.data;
    pr.grad_k = p.d_k.data;
    pr.grad_v = p.d_v.data;
  }
  return pr;
}

// The entry of a concrete backend, or INVALID_ARGUMENT.
const AttnBackend& entry(pte_backend_t id) {
  const AttnBackend* e = find_attn_backend(id);
  PTE_CHECK(e != nullptr, "backend=", int(id), ": not a concrete backend");
  return *e;
}

// "" when `b` can run pr, else the reason (static or thread-local text).
const char* reason(const AttnProblem& pr, const AttnBackend& b, bool backward) {
  thread_local std::string text;
  const char* name = pte_backend_name(b.id);
  if (pr.device != b.device) {
    text = b.device == PTE_DEVICE_CUDA
               ? str("backend '", name, "' runs on CUDA devices; the tensors are on the CPU")
               : str("backend '", name, "' runs on CPU tensors; the tensors are on a CUDA device");
    return text.c_str();
  }
  if (b.check == nullptr) {
    text = str("backend '", name, "' was not built into this paddle_te (", b.not_built, ")");
    return text.c_str();
  }
  return b.check(pr, backward);
}

// The backend that runs pr: the requested one if it can, else (auto) the first entry of the
// table that can, the entries drawing the documented Philox mask first when dropout is on
// (attn_backends.cc says why).
const AttnBackend& choose(const AttnProblem& pr, pte_backend_t requested, bool backward) {
  if (requested != PTE_BACKEND_AUTO) {
    const AttnBackend& b = entry(requested);
    const char* why = reason(pr, b, backward);
    if (*why) PTE_UNSUPPORTED(why);
    return b;
  }
  size_t n = 0;
  const AttnBackend* table = attn_backends(&n);
  // Without dropout one pass in table order; with dropout the Philox entries, then the rest.
  const int passes = pr.dropout > 0 ? 2 : 1;
  std::string reasons;
  for (int pass = 0; pass < passes; ++pass) {
    for (size_t i = 0; i < n; ++i) {
      const AttnBackend& b = table[i];
      if (b.device != pr.device || (passes == 2 && b.philox_dropout != (pass == 0))) continue;
      const char* why = reason(pr, b, backward);
      if (!*why) return b;
      reasons += str(reasons.empty() ? "" : "; ", pte_backend_name(b.id), ": ", why);
    }
  }
  PTE_UNSUPPORTED("no backend can run this call (", reasons, ")");
}

size_t workspace_of(const AttnBackend& b, const AttnProblem& pr, bool backward) {
  return backward ? b.bwd_workspace(pr) : b.fwd_workspace(pr);
}

void run(const pte_attn_params_t* p, bool backward) {
  PTE_CHECK(p != nullptr, "params: null pointer");
  AttnProblem pr = resolve(*p, backward);
  const AttnBackend& b = choose(pr, p->backend, backward);
  // The one workspace check: backends trust the size they asked for.
  const size_t need = workspace_of(b, pr, backward);
  PTE_CHECK(pr.workspace_size >= need && (need == 0 || pr.workspace != nullptr),
            "workspace_size=", pr.workspace_size, ": the ", pte_backend_name(b.id), " ",
            backward ? "backward" : "forward", " needs ", need, " bytes");
  backward ? b.bwd(pr) : b.fwd(pr);
}

size_t workspace_size(const pte_attn_params_t* p, bool backward) {
  PTE_CHECK(p != nullptr, "params: null pointer");
  AttnProblem pr = resolve(*p, backward);
  return workspace_of(choose(pr, p->backend, backward), pr, backward);
}

}  // namespace
}  // namespace pte

extern "C" {

void pte_attn_params_init(pte_attn_params_t* p) {
  if (p == nullptr) return;
  *p = pte_attn_params_t{};
  p->qkv_format = PTE_QKV_BSHD;
  p->mask_type = PTE_MASK_NO_MASK;
  p->window_left = -1;
  p->window_right = -1;
  p->softmax_scale = 0.0;
  p->backend = PTE_BACKEND_AUTO;
}

pte_status_t pte_attn_select_backend(const pte_attn_params_t* p, int backward,
                                     pte_backend_t* chosen) {
  return pte::api_guard([&] {
    PTE_CHECK(p != nullptr && chosen != nullptr, "params/chosen: null pointer");
    pte::AttnProblem pr = pte::resolve(*p, backward != 0);
    *chosen = pte::choose(pr, p->backend, backward != 0).id;
  });
}

pte_status_t pte_attn_check(const pte_attn_params_t* p, pte_backend_t backend, int backward) {
  return pte::api_guard([&] {
    PTE_CHECK(p != nullptr, "params: null pointer");
    pte::AttnProblem pr = pte::resolve(*p, backward != 0);
    pte::choose(pr, backend, backward != 0);
  });
}

pte_status_t pte_attn_fwd_workspace_size(const pte_attn_params_t* p, size_t* bytes) {
  return pte::api_guard([&] {
    PTE_CHECK(bytes != nullptr, "bytes: null pointer");
    *bytes = pte::workspace_size(p, false);
  });
}

pte_status_t pte_attn_bwd_workspace_size(const pte_attn_params_t* p, size_t* bytes) {
  return pte::api_guard([&] {
    PTE_CHECK(bytes != nullptr, "bytes: null pointer");
    *bytes = pte::workspace_size(p, true);
  });
}

pte_status_t pte_attn_fwd(const pte_attn_params_t* p) {
  return pte::api_guard([&] { pte::run(p, false); });
}

pte_status_t pte_attn_bwd(const pte_attn_params_t* p) {
  return pte::api_guard([&] { pte::run(p, true); });
}

int pte_backend_available(pte_backend_t backend, const char** reason) {
  thread_local std::string why;
  const pte::AttnBackend* b = pte::find_attn_backend(backend);
  if (backend == PTE_BACKEND_AUTO) why.clear();  // the CPU kernels are always there
  else if (b == nullptr) why = pte::str("backend=", int(backend), ": unknown");
  else if (b->available == nullptr) why = pte::str("not built: ", b->not_built);
  else why = b->available();
  if (reason) *reason = why.c_str();
  return why.empty() ? 1 : 0;
}

int pte_dropout_keep(uint64_t seed, uint64_t offset, float p, int64_t batch, int64_t head,
                     int64_t num_heads, int64_t query, int64_t key) {
  return pte::dropout_keep(seed, offset, pte::dropout_threshold(p), batch, head, num_heads, query,
                           key)
             ? 1
             : 0;
}

}  // extern "C"
