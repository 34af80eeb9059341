// cudnn-frontend SDPA graphs from paddle_te's AttnProblem (sdpa.h): the plan (what changes the
// graph), its cache key, the graph builder, and the heuristic build with the optional list of
// plans for autotuning. The mapping onto cuDNN's conventions is described in attention.cc.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "cuda/cudnn/sdpa.h"

namespace pte {
namespace cudnn {

namespace {

int64_t window_or_none(int64_t w, const AttnProblem& p) {
  // A window wider than any distance between a query and a key is no window.
  return (w < 0 || w >= p.s_q + p.s_kv) ? -1 : w;
}

}  // namespace

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

namespace {

// PTE_CUDNN_AUTOTUNE=1 turns on the one-time plan autotuning (off by default: cuDNN's heuristic
// choice runs, as in torch: it was the fastest plan of every case timed, docs/performance.md).
// PTE_CUDNN_DEBUG=1 prints the plans of each graph built (and the tuning times) to stderr.
bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return dflt;
  return !(v[0] == '0' && v[1] == 0);
}
bool autotune_on() {
  static const bool on = env_flag("PTE_CUDNN_AUTOTUNE", false);
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

}  // namespace

bool debug_on() {
  static const bool on = env_flag("PTE_CUDNN_DEBUG", false);
  return on;
}

std::shared_ptr<const Entry> build_graph(const AttnProblem& p, const Plan& pl) {
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

}  // namespace cudnn
}  // namespace pte
