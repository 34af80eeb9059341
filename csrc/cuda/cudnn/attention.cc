// The cuDNN fused-attention backend: paddle_te's AttnProblem as cudnn-frontend SDPA graphs.
//
// Mapping (cuDNN sees every tensor as [b, h, s, d] with element strides):
//   * bshd / sbhd: the problem's (batch, seq, head) strides as they are;
//   * thd: ragged offsets (cu_seqlens[i] * token stride, computed on the device) with the padding
//     mask, max_seqlen as s; cuDNN needs sm_90 for ragged tensors;
//   * padding: per-sequence lengths from cu_seqlens (a tiny kernel, no host sync);
//   * window (left, right) with alignment: cuDNN's diagonal band. cuDNN's left bound is
//     exclusive (key j visible iff j > i + delta - left_bound), ours inclusive: left_bound = left+1.
//     The right bound is inclusive in both. Causal is right = 0;
//   * lse: cuDNN's softmax stats are float32 [b, h, s_q, 1] = natural-log sum of exp of the
//     scaled scores: our lse layout for bshd/sbhd, written in place; thd goes through a padded
//     buffer in the workspace and is copied into [h, t_q];
//   * dropout: cuDNN's own Philox stream from (seed, offset): NOT the keep function of the
//     flash/CPU kernels (attention.h), so a cudnn forward must be paired with a cudnn backward.
// What cuDNN does not guarantee is fixed up by aux_kernels.cu (only when the shape needs it):
// rows that see no key (output 0, lse -inf, gradient 0), padded positions (0).
//
// Graphs are built once per key (everything that changes the graph: device, dtype, shapes,
// strides, mask, dropout, determinism) and kept in a bounded LRU cache shared by all threads;
// building happens outside the lock. A graph's execute() is const and takes the handle, stream
// and pointers per call, so one graph serves concurrent callers. Handles are per (thread, device).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/kernels.h"
#include "cuda/common.cuh"
#include "cuda/cudnn/aux_kernels.h"
#include "cuda/cudnn/frontend.h"

namespace pte {
namespace cudnn {
namespace {

// Graphs kept per process; each holds a few KB of host state plus cuDNN's compiled plan.
constexpr size_t kCacheCapacity = 256;
// Offsets into the caller's workspace are aligned to this many bytes (TMA / vector loads).
constexpr size_t kAlign = 256;
// cuDNN's head-dim limit on sm_90 (also the paddle_te GPU limit, SPEC §3).
constexpr int64_t kMaxHeadDim = 256;
// Tensor addresses and strides must be 16-byte aligned for cuDNN's TMA-based kernels.
constexpr int64_t kAlignBytes = 16;

// Fixed tensor UIDs: the variant pack is built from these.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV,
  kScale, kSeed, kOffset, kLenQ, kLenKV,
  kRagBase = 32  // + RaggedSlot
};

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// ---------------------------------------------------------------------------------------------
// Resolved graph parameters (what the key is made of).

struct Plan {
  bool backward;
  bool padding;        // seq_len tensors (from cu_seqlens, or constant as a cuDNN workaround)
  bool stats;          // forward writes softmax stats
  bool stats_buffer;   // stats go through the workspace (thd, or the backward's sanitised copy)
  bool fix_rows;       // run the row fix-up kernels
  bool wide_offsets;   // int64 ragged offsets
  int64_t left_bound;  // cuDNN's (exclusive) left bound, -1 = none
  int64_t right_bound; // -1 = none
};

int64_t window_or_none(int64_t w, const AttnProblem& p) {
  // A window wider than any distance between a query and a key is no window.
  return (w < 0 || w >= p.s_q + p.s_kv) ? -1 : w;
}

Plan make_plan(const AttnProblem& p, bool backward) {
  Plan pl{};
  pl.backward = backward;
  const int64_t left = window_or_none(p.window_left, p);
  pl.right_bound = window_or_none(p.window_right, p);
  pl.left_bound = left < 0 ? -1 : left + 1;
  pl.padding = p.thd || p.cu_q != nullptr || p.cu_kv != nullptr;
  // cuDNN rejects a diagonal band with s_q > s_kv unless lengths are given: give constant ones.
  const bool band = pl.left_bound >= 0 || pl.right_bound >= 0;
  if (!pl.padding && band && p.s_q > p.s_kv) pl.padding = true;
  pl.fix_rows = may_have_empty_rows(p);
  pl.stats = backward || p.lse != nullptr;
  pl.stats_buffer = pl.stats && (p.thd || (backward && pl.fix_rows));
  int64_t q_seq = std::max(p.q_st.seq, p.out_st.seq);
  int64_t kv_seq = std::max(p.k_st.seq, p.v_st.seq);
  if (backward) {
    q_seq = std::max({q_seq, p.grad_out_st.seq, p.grad_q_st.seq});
    kv_seq = std::max({kv_seq, p.grad_k_st.seq, p.grad_v_st.seq});
  }
  const int64_t max_off = std::max(p.t_q * q_seq, p.t_kv * kv_seq);
  pl.wide_offsets = p.thd && max_off > int64_t(INT32_MAX);
  return pl;
}

std::string make_key(const AttnProblem& p, const Plan& pl) {
  std::vector<int64_t> k = {
      pl.backward, p.device_id, int64_t(p.dtype), p.b, p.h, p.h_kv, p.d, p.d_v, p.s_q, p.s_kv,
      p.thd, p.thd ? p.t_q : 0, p.thd ? p.t_kv : 0, pl.padding, pl.stats, pl.wide_offsets,
      pl.left_bound, pl.right_bound, p.bottom_right, p.dropout > 0.f,
      p.seed_offset_device != nullptr, pl.backward && p.deterministic};
  int64_t drop_bits;  // the probability is part of the graph: key on all of its bits
  static_assert(sizeof(drop_bits) == sizeof(p.dropout), "dropout is a double");
  std::memcpy(&drop_bits, &p.dropout, sizeof(drop_bits));
  k.push_back(drop_bits);
  auto add = [&](const Strides& s) { k.insert(k.end(), {s.batch, s.seq, s.head}); };
  add(p.q_st), add(p.k_st), add(p.v_st), add(p.out_st);
  if (pl.backward) add(p.grad_out_st), add(p.grad_q_st), add(p.grad_k_st), add(p.grad_v_st);
  return std::string(reinterpret_cast<const char*>(k.data()), k.size() * sizeof(int64_t));
}

// ---------------------------------------------------------------------------------------------
// Graph construction.

struct Entry {
  std::shared_ptr<fe::graph::Graph> graph;  // null when the build failed
  std::string error;
  int64_t workspace = 0;  // the largest cuDNN workspace of the plans below
  // Executable plan indices, cuDNN's heuristic choice first; more than one only when the graph is
  // autotuned (see tune_plan). `chosen` is the plan every call runs once tuning is done.
  std::vector<int64_t> plans;
  std::string desc;  // for PTE_CUDNN_DEBUG
  mutable std::mutex tune_mu;
  mutable std::atomic<int64_t> chosen{-1};
};

// PTE_CUDNN_AUTOTUNE=1 turns on the one-time plan autotuning (off by default: cuDNN's heuristic
// choice runs, as in torch; on 2026-11-25 on an H100 the heuristic choice was the fastest plan of
// every case timed, docs/performance.md). PTE_CUDNN_DEBUG=1 prints the plans of each graph built
// (and the tuning times) to stderr.
bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return dflt;
  return !(v[0] == '0' && v[1] == 0);
}
bool autotune_on() {
  static const bool on = env_flag("PTE_CUDNN_AUTOTUNE", false);
  return on;
}
bool debug_on() {
  static const bool on = env_flag("PTE_CUDNN_DEBUG", false);
  return on;
}
// At most this many plans are built and timed per graph (each build may compile a kernel).
constexpr size_t kMaxTunePlans = 4;
// A plan needing more cuDNN workspace than this (and than the heuristic choice) is not a candidate.
constexpr int64_t kTuneWorkspaceCap = int64_t(256) << 20;

fe::DataType_t io_type(pte_dtype_t t) {
  return t == PTE_BFLOAT16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF;
}

using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// [b, heads, s, dim] view with the problem's strides. thd: the batch stride is replaced by the
// ragged offsets; a padded-equivalent stride keeps the descriptor well formed.
std::vector<int64_t> dims(const AttnProblem& p, int64_t heads, int64_t s, int64_t dim) {
  return {p.b, heads, s, dim};
}
std::vector<int64_t> strides(const AttnProblem& p, const Strides& st, int64_t s) {
  return {p.thd ? s * st.seq : st.batch, st.head, st.seq, 1};
}

class Builder {
 public:
  Builder(const AttnProblem& p, const Plan& pl) : p_(p), pl_(pl) {
    g_ = std::make_shared<fe::graph::Graph>();
    g_->set_io_data_type(io_type(p.dtype))
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
  }

  TensorPtr data(const char* name, int64_t uid, int64_t heads, int64_t s, int64_t dim,
                 const Strides& st, RaggedSlot slot) {
    auto t = g_->tensor(fe::graph::Tensor_attributes()
                            .set_name(name)
                            .set_uid(uid)
                            .set_dim(dims(p_, heads, s, dim))
                            .set_stride(strides(p_, st, s)));
    if (p_.thd) t->set_ragged_offset(ragged(slot));
    return t;
  }
  void output(const TensorPtr& t, int64_t uid, int64_t heads, int64_t s, int64_t dim,
              const Strides& st, RaggedSlot slot) {
    t->set_output(true).set_uid(uid).set_dim(dims(p_, heads, s, dim)).set_stride(strides(p_, st, s));
    if (p_.thd) t->set_ragged_offset(ragged(slot));
  }
  TensorPtr scalar(const char* name, int64_t uid, fe::DataType_t type, bool by_value) {
    return g_->tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim({1, 1, 1, 1})
                          .set_stride({1, 1, 1, 1})
                          .set_is_pass_by_value(by_value)
                          .set_data_type(type));
  }
  TensorPtr lengths(const char* name, int64_t uid) {
    return g_->tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim({p_.b, 1, 1, 1})
                          .set_stride({1, 1, 1, 1})
                          .set_data_type(fe::DataType_t::INT32));
  }
  std::vector<int64_t> stats_dims() const { return {p_.b, p_.h, p_.s_q, 1}; }
  std::vector<int64_t> stats_strides() const { return {p_.h * p_.s_q, p_.s_q, 1, 1}; }

  // Mask, scale and dropout options, common to the forward and the backward attributes.
  template <typename Attrs>
  void common(Attrs& a) {
    a.set_attn_scale(scalar("scale", kScale, fe::DataType_t::FLOAT, true));
    if (pl_.padding) {
      a.set_padding_mask(true)
          .set_seq_len_q(lengths("len_q", kLenQ))
          .set_seq_len_kv(lengths("len_kv", kLenKV));
    }
    if (pl_.left_bound >= 0) a.set_diagonal_band_left_bound(int(pl_.left_bound));
    if (pl_.right_bound >= 0) a.set_diagonal_band_right_bound(int(pl_.right_bound));
    if (pl_.left_bound >= 0 || pl_.right_bound >= 0)
      a.set_diagonal_alignment(p_.bottom_right ? fe::DiagonalAlignment_t::BOTTOM_RIGHT
                                               : fe::DiagonalAlignment_t::TOP_LEFT);
    if (p_.dropout > 0.f) {
      const bool by_value = p_.seed_offset_device == nullptr;
      a.set_dropout(float(p_.dropout), scalar("seed", kSeed, fe::DataType_t::INT64, by_value),
                    scalar("offset", kOffset, fe::DataType_t::INT64, by_value));
    }
  }

  std::shared_ptr<fe::graph::Graph> forward() {
    auto Q = data("Q", kQ, p_.h, p_.s_q, p_.d, p_.q_st, kRagQ);
    auto K = data("K", kK, p_.h_kv, p_.s_kv, p_.d, p_.k_st, kRagK);
    auto V = data("V", kV, p_.h_kv, p_.s_kv, p_.d_v, p_.v_st, kRagV);
    auto a = fe::graph::SDPA_attributes().set_name("pte_sdpa_fwd").set_generate_stats(pl_.stats);
    common(a);
    auto [O, stats] = g_->sdpa(Q, K, V, a);
    output(O, kO, p_.h, p_.s_q, p_.d_v, p_.out_st, kRagO);
    if (pl_.stats) {
      stats->set_output(true)
          .set_uid(kStats)
          .set_data_type(fe::DataType_t::FLOAT)
          .set_dim(stats_dims())
          .set_stride(stats_strides());
    }
    return g_;
  }

  std::shared_ptr<fe::graph::Graph> backward() {
    auto Q = data("Q", kQ, p_.h, p_.s_q, p_.d, p_.q_st, kRagQ);
    auto K = data("K", kK, p_.h_kv, p_.s_kv, p_.d, p_.k_st, kRagK);
    auto V = data("V", kV, p_.h_kv, p_.s_kv, p_.d_v, p_.v_st, kRagV);
    auto O = data("O", kO, p_.h, p_.s_q, p_.d_v, p_.out_st, kRagO);
    auto dO = data("dO", kDO, p_.h, p_.s_q, p_.d_v, p_.grad_out_st, kRagDO);
    auto stats = g_->tensor(fe::graph::Tensor_attributes()
                                .set_name("stats")
                                .set_uid(kStats)
                                .set_dim(stats_dims())
                                .set_stride(stats_strides())
                                .set_data_type(fe::DataType_t::FLOAT));
    auto a = fe::graph::SDPA_backward_attributes().set_name("pte_sdpa_bwd");
    common(a);
    if (p_.deterministic) a.set_deterministic_algorithm(true);
    if (p_.thd) {
      // Bounds the dQ / softmax-sum scratch by the packed token counts instead of b * s.
      a.set_max_total_seq_len_q(p_.t_q).set_max_total_seq_len_kv(p_.t_kv);
    }
    auto [dQ, dK, dV] = g_->sdpa_backward(Q, K, V, O, dO, stats, a);
    output(dQ, kDQ, p_.h, p_.s_q, p_.d, p_.grad_q_st, kRagDQ);
    output(dK, kDK, p_.h_kv, p_.s_kv, p_.d, p_.grad_k_st, kRagDK);
    output(dV, kDV, p_.h_kv, p_.s_kv, p_.d_v, p_.grad_v_st, kRagDV);
    return g_;
  }

 private:
  TensorPtr ragged(RaggedSlot slot) {
    return g_->tensor(fe::graph::Tensor_attributes()
                          .set_name("ragged_offset")
                          .set_uid(kRagBase + slot)
                          .set_dim({p_.b + 1, 1, 1, 1})
                          .set_stride({1, 1, 1, 1})
                          .set_data_type(pl_.wide_offsets ? fe::DataType_t::INT64
                                                          : fe::DataType_t::INT32));
  }

  const AttnProblem& p_;
  const Plan& pl_;
  std::shared_ptr<fe::graph::Graph> g_;
};

// ---------------------------------------------------------------------------------------------
// Device, handle and cache.

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    PTE_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) PTE_CUDA_CHECK(cudaSetDevice(device));
    else prev_ = -1;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// One handle per (thread, device). Handles are not destroyed: a thread's handles live as long as
// the thread, and destroying them during process exit can run after the CUDA driver has shut
// down. Thread pools (Paddle's, Python's) are bounded, so so is this.
cudnnHandle_t handle_for(int device) {
  thread_local std::unordered_map<int, cudnnHandle_t> handles;
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  cudnnStatus_t st = fe::detail::create_handle(&h);
  if (st != CUDNN_STATUS_SUCCESS)
    throw Error(PTE_ERROR_CUDA, str("cudnnCreate failed: ", fe::detail::get_error_string(st)));
  handles.emplace(device, h);
  return h;
}

class GraphCache {
 public:
  std::shared_ptr<const Entry> find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.first);
    return it->second.second;
  }
  std::shared_ptr<const Entry> insert(const std::string& key, std::shared_ptr<const Entry> e) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second.second;  // another thread built it meanwhile
    lru_.push_front(key);
    map_.emplace(key, std::make_pair(lru_.begin(), e));
    while (map_.size() > kCacheCapacity) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    return e;
  }

 private:
  std::mutex mu_;
  std::list<std::string> lru_;
  std::unordered_map<std::string,
                     std::pair<std::list<std::string>::iterator, std::shared_ptr<const Entry>>>
      map_;
};

GraphCache& cache() {
  static GraphCache* c = new GraphCache();  // never destroyed: graphs may outlive static dtors
  return *c;
}

// After the heuristic build (only cuDNN's first choice is built): when autotuning, also build
// the next few engine configs the heuristics listed, keeping those that build and whose workspace
// is acceptable. The graph's workspace becomes the largest of them, so any plan can run in it.
// Dropout graphs are not tuned (the fwd and bwd must keep cuDNN's paired choice).
void collect_plans(const AttnProblem& p, const Plan& pl, Entry& e) {
  const fe::graph::Graph& g = *e.graph;
  const int64_t n = g.get_execution_plan_count();
  int64_t cand = -1;
  for (int64_t i = 0; i < n && cand < 0; ++i) {
    int64_t w = 0;
    if (g.get_workspace_size_plan_at_index(i, w).is_good()) cand = i;  // the only built plan
  }
  if (cand >= 0) e.plans.push_back(cand);
  const bool tune = autotune_on() && p.dropout <= 0.f && cand >= 0;
  if (tune) {
    const int64_t cap = std::max(e.workspace, kTuneWorkspaceCap);
    for (int64_t i = 0; i < n && e.plans.size() < kMaxTunePlans; ++i) {
      if (i == cand) continue;
      int64_t w = 0;
      if (!e.graph->build_plan_at_index(handle_for(p.device_id), i).is_good()) continue;
      if (!g.get_workspace_size_plan_at_index(i, w).is_good() || w > cap) continue;
      e.plans.push_back(i);
      e.workspace = std::max(e.workspace, w);
    }
  }
  if (e.plans.size() <= 1) e.chosen.store(cand);
  if (debug_on()) {
    e.desc = str(pl.backward ? "bwd" : "fwd", " b=", p.b, " h=", p.h, "/", p.h_kv, " s=", p.s_q,
                 "/", p.s_kv, " d=", p.d, " thd=", p.thd, " pad=", pl.padding, " bounds=",
                 pl.left_bound, "/", pl.right_bound, " dropout=", p.dropout);
    std::string names;
    for (int64_t i : e.plans) {
      std::string nm;
      int64_t w = 0;
      (void)g.get_plan_name_at_index(i, nm);
      (void)g.get_workspace_size_plan_at_index(i, w);
      names += str(" [", i, "] ", nm, " ws=", w, ";");
    }
    std::fprintf(stderr, "[pte cudnn] built %s: %lld engine configs, heuristic choice [%lld]; "
                 "plans:%s\n", e.desc.c_str(), (long long)n, (long long)cand, names.c_str());
  }
}

std::shared_ptr<const Entry> build(const AttnProblem& p, const Plan& pl) {
  auto e = std::make_shared<Entry>();
  try {
    Builder b(p, pl);
    auto g = pl.backward ? b.backward() : b.forward();
    cudnnHandle_t h = handle_for(p.device_id);
    fe::error_t st = g->build(h, {fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
    if (st.is_good()) st = g->get_workspace_size(e->workspace);
    if (st.is_good()) {
      e->graph = g;
      collect_plans(p, pl, *e);
    } else {
      e->error = "cuDNN cannot run this call: " + st.get_message();
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& ex) {
    e->error = str("cuDNN cannot run this call: ", ex.what());
  }
  return e;
}

// The graph for p (built on first use). Failed builds are cached too, so check() stays cheap.
std::shared_ptr<const Entry> graph_for(const AttnProblem& p, const Plan& pl) {
  const std::string key = make_key(p, pl);
  if (auto e = cache().find(key)) return e;
  DeviceGuard guard(p.device_id);
  return cache().insert(key, build(p, pl));
}

// ---------------------------------------------------------------------------------------------
// Checks that need no graph.

bool strides_aligned(const Strides& st, int64_t elem) {
  return (st.batch * elem) % kAlignBytes == 0 && (st.seq * elem) % kAlignBytes == 0 &&
         (st.head * elem) % kAlignBytes == 0;
}
bool ptr_aligned(const void* ptr) {
  return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % kAlignBytes == 0;
}

const char* static_reason(const AttnProblem& p, bool backward, std::string& buf) {
  std::string why;
  if (load_library(&why) == 0) return (buf = why).c_str();
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, p.device_id) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, p.device_id) !=
          cudaSuccess) {
    cudaGetLastError();
    return (buf = str("cannot query CUDA device ", p.device_id)).c_str();
  }
  const int arch = major * 10 + minor;
  if (arch < 80) return (buf = str("cuDNN fused attention needs sm_80 or newer; device ",
                                   p.device_id, " is sm_", arch)).c_str();
  if (p.dtype != PTE_FLOAT16 && p.dtype != PTE_BFLOAT16)
    return (buf = str("dtype ", pte_dtype_name(p.dtype),
                      ": the cudnn backend takes float16 or bfloat16")).c_str();
  if (p.d % 8 || p.d_v % 8 || p.d > kMaxHeadDim || p.d_v > kMaxHeadDim)
    return (buf = str("head_dim=", p.d, ", head_dim_v=", p.d_v,
                      ": the cudnn backend needs multiples of 8 <= ", kMaxHeadDim)).c_str();
  if (p.thd && arch < 90)
    return (buf = str("qkv_format='thd' needs cuDNN's ragged offsets, which need sm_90 or "
                      "newer; device ", p.device_id, " is sm_", arch)).c_str();
  if (p.dropout > 0.f && p.bottom_right)
    return "cuDNN does not support dropout with bottom-right causal masks";
  const int64_t elem = 2;
  bool aligned = strides_aligned(p.q_st, elem) && strides_aligned(p.k_st, elem) &&
                 strides_aligned(p.v_st, elem) && strides_aligned(p.out_st, elem) &&
                 ptr_aligned(p.q) && ptr_aligned(p.k) && ptr_aligned(p.v) && ptr_aligned(p.out);
  if (backward)
    aligned = aligned && strides_aligned(p.grad_out_st, elem) &&
              strides_aligned(p.grad_q_st, elem) && strides_aligned(p.grad_k_st, elem) &&
              strides_aligned(p.grad_v_st, elem) && ptr_aligned(p.grad_out) &&
              ptr_aligned(p.grad_q) && ptr_aligned(p.grad_k) && ptr_aligned(p.grad_v);
  if (!aligned)
    return "cuDNN needs 16-byte aligned tensor addresses and strides (multiples of 8 elements)";
  return "";
}

// ---------------------------------------------------------------------------------------------
// Workspace layout: [cuDNN's workspace][len_q][len_kv][ragged offsets][stats buffer].

struct Layout {
  size_t cudnn = 0, len_q = 0, len_kv = 0, ragged = 0, stats = 0, total = 0;
};

Layout layout(const AttnProblem& p, const Plan& pl, int64_t cudnn_ws) {
  Layout l;
  size_t at = align_up(size_t(cudnn_ws));
  if (pl.padding) {
    l.len_q = at;
    at += align_up(sizeof(int32_t) * p.b);
    l.len_kv = at;
    at += align_up(sizeof(int32_t) * p.b);
  }
  if (p.thd) {
    l.ragged = at;
    const size_t one = align_up((pl.wide_offsets ? 8 : 4) * size_t(p.b + 1));
    at += one * (pl.backward ? kNumRagged : kRagO + 1);
  }
  if (pl.stats_buffer) {
    l.stats = at;
    at += align_up(sizeof(float) * size_t(p.b * p.h * p.s_q));
  }
  l.total = at;
  return l;
}

std::shared_ptr<const Entry> ready_graph(const AttnProblem& p, const Plan& pl) {
  auto e = graph_for(p, pl);
  if (!e->graph) PTE_UNSUPPORTED(e->error);
  return e;
}

char* ws_at(const AttnProblem& p, size_t off) { return static_cast<char*>(p.workspace) + off; }

// Lengths and ragged offsets into the workspace.
void prepare_lengths(const AttnProblem& p, const Plan& pl, const Layout& l) {
  if (!pl.padding) return;
  SeqlenParams s{};
  s.cu_q = p.cu_q;
  s.cu_kv = p.cu_kv;
  s.b = p.b;
  s.s_q = p.s_q;
  s.s_kv = p.s_kv;
  s.len_q = reinterpret_cast<int32_t*>(ws_at(p, l.len_q));
  s.len_kv = reinterpret_cast<int32_t*>(ws_at(p, l.len_kv));
  s.wide = pl.wide_offsets;
  if (p.thd) {
    const Strides* st[kNumRagged] = {&p.q_st,        &p.k_st,         &p.v_st,
                                     &p.out_st,      &p.grad_out_st,  &p.grad_q_st,
                                     &p.grad_k_st,   &p.grad_v_st};
    const bool kv[kNumRagged] = {false, true, true, false, false, false, true, true};
    const int n = pl.backward ? kNumRagged : kRagO + 1;
    const size_t one = align_up((pl.wide_offsets ? 8 : 4) * size_t(p.b + 1));
    for (int k = 0; k < n; ++k) {
      s.off[k] = ws_at(p, l.ragged + k * one);
      s.seq_stride[k] = st[k]->seq;
      s.kv_side[k] = kv[k];
    }
  }
  launch_seqlens(s, p.stream);
}

void add_lengths(const AttnProblem& p, const Plan& pl, const Layout& l,
                 std::unordered_map<int64_t, void*>& pack) {
  if (pl.padding) {
    pack[kLenQ] = ws_at(p, l.len_q);
    pack[kLenKV] = ws_at(p, l.len_kv);
  }
  if (p.thd) {
    const size_t one = align_up((pl.wide_offsets ? 8 : 4) * size_t(p.b + 1));
    const int n = pl.backward ? kNumRagged : kRagO + 1;
    for (int k = 0; k < n; ++k) pack[kRagBase + k] = ws_at(p, l.ragged + k * one);
  }
}

// Dropout's seed and offset: device-resident (a framework generator's state) or the call's own
// values, copied into `held`, which the caller keeps alive until the graph has been executed.
void add_dropout(const AttnProblem& p, int64_t (&held)[2],
                 std::unordered_map<int64_t, void*>& pack) {
  if (p.dropout <= 0.f) return;
  held[0] = int64_t(p.seed);
  held[1] = int64_t(p.offset);
  int64_t* src = p.seed_offset_device ? const_cast<int64_t*>(p.seed_offset_device) : held;
  pack[kSeed] = src;
  pack[kOffset] = src + 1;
}

// One-time autotuning of a graph with several plans, on its first call outside CUDA-graph
// capture: each plan runs on the call's stream with the call's buffers and workspace (every plan
// computes the same outputs from the same inputs; the chosen plan runs the call afterwards), timed
// with CUDA events (best of 2 rounds of 3 runs after a warm-up). A plan replaces cuDNN's heuristic
// choice only when it is over 3% faster. Returns the plan to run, -1 for the heuristic choice.
int64_t tune_plan(const AttnProblem& p, const Entry& e, cudnnHandle_t h,
                  const std::unordered_map<int64_t, void*>& pack) {
  std::lock_guard<std::mutex> lock(e.tune_mu);
  int64_t done = e.chosen.load();
  if (done >= 0) return done;
  cudaStream_t s = cudaStream_t(p.stream);
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return -1;  // not now: tune on a later call
  }
  cudaEvent_t a = nullptr, b = nullptr;
  if (cudaEventCreate(&a) != cudaSuccess || cudaEventCreate(&b) != cudaSuccess) {
    cudaGetLastError();
    if (a) cudaEventDestroy(a);
    return -1;
  }
  auto run = [&](int64_t i) {
    std::unordered_map<int64_t, void*> pk = pack;  // execute() adds to the map: a fresh copy
    return e.graph->execute_plan_at_index(h, pk, p.workspace, i).is_good();
  };
  const size_t n = e.plans.size();
  std::vector<float> best(n, INFINITY);
  for (int round = 0; round < 2; ++round) {
    for (size_t j = 0; j < n; ++j) {
      const int64_t i = e.plans[j];
      if (round == 0 && !run(i)) continue;  // warm-up; a plan that fails is never chosen
      if (round > 0 && std::isinf(best[j])) continue;
      bool ok = cudaEventRecord(a, s) == cudaSuccess;
      for (int r = 0; r < 3 && ok; ++r) ok = run(i);
      ok = ok && cudaEventRecord(b, s) == cudaSuccess && cudaEventSynchronize(b) == cudaSuccess;
      float ms = 0.f;
      if (ok && cudaEventElapsedTime(&ms, a, b) == cudaSuccess) best[j] = std::min(best[j], ms / 3);
      cudaGetLastError();
    }
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  size_t pick = 0;
  for (size_t j = 1; j < n; ++j)
    if (best[j] < best[pick]) pick = j;
  if (!(best[pick] < best[0] * 0.97f)) pick = 0;
  if (debug_on()) {
    std::string t;
    for (size_t j = 0; j < n; ++j) {
      std::string nm;
      (void)e.graph->get_plan_name_at_index(e.plans[j], nm);
      t += str(" [", e.plans[j], "] ", nm, " ", best[j], " ms;");
    }
    std::fprintf(stderr, "[pte cudnn] tuned %s:%s chose [%lld]\n", e.desc.c_str(), t.c_str(),
                 (long long)e.plans[pick]);
  }
  e.chosen.store(e.plans[pick]);
  return e.plans[pick];
}

void execute(const AttnProblem& p, const Entry& e, std::unordered_map<int64_t, void*>& pack) {
  cudnnHandle_t h = handle_for(p.device_id);
  cudnnStatus_t st = fe::detail::set_stream(h, cudaStream_t(p.stream));
  if (st != CUDNN_STATUS_SUCCESS)
    throw Error(PTE_ERROR_CUDA, str("cudnnSetStream failed: ", fe::detail::get_error_string(st)));
  fe::error_t r;
  try {
    int64_t plan = e.chosen.load();
    if (plan < 0 && e.plans.size() > 1) plan = tune_plan(p, e, h, pack);
    r = plan >= 0 ? e.graph->execute_plan_at_index(h, pack, p.workspace, plan)
                  : e.graph->execute(h, pack, p.workspace);
  } catch (const std::exception& ex) {
    throw Error(PTE_ERROR_CUDA, str("cuDNN SDPA execution failed: ", ex.what()));
  }
  if (!r.is_good()) throw Error(PTE_ERROR_CUDA, "cuDNN SDPA execution failed: " + r.get_message());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Entry points (core/kernels.h).

const char* check(const AttnProblem& p, bool backward) {
  thread_local std::string reason;
  try {
    const char* why = static_reason(p, backward, reason);
    if (*why) return why;
    auto e = graph_for(p, make_plan(p, backward));
    if (!e->graph) return (reason = e->error).c_str();
    return "";
  } catch (const std::exception& ex) {
    return (reason = str("cuDNN check failed: ", ex.what())).c_str();
  }
}

size_t fwd_workspace_size(const AttnProblem& p) {
  const Plan pl = make_plan(p, false);
  return layout(p, pl, ready_graph(p, pl)->workspace).total;
}

size_t bwd_workspace_size(const AttnProblem& p) {
  const Plan pl = make_plan(p, true);
  return layout(p, pl, ready_graph(p, pl)->workspace).total;
}

void attn_fwd(const AttnProblem& p) {
  const Plan pl = make_plan(p, false);
  auto e = ready_graph(p, pl);
  const Layout l = layout(p, pl, e->workspace);
  DeviceGuard guard(p.device_id);

  prepare_lengths(p, pl, l);
  float scale = p.scale;
  int64_t seed_offset[2];
  std::unordered_map<int64_t, void*> pack = {
      {kQ, const_cast<void*>(p.q)}, {kK, const_cast<void*>(p.k)},
      {kV, const_cast<void*>(p.v)}, {kO, p.out}, {kScale, &scale}};
  if (pl.stats) pack[kStats] = pl.stats_buffer ? ws_at(p, l.stats) : static_cast<void*>(p.lse);
  add_dropout(p, seed_offset, pack);
  add_lengths(p, pl, l, pack);
  execute(p, *e, pack);

  if (pl.fix_rows) {
    RowFixParams f{};
    f.x[0] = {p.out, p.out_st, p.h, p.d_v};
    f.kv_side = false;
    f.lse = p.lse;
    f.stats = pl.stats_buffer ? reinterpret_cast<const float*>(ws_at(p, l.stats)) : nullptr;
    launch_row_fix(p, f, p.stream);
  }
}

void attn_bwd(const AttnProblem& p) {
  const Plan pl = make_plan(p, true);
  auto e = ready_graph(p, pl);
  const Layout l = layout(p, pl, e->workspace);
  DeviceGuard guard(p.device_id);

  prepare_lengths(p, pl, l);
  float* stats = p.lse;
  if (pl.stats_buffer) {
    stats = reinterpret_cast<float*>(ws_at(p, l.stats));
    launch_lse_to_stats(p, p.lse, stats, p.stream);
  }
  float scale = p.scale;
  int64_t seed_offset[2];
  std::unordered_map<int64_t, void*> pack = {
      {kQ, const_cast<void*>(p.q)},   {kK, const_cast<void*>(p.k)},
      {kV, const_cast<void*>(p.v)},   {kO, p.out},
      {kDO, const_cast<void*>(p.grad_out)}, {kStats, stats},
      {kDQ, p.grad_q},                {kDK, p.grad_k},
      {kDV, p.grad_v},                {kScale, &scale}};
  add_dropout(p, seed_offset, pack);
  add_lengths(p, pl, l, pack);
  execute(p, *e, pack);

  if (pl.fix_rows) {
    RowFixParams f{};
    f.x[0] = {p.grad_q, p.grad_q_st, p.h, p.d};
    launch_row_fix(p, f, p.stream);
  }
  if (pl.padding && (p.thd || p.cu_kv != nullptr)) {
    RowFixParams f{};
    f.x[0] = {p.grad_k, p.grad_k_st, p.h_kv, p.d};
    f.x[1] = {p.grad_v, p.grad_v_st, p.h_kv, p.d_v};
    f.kv_side = true;
    launch_row_fix(p, f, p.stream);
  }
}

}  // namespace cudnn
}  // namespace pte
