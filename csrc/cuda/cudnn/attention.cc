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
// This file: the capability check, the workspace layout and the execution of the graphs that
// graph.cc builds and graph_cache.cc keeps (sdpa.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/kernels.h"
#include "cuda/common.cuh"
#include "cuda/cudnn/sdpa.h"

namespace pte {
namespace cudnn {
namespace {

// cuDNN's head-dim limit on sm_90 (also the paddle_te GPU limit, SPEC §3).
constexpr int64_t kMaxHeadDim = 256;
// Tensor addresses and strides must be 16-byte aligned for cuDNN's TMA-based kernels.
constexpr int64_t kAlignBytes = 16;

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
