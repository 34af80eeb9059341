// Tests of the CPU reference kernels (csrc/cpu) against brute-force float64 loops written here,
// straight from the visibility rule of SPEC §2 (not from core/problem.h's helpers), and against
// finite differences. Plain main(): returns nonzero on failure.
//
// The kernels are called directly with a hand-built pte::AttnProblem / SoftmaxProblem /
// SeqlensProblem (no C API), so this links csrc/cpu/*.cc only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/philox.h"
#include "core/kernels.h"
#include "test_helpers.h"

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kPoison = 12345.0f;  // written into outputs before a run

enum Format { kBSHD = 0, kSBHD = 1, kTHD = 2 };
const char* format_name(Format f) { return f == kBSHD ? "bshd" : f == kSBHD ? "sbhd" : "thd"; }

// One attention test case. lens_* empty = no cu_seqlens (bshd/sbhd only).
struct Case {
  std::string name;
  Format fmt = kBSHD;
  int64_t b = 1, h = 1, h_kv = 1, d = 8, d_v = 8, s_q = 8, s_kv = 8;
  std::vector<int32_t> lens_q, lens_kv;
  int64_t left = -1, right = -1;
  bool bottom_right = false;
  double scale = 0.0;  // 0: 1/sqrt(d)
  float dropout = 0.0f;
  uint64_t seed = 7, offset = 3;
  int64_t trailing = 2;  // thd: tokens after cu[b]
};

// Tensor geometry of one of q/k/v/out ([.., seq, head, dim]).
struct Layout {
  Format fmt;
  int64_t b, s, heads, dim;
  const std::vector<int32_t>* cu;  // thd token offsets
  int64_t tokens;                  // thd rows
  int64_t size() const { return (fmt == kTHD ? tokens : b * s) * heads * dim; }
  pte::Strides strides() const {
    pte::Strides st;
    st.head = dim;
    if (fmt == kBSHD) {
      st.batch = s * heads * dim;
      st.seq = heads * dim;
    } else if (fmt == kSBHD) {
      st.batch = heads * dim;
      st.seq = b * heads * dim;
    } else {
      st.batch = 0;
      st.seq = heads * dim;
    }
    return st;
  }
  int64_t idx(int64_t bi, int64_t pos, int64_t head, int64_t c) const {
    if (fmt == kBSHD) return ((bi * s + pos) * heads + head) * dim + c;
    if (fmt == kSBHD) return ((pos * b + bi) * heads + head) * dim + c;
    return (((*cu)[bi] + pos) * heads + head) * dim + c;
  }
};

// Key j visible from query i (SPEC §2), written independently of core/problem.h.
bool visible(const Case& c, int64_t i, int64_t j, int64_t Lq, int64_t Lk) {
  if (i < 0 || i >= Lq || j < 0 || j >= Lk) return false;
  const int64_t delta = c.bottom_right ? Lk - Lq : 0;
  if (c.left >= 0 && j < i + delta - c.left) return false;
  if (c.right >= 0 && j > i + delta + c.right) return false;
  return true;
}

template <class T>
struct Run {
  Case c;
  std::vector<int32_t> cu_q, cu_kv;
  bool has_cu = false;
  int64_t t_q = 0, t_kv = 0;
  Layout lq, lk, lv, lo;
  std::vector<T> q, k, v, out, dout, dq, dk, dv;
  std::vector<float> lse;
  double scale = 0;

  int64_t Lq(int64_t bi) const { return has_cu ? cu_q[bi + 1] - cu_q[bi] : c.s_q; }
  int64_t Lk(int64_t bi) const { return has_cu ? cu_kv[bi + 1] - cu_kv[bi] : c.s_kv; }
  int64_t lse_idx(int64_t bi, int64_t head, int64_t i) const {
    return c.fmt == kTHD ? head * t_q + cu_q[bi] + i : (bi * c.h + head) * c.s_q + i;
  }
  int64_t lse_size() const { return c.fmt == kTHD ? c.h * t_q : c.b * c.h * c.s_q; }

  explicit Run(const Case& cs, uint32_t rng_seed) : c(cs) {
    has_cu = !c.lens_q.empty();
    if (has_cu) {
      cu_q.assign(1, 0);
      cu_kv.assign(1, 0);
      for (int64_t bi = 0; bi < c.b; ++bi) {
        cu_q.push_back(cu_q.back() + c.lens_q[bi]);
        cu_kv.push_back(cu_kv.back() + c.lens_kv[bi]);
      }
    }
    t_q = c.fmt == kTHD ? cu_q[c.b] + c.trailing : c.b * c.s_q;
    t_kv = c.fmt == kTHD ? cu_kv[c.b] + c.trailing : c.b * c.s_kv;
    lq = Layout{c.fmt, c.b, c.s_q, c.h, c.d, &cu_q, t_q};
    lk = Layout{c.fmt, c.b, c.s_kv, c.h_kv, c.d, &cu_kv, t_kv};
    lv = Layout{c.fmt, c.b, c.s_kv, c.h_kv, c.d_v, &cu_kv, t_kv};
    lo = Layout{c.fmt, c.b, c.s_q, c.h, c.d_v, &cu_q, t_q};
    std::mt19937 gen(rng_seed);
    std::normal_distribution<double> nd(0.0, 1.0);  // unit scale: masking bugs show
    auto fill = [&](std::vector<T>& x, int64_t n) {
      x.resize(n);
      for (auto& e : x) e = T(nd(gen));
    };
    fill(q, lq.size());
    fill(k, lk.size());
    fill(v, lv.size());
    fill(dout, lo.size());
    out.assign(lo.size(), T(kPoison));
    dq.assign(lq.size(), T(kPoison));
    dk.assign(lk.size(), T(kPoison));
    dv.assign(lv.size(), T(kPoison));
    lse.assign(lse_size(), kPoison);
    scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(c.d));
  }

  pte::AttnProblem problem() {
    pte::AttnProblem p{};
    p.dtype = sizeof(T) == 4 ? PTE_FLOAT32 : PTE_FLOAT64;
    p.device = PTE_DEVICE_CPU;
    p.b = c.b;
    p.h = c.h;
    p.h_kv = c.h_kv;
    p.d = c.d;
    p.d_v = c.d_v;
    p.thd = c.fmt == kTHD;
    if (p.thd) {
      int64_t mq = 0, mk = 0;
      for (int64_t bi = 0; bi < c.b; ++bi) {
        mq = std::max(mq, Lq(bi));
        mk = std::max(mk, Lk(bi));
      }
      p.s_q = mq;
      p.s_kv = mk;
    } else {
      p.s_q = c.s_q;
      p.s_kv = c.s_kv;
    }
    p.t_q = t_q;
    p.t_kv = t_kv;
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.out = out.data();
    p.lse = lse.data();
    p.grad_out = dout.data();
    p.grad_q = dq.data();
    p.grad_k = dk.data();
    p.grad_v = dv.data();
    p.q_st = p.grad_q_st = lq.strides();
    p.k_st = p.grad_k_st = lk.strides();
    p.v_st = p.grad_v_st = lv.strides();
    p.out_st = p.grad_out_st = lo.strides();
    p.cu_q = has_cu ? cu_q.data() : nullptr;
    p.cu_kv = has_cu ? cu_kv.data() : nullptr;
    // Causal types reach the kernels as right == 0; the window is taken as given here.
    p.window_left = c.left;
    p.window_right = c.right;
    p.bottom_right = c.bottom_right;
    p.scale = float(scale);
    p.dropout = c.dropout;
    p.seed = c.seed;
    p.offset = c.offset;
    return p;
  }
};

// Brute-force float64 attention forward and backward with the explicit softmax Jacobian
// (independent of the kernels' D = rowsum(dO * O) shortcut).
struct Reference {
  std::vector<double> out, dq, dk, dv, lse;
  // 1 where the kernel must write exactly 0 for structural reasons: padding, thd tokens after
  // cu[b], rows with no visible key (out, dq), keys that no query sees (dk, dv).
  std::vector<uint8_t> zero_out, zero_dq, zero_dk, zero_dv;
};

template <class T>
Reference reference(const Run<T>& r) {
  const Case& c = r.c;
  Reference ref;
  ref.out.assign(r.lo.size(), 0.0);
  ref.dq.assign(r.lq.size(), 0.0);
  ref.dk.assign(r.lk.size(), 0.0);
  ref.dv.assign(r.lv.size(), 0.0);
  ref.lse.assign(r.lse_size(), -kInf);
  ref.zero_out.assign(r.lo.size(), 1);
  ref.zero_dq.assign(r.lq.size(), 1);
  ref.zero_dk.assign(r.lk.size(), 1);
  ref.zero_dv.assign(r.lv.size(), 1);
  const float scale = float(r.scale);  // the kernels get a float scale
  const uint32_t threshold = pte::dropout_threshold(c.dropout);
  const double keep_scale = 1.0 / (1.0 - double(c.dropout));
  const int64_t group = c.h / c.h_kv;
  for (int64_t bi = 0; bi < c.b; ++bi) {
    const int64_t Lq = r.Lq(bi), Lk = r.Lk(bi);
    for (int64_t hq = 0; hq < c.h; ++hq) {
      const int64_t hk = hq / group;
      for (int64_t i = 0; i < Lq; ++i) {
        std::vector<double> s(Lk, -kInf), p(Lk, 0.0), z(Lk, 0.0), dp(Lk, 0.0);
        double mx = -kInf;
        for (int64_t j = 0; j < Lk; ++j) {
          if (!visible(c, i, j, Lq, Lk)) continue;
          double dot = 0;
          for (int64_t e = 0; e < c.d; ++e) {
            dot += double(r.q[r.lq.idx(bi, i, hq, e)]) * double(r.k[r.lk.idx(bi, j, hk, e)]);
          }
          s[j] = double(scale) * dot;
          mx = std::max(mx, s[j]);
        }
        if (mx == -kInf) continue;  // no visible key: out 0, lse -inf, grads 0
        for (int64_t e = 0; e < c.d_v; ++e) ref.zero_out[r.lo.idx(bi, i, hq, e)] = 0;
        for (int64_t e = 0; e < c.d; ++e) ref.zero_dq[r.lq.idx(bi, i, hq, e)] = 0;
        for (int64_t j = 0; j < Lk; ++j) {
          if (s[j] == -kInf) continue;
          for (int64_t e = 0; e < c.d; ++e) ref.zero_dk[r.lk.idx(bi, j, hk, e)] = 0;
          for (int64_t e = 0; e < c.d_v; ++e) ref.zero_dv[r.lv.idx(bi, j, hk, e)] = 0;
        }
        double sum = 0;
        for (int64_t j = 0; j < Lk; ++j) sum += s[j] == -kInf ? 0.0 : std::exp(s[j] - mx);
        ref.lse[r.lse_idx(bi, hq, i)] = mx + std::log(sum);
        for (int64_t j = 0; j < Lk; ++j) {
          p[j] = s[j] == -kInf ? 0.0 : std::exp(s[j] - mx) / sum;
          const bool keep = c.dropout == 0.0f ||
                            pte::dropout_keep(c.seed, c.offset, threshold, bi, hq, c.h, i, j);
          z[j] = keep ? (c.dropout > 0.0f ? keep_scale : 1.0) : 0.0;
        }
        for (int64_t e = 0; e < c.d_v; ++e) {
          double o = 0;
          for (int64_t j = 0; j < Lk; ++j) o += p[j] * z[j] * double(r.v[r.lv.idx(bi, j, hk, e)]);
          ref.out[r.lo.idx(bi, i, hq, e)] = o;
        }
        // Backward: dV_j += P_ij Z_ij dO_i; dP_ij = Z_ij (dO_i . V_j);
        // dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik); dQ_i += scale dS_ij K_j; dK_j += scale dS_ij Q_i.
        double pdp = 0;
        for (int64_t j = 0; j < Lk; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < c.d_v; ++e) {
            const double g = double(r.dout[r.lo.idx(bi, i, hq, e)]);
            dot += g * double(r.v[r.lv.idx(bi, j, hk, e)]);
            ref.dv[r.lv.idx(bi, j, hk, e)] += p[j] * z[j] * g;
          }
          dp[j] = z[j] * dot;
          pdp += p[j] * dp[j];
        }
        for (int64_t j = 0; j < Lk; ++j) {
          const double ds = double(scale) * p[j] * (dp[j] - pdp);
          if (ds == 0.0) continue;
          for (int64_t e = 0; e < c.d; ++e) {
            ref.dq[r.lq.idx(bi, i, hq, e)] += ds * double(r.k[r.lk.idx(bi, j, hk, e)]);
            ref.dk[r.lk.idx(bi, j, hk, e)] += ds * double(r.q[r.lq.idx(bi, i, hq, e)]);
          }
        }
      }
    }
  }
  return ref;
}

// Element-wise comparison: an expected exact zero (padding, rows with no visible key, keys no
// query sees) must be exactly 0; everything else within atol + rtol * |ref|.
template <class T>
void compare(const char* what, const std::string& name, const std::vector<T>& got,
             const std::vector<double>& want, double atol, double rtol) {
  int64_t bad = 0;
  double worst = 0;
  for (size_t e = 0; e < want.size(); ++e) {
    const double g = double(got[e]), w = want[e];
    bool ok;
    if (w == 0.0) {
      ok = g == 0.0 || std::fabs(g) <= atol;  // a structural zero is tested separately below
    } else {
      ok = std::fabs(g - w) <= atol + rtol * std::fabs(w);
    }
    if (!ok || std::isnan(g)) {
      if (bad == 0) {
        std::printf("  %s[%s] first mismatch at %zu: got %.9g want %.9g\n", name.c_str(), what,
                    e, g, w);
      }
      ++bad;
    }
    worst = std::max(worst, std::fabs(g - w));
  }
  EXPECT(bad == 0, "%s: %s: %lld mismatches (max abs err %.3g)", name.c_str(), what,
         (long long)bad, worst);
}

// Elements that must be exactly zero (Reference::zero_*; the outputs were poisoned before the
// run) and lse entries that must be -inf (padding, trailing thd tokens, rows with no key).
template <class T>
void check_structural(const Run<T>& r, const Reference& ref, bool backward) {
  const Case& c = r.c;
  int64_t bad = 0;
  auto check_zero = [&](const std::vector<T>& x, const std::vector<uint8_t>& zero) {
    for (size_t e = 0; e < x.size(); ++e) {
      if (zero[e] && x[e] != T(0)) ++bad;
    }
  };
  check_zero(r.out, ref.zero_out);
  if (backward) {
    check_zero(r.dq, ref.zero_dq);
    check_zero(r.dk, ref.zero_dk);
    check_zero(r.dv, ref.zero_dv);
  }
  EXPECT(bad == 0, "%s: %lld elements should be exactly 0", c.name.c_str(), (long long)bad);
  int64_t bad_lse = 0;
  for (size_t e = 0; e < ref.lse.size(); ++e) {
    if (ref.lse[e] == -kInf && !(r.lse[e] == -std::numeric_limits<float>::infinity())) ++bad_lse;
  }
  EXPECT(bad_lse == 0, "%s: %lld lse entries should be -inf", c.name.c_str(), (long long)bad_lse);
}

template <class T>
void run_case(const Case& c) {
  Run<T> r(c, 1234u + uint32_t(c.b * 31 + c.s_q * 7 + c.s_kv));
  pte::AttnProblem p = r.problem();
  pte::cpu::attn_fwd(p);
  pte::cpu::attn_bwd(p);
  const Reference ref = reference(r);
  const bool f32 = sizeof(T) == 4;
  const double atol = f32 ? 2e-5 : 1e-12, rtol = f32 ? 2e-4 : 1e-9;
  const std::string name = c.name + (f32 ? " f32 " : " f64 ") + format_name(c.fmt);
  compare("out", name, r.out, ref.out, atol, rtol);
  std::vector<double> lse_ref_finite(ref.lse.size()), lse_got(ref.lse.size());
  for (size_t e = 0; e < ref.lse.size(); ++e) {
    lse_ref_finite[e] = std::isfinite(ref.lse[e]) ? ref.lse[e] : 0.0;
    lse_got[e] = std::isfinite(ref.lse[e]) ? double(r.lse[e]) : 0.0;
  }
  compare("lse", name, lse_got, lse_ref_finite, 1e-5, 1e-6);  // lse is float32 for both dtypes
  compare("dq", name, r.dq, ref.dq, atol * 5, rtol * 5);
  compare("dk", name, r.dk, ref.dk, atol * 5, rtol * 5);
  compare("dv", name, r.dv, ref.dv, atol * 5, rtol * 5);
  r.c.name = name;
  check_structural(r, ref, true);
}

std::vector<Case> attention_cases() {
  std::vector<Case> cases;
  auto add = [&](Case c) {
    for (Format f : {kBSHD, kSBHD, kTHD}) {
      Case x = c;
      x.fmt = f;
      if (f == kTHD && x.lens_q.empty()) {
        // thd needs cu_seqlens: use the full lengths.
        x.lens_q.assign(x.b, int32_t(x.s_q));
        x.lens_kv.assign(x.b, int32_t(x.s_kv));
      }
      cases.push_back(x);
    }
  };
  Case c;
  c.name = "plain";
  c.b = 2; c.h = 2; c.h_kv = 2; c.d = 16; c.d_v = 16; c.s_q = 37; c.s_kv = 45;
  add(c);
  c.name = "gqa+dv!=d";
  c.h = 4; c.h_kv = 2; c.d = 5; c.d_v = 7;
  add(c);
  c.name = "mqa+padding";
  c.h = 3; c.h_kv = 1; c.d = 24; c.d_v = 20; c.lens_q = {37, 11}; c.lens_kv = {30, 45};
  add(c);
  c.name = "lengths 0 and 1";
  c.b = 4; c.h = 2; c.h_kv = 1; c.lens_q = {0, 1, 5, 1}; c.lens_kv = {3, 1, 0, 45};
  add(c);
  c.name = "causal top-left";
  c.b = 2; c.h = 2; c.h_kv = 2; c.d = 16; c.d_v = 16; c.s_q = 70; c.s_kv = 50;
  c.lens_q = {70, 33}; c.lens_kv = {50, 41}; c.left = -1; c.right = 0;
  add(c);
  c.name = "causal bottom-right";
  c.bottom_right = true;
  add(c);
  c.name = "window (9,3) top-left";
  c.s_q = 130; c.s_kv = 150; c.lens_q = {130, 77}; c.lens_kv = {150, 60};
  c.left = 9; c.right = 3; c.bottom_right = false;
  add(c);
  c.name = "window (9,3) bottom-right";
  c.bottom_right = true;
  add(c);
  c.name = "window (70,0) bottom-right";
  c.left = 70; c.right = 0;
  add(c);
  c.name = "window (-1,5)";
  c.left = -1; c.right = 5; c.bottom_right = false;
  add(c);
  c.name = "window (0,0)";
  c.left = 0; c.right = 0;
  add(c);
  c.name = "no cu, two-pass backward";  // b * h_kv < 16: dK/dV and dQ in separate passes
  c.b = 1; c.h = 2; c.h_kv = 1; c.s_q = 90; c.s_kv = 300; c.lens_q.clear(); c.lens_kv.clear();
  c.left = -1; c.right = -1;
  add(c);
  c.name = "two-pass + causal bottom-right";
  c.lens_q = {80}; c.lens_kv = {290}; c.right = 0; c.bottom_right = true;
  add(c);
  c.name = "dropout";
  c.b = 2; c.h = 4; c.h_kv = 2; c.d = 16; c.d_v = 8; c.s_q = 67; c.s_kv = 75;
  c.lens_q = {67, 20}; c.lens_kv = {75, 66}; c.left = 20; c.right = 4; c.bottom_right = false;
  c.dropout = 0.3f; c.seed = 0x123456789abcdefULL; c.offset = (uint64_t(5) << 32) + 17;
  add(c);
  c.name = "dropout + two-pass";
  c.b = 1; c.h = 2; c.h_kv = 1; c.lens_q = {67}; c.lens_kv = {75}; c.left = -1; c.right = -1;
  add(c);
  c.name = "custom scale";
  c.dropout = 0.0f; c.scale = 0.77;
  add(c);
  return cases;
}

// Dropout keep rate through the kernel: q = 0 makes every visible probability 1/L_k, and a
// one-hot V (d_v = s_kv) copies each dropped-and-rescaled probability into the output.
void test_dropout_rate() {
  Case c;
  c.name = "dropout rate";
  c.b = 1; c.h = 2; c.h_kv = 1; c.d = 8; c.s_q = 64; c.s_kv = 256; c.d_v = 256;
  c.dropout = 0.25f;
  Run<float> r(c, 99);
  std::fill(r.q.begin(), r.q.end(), 0.0f);
  std::fill(r.v.begin(), r.v.end(), 0.0f);
  for (int64_t j = 0; j < c.s_kv; ++j) r.v[r.lv.idx(0, j, 0, j)] = 1.0f;
  pte::AttnProblem p = r.problem();
  pte::cpu::attn_fwd(p);
  const float kept = 1.0f / (256.0f * 0.75f);
  int64_t zeros = 0, total = 0, wrong = 0;
  for (int64_t hq = 0; hq < c.h; ++hq) {
    for (int64_t i = 0; i < c.s_q; ++i) {
      for (int64_t j = 0; j < c.s_kv; ++j) {
        const float o = r.out[r.lo.idx(0, i, hq, j)];
        ++total;
        if (o == 0.0f) {
          ++zeros;
        } else if (std::fabs(o - kept) > 1e-6f * kept * 10) {
          ++wrong;
        }
        const bool keep = pte::dropout_keep(c.seed, c.offset, pte::dropout_threshold(c.dropout), 0,
                                            hq, c.h, i, j);
        if (keep != (o != 0.0f)) ++wrong;
      }
    }
  }
  const double rate = double(zeros) / double(total);
  EXPECT(std::fabs(rate - 0.25) < 0.01, "dropout rate %.4f, want 0.25 +- 0.01", rate);
  EXPECT(wrong == 0, "dropout: %lld outputs disagree with dropout_keep / 1/(1-p) scaling",
         (long long)wrong);
  // A different offset gives a different mask.
  Run<float> r2(c, 99);
  r2.q = r.q;
  r2.v = r.v;
  pte::AttnProblem p2 = r2.problem();
  p2.offset = c.offset + 1;
  pte::cpu::attn_fwd(p2);
  EXPECT(r2.out != r.out, "dropout: offset does not change the mask");
}

// Gradients of loss = sum(out * W) against central finite differences (float64 kernels).
void test_finite_differences() {
  Case c;
  c.name = "finite differences";
  c.fmt = kTHD;
  c.b = 2; c.h = 4; c.h_kv = 2; c.d = 3; c.d_v = 4; c.s_q = 6; c.s_kv = 7;
  c.lens_q = {6, 4}; c.lens_kv = {5, 7}; c.left = 3; c.right = 1; c.bottom_right = true;
  c.dropout = 0.2f;
  for (Format f : {kTHD, kBSHD}) {
    c.fmt = f;
    Run<double> r(c, 5);
    pte::AttnProblem p = r.problem();
    pte::cpu::attn_fwd(p);
    pte::cpu::attn_bwd(p);  // dout is W
    auto loss = [&]() {
      Run<double> t = r;  // copies inputs
      pte::AttnProblem pt = t.problem();
      pte::cpu::attn_fwd(pt);
      double l = 0;
      for (size_t e = 0; e < t.out.size(); ++e) l += t.out[e] * t.dout[e];
      return l;
    };
    const double eps = 1e-6;
    int64_t bad = 0;
    double worst = 0;
    auto probe = [&](std::vector<double>& x, const std::vector<double>& grad, const char* what) {
      for (size_t e = 0; e < x.size(); ++e) {
        const double saved = x[e];
        x[e] = saved + eps;
        const double lp = loss();
        x[e] = saved - eps;
        const double lm = loss();
        x[e] = saved;
        const double fd = (lp - lm) / (2 * eps);
        const double err = std::fabs(fd - grad[e]);
        worst = std::max(worst, err);
        if (err > 1e-7 + 1e-6 * std::fabs(fd)) {
          if (bad == 0) std::printf("  fd %s[%zu]: fd %.10g grad %.10g\n", what, e, fd, grad[e]);
          ++bad;
        }
      }
    };
    probe(r.q, r.dq, "q");
    probe(r.k, r.dk, "k");
    probe(r.v, r.dv, "v");
    EXPECT(bad == 0, "finite differences (%s): %lld mismatches, max err %.3g", format_name(f),
           (long long)bad, worst);
  }
}

// The backward is bitwise repeatable and independent of the thread count.
void test_determinism() {
  Case c;
  c.name = "determinism";
  c.b = 1; c.h = 4; c.h_kv = 1; c.d = 32; c.d_v = 32; c.s_q = 200; c.s_kv = 333;
  c.left = 50; c.right = 0; c.bottom_right = true; c.dropout = 0.1f;
  for (int two_pass = 0; two_pass < 2; ++two_pass) {
    c.b = two_pass ? 1 : 16;  // b * h_kv >= 16: one task per (batch, kv head), dQ in place
    Run<float> a(c, 3), b(c, 3);
    pte::AttnProblem pa = a.problem(), pb = b.problem();
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    pte::cpu::attn_fwd(pa);
    pte::cpu::attn_bwd(pa);
#ifdef _OPENMP
    omp_set_num_threads(std::max(saved, 3));
#endif
    pte::cpu::attn_fwd(pb);
    pte::cpu::attn_bwd(pb);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
    const bool same = std::memcmp(a.out.data(), b.out.data(), a.out.size() * 4) == 0 &&
                      std::memcmp(a.dq.data(), b.dq.data(), a.dq.size() * 4) == 0 &&
                      std::memcmp(a.dk.data(), b.dk.data(), a.dk.size() * 4) == 0 &&
                      std::memcmp(a.dv.data(), b.dv.data(), a.dv.size() * 4) == 0;
    EXPECT(same, "determinism (two_pass=%d): results depend on the thread count", two_pass);
  }
}

// Forward without an lse output, and a float32 backward without lse (recomputed).
void test_no_lse() {
  Case c;
  c.name = "no lse";
  c.b = 2; c.h = 2; c.h_kv = 2; c.s_q = 20; c.s_kv = 30; c.right = 0;
  Run<float> r(c, 8);
  pte::AttnProblem p = r.problem();
  p.lse = nullptr;
  pte::cpu::attn_fwd(p);
  pte::cpu::attn_bwd(p);
  const Reference ref = reference(r);
  compare("out", c.name, r.out, ref.out, 2e-5, 2e-4);
  compare("dq", c.name, r.dq, ref.dq, 1e-4, 1e-3);
  EXPECT(std::all_of(r.lse.begin(), r.lse.end(), [](float x) { return x == kPoison; }),
         "no lse: lse was written");
}

// ---------------------------------------------------------------------------------------------
// Masked softmax.

template <class T>
void test_softmax_case(int64_t b, int64_t h, int64_t s_q, int64_t s_kv, int64_t mask_batch,
                       pte_softmax_causal_t causal, double scale, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd(0.0, 2.0);
  std::bernoulli_distribution masked(0.3);
  const int64_t n = b * h * s_q * s_kv;
  std::vector<T> x(n), y(n, T(kPoison)), dy(n), dx(n, T(kPoison));
  for (auto& e : x) e = T(nd(gen));
  for (auto& e : dy) e = T(nd(gen));
  std::vector<uint8_t> mask;
  if (mask_batch > 0) {
    mask.resize(mask_batch * s_q * s_kv);
    for (auto& e : mask) e = masked(gen) ? 1 : 0;
    // Row 1 of every mask batch fully masked.
    if (s_q > 1) {
      for (int64_t mb = 0; mb < mask_batch; ++mb) {
        std::fill_n(mask.begin() + (mb * s_q + 1) * s_kv, s_kv, uint8_t(1));
      }
    }
  }
  pte::SoftmaxProblem p{};
  p.dtype = sizeof(T) == 4 ? PTE_FLOAT32 : PTE_FLOAT64;
  p.device = PTE_DEVICE_CPU;
  p.b = b;
  p.h = h;
  p.s_q = s_q;
  p.s_kv = s_kv;
  p.x = x.data();
  p.y = y.data();
  p.d_y = dy.data();
  p.d_x = dx.data();
  p.mask = mask.empty() ? nullptr : mask.data();
  p.mask_batch = mask_batch > 0 ? mask_batch : 1;
  p.scale = float(scale);
  p.causal = causal;
  pte::cpu::softmax_fwd(p);
  pte::cpu::softmax_bwd(p);

  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  int64_t bad = 0, bad_zero = 0;
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int64_t i = 0; i < s_q; ++i) {
        const int64_t row = ((bi * h + hh) * s_q + i) * s_kv;
        std::vector<double> yr(s_kv, 0.0);
        std::vector<bool> vis(s_kv);
        double mx = -kInf;
        for (int64_t j = 0; j < s_kv; ++j) {
          bool v = true;
          if (causal == PTE_SOFTMAX_CAUSAL_TOP_LEFT) v = j <= i;
          if (causal == PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT) v = j <= i + s_kv - s_q;
          if (mask_batch > 0 && mask[((mask_batch == 1 ? 0 : bi) * s_q + i) * s_kv + j]) v = false;
          vis[j] = v;
          if (v) mx = std::max(mx, double(float(scale)) * double(x[row + j]));
        }
        double sum = 0;
        for (int64_t j = 0; j < s_kv; ++j) {
          if (vis[j]) sum += std::exp(double(float(scale)) * double(x[row + j]) - mx);
        }
        for (int64_t j = 0; j < s_kv; ++j) {
          if (vis[j]) yr[j] = std::exp(double(float(scale)) * double(x[row + j]) - mx) / sum;
        }
        double dot = 0;
        for (int64_t j = 0; j < s_kv; ++j) dot += double(dy[row + j]) * double(y[row + j]);
        for (int64_t j = 0; j < s_kv; ++j) {
          if (!vis[j]) {
            if (y[row + j] != T(0) || dx[row + j] != T(0)) ++bad_zero;
            continue;
          }
          if (std::fabs(double(y[row + j]) - yr[j]) > tol * (1 + yr[j])) ++bad;
          // Backward checked against the kernel's own y (its formula is exact in y).
          const double dxr = double(float(scale)) * double(y[row + j]) * (double(dy[row + j]) - dot);
          if (std::fabs(double(dx[row + j]) - dxr) > 10 * tol * (1 + std::fabs(dxr))) ++bad;
        }
      }
    }
  }
  EXPECT(bad == 0 && bad_zero == 0,
         "softmax %s b=%lld h=%lld s_q=%lld s_kv=%lld mask_batch=%lld causal=%d: %lld mismatches, "
         "%lld masked elements not exactly 0",
         sizeof(T) == 4 ? "f32" : "f64", (long long)b, (long long)h, (long long)s_q,
         (long long)s_kv, (long long)mask_batch, int(causal), (long long)bad, (long long)bad_zero);
}

void test_softmax() {
  for (auto causal :
       {PTE_SOFTMAX_NO_CAUSAL, PTE_SOFTMAX_CAUSAL_TOP_LEFT, PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT}) {
    for (int64_t mb : {0, 1, 2}) {
      test_softmax_case<float>(2, 3, 5, 37, mb, causal, 0.7, 1);
      test_softmax_case<double>(2, 3, 5, 37, mb, causal, 1.3, 2);
      test_softmax_case<float>(2, 1, 9, 4, mb, causal, 1.0, 3);  // s_q > s_kv
    }
  }
  // Long rows: no length cap.
  test_softmax_case<float>(1, 1, 3, 16384, 1, PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT, 1.0, 4);
  test_softmax_case<float>(1, 1, 2, 20000, 0, PTE_SOFTMAX_NO_CAUSAL, 0.5, 5);
}

// ---------------------------------------------------------------------------------------------
// mask -> cu_seqlens.

struct SeqlensResult {
  std::vector<int32_t> cu_q, cu_kv;
  int32_t valid;
};

SeqlensResult seqlens(int64_t b, int64_t s_q, int64_t s_kv, const std::vector<uint8_t>& mask,
                      const std::vector<uint8_t>* mask_kv, bool full) {
  SeqlensResult r;
  r.cu_q.assign(b + 1, -7);
  r.cu_kv.assign(b + 1, -7);
  r.valid = -7;
  pte::SeqlensProblem p{};
  p.device = PTE_DEVICE_CPU;
  p.b = b;
  p.s_q = s_q;
  p.s_kv = s_kv;
  p.mask = mask.data();
  p.mask_kv = mask_kv ? mask_kv->data() : nullptr;
  p.full = full;
  p.cu_q = r.cu_q.data();
  p.cu_kv = r.cu_kv.data();
  p.valid = &r.valid;
  pte::cpu::mask_to_cu_seqlens(p);
  return r;
}

std::vector<uint8_t> pad_rows(const std::vector<int>& lens, int64_t s) {
  std::vector<uint8_t> m;
  for (int l : lens) {
    for (int64_t j = 0; j < s; ++j) m.push_back(j >= l ? 1 : 0);
  }
  return m;
}

std::vector<int32_t> cumsum(const std::vector<int>& lens) {
  std::vector<int32_t> cu(1, 0);
  for (int l : lens) cu.push_back(cu.back() + l);
  return cu;
}

void test_seqlens() {
  const std::vector<int> lq = {5, 0, 7, 3}, lk = {2, 6, 6, 0};
  // [b,1,1,s] self-attention form.
  {
    auto r = seqlens(4, 7, 7, pad_rows(lq, 7), nullptr, false);
    EXPECT(r.cu_q == cumsum(lq) && r.cu_kv == cumsum(lq) && r.valid == 1, "seqlens: single form");
  }
  // q mask + kv mask.
  {
    auto mk = pad_rows(lk, 6);
    auto r = seqlens(4, 7, 6, pad_rows(lq, 7), &mk, false);
    EXPECT(r.cu_q == cumsum(lq) && r.cu_kv == cumsum(lk) && r.valid == 1, "seqlens: q + kv form");
  }
  // Full [b,1,s_q,s_kv] outer OR.
  auto full_mask = [&](const std::vector<int>& a, const std::vector<int>& c, int64_t sq,
                       int64_t sk) {
    std::vector<uint8_t> m;
    for (size_t bi = 0; bi < a.size(); ++bi) {
      for (int64_t i = 0; i < sq; ++i) {
        for (int64_t j = 0; j < sk; ++j) m.push_back(!(i < a[bi] && j < c[bi]) ? 1 : 0);
      }
    }
    return m;
  };
  {
    // Entries where one length is 0 have every element masked: both lengths read as 0.
    const std::vector<int> a = {5, 2, 7, 3}, c = {2, 6, 6, 1};
    auto r = seqlens(4, 7, 6, full_mask(a, c, 7, 6), nullptr, true);
    EXPECT(r.cu_q == cumsum(a) && r.cu_kv == cumsum(c) && r.valid == 1, "seqlens: full form");
    auto z = seqlens(2, 3, 4, full_mask({0, 3}, {4, 4}, 3, 4), nullptr, true);
    EXPECT(z.cu_q == cumsum({0, 3}) && z.cu_kv == cumsum({0, 4}) && z.valid == 1,
           "seqlens: full form with an all-masked entry");
  }
  // Not right padding: cu written anyway, valid = 0.
  {
    auto m = pad_rows(lq, 7);
    m[2 * 7 + 0] = 1;  // entry 2: a hole at the front (left padding)
    auto r = seqlens(4, 7, 7, m, nullptr, false);
    const std::vector<int> counted = {5, 0, 6, 3};
    EXPECT(r.valid == 0 && r.cu_q == cumsum(counted), "seqlens: left padding must be invalid");
    auto mk = pad_rows(lk, 6);
    mk[1 * 6 + 3] = 1;  // a hole in the middle of the kv mask
    auto r2 = seqlens(4, 7, 6, pad_rows(lq, 7), &mk, false);
    EXPECT(r2.valid == 0, "seqlens: a kv hole must be invalid");
    auto fm = full_mask({5, 2}, {2, 6}, 7, 6);
    fm[0 * 42 + 1 * 6 + 1] = 1;  // masks one inner element: not an outer OR
    auto r3 = seqlens(2, 7, 6, fm, nullptr, true);
    EXPECT(r3.valid == 0 && r3.cu_q == cumsum({5, 2}) && r3.cu_kv == cumsum({2, 6}),
           "seqlens: full mask that is not an outer OR must be invalid");
    auto fm2 = full_mask({5, 2}, {2, 6}, 7, 6);
    fm2[1 * 42 + 6 * 6 + 0] = 0;  // unmasks an element outside the box
    auto r4 = seqlens(2, 7, 6, fm2, nullptr, true);
    EXPECT(r4.valid == 0, "seqlens: full mask with a stray visible element must be invalid");
  }
  // Large batch.
  {
    std::vector<int> many;
    for (int i = 0; i < 1000; ++i) many.push_back(i % 9);
    auto r = seqlens(1000, 8, 8, pad_rows(many, 8), nullptr, false);
    EXPECT(r.cu_q == cumsum(many) && r.valid == 1, "seqlens: batch 1000");
  }
}

}  // namespace

int main() {
  for (const Case& c : attention_cases()) {
    run_case<float>(c);
    run_case<double>(c);
  }
  test_dropout_rate();
  test_finite_differences();
  test_determinism();
  test_no_lse();
  test_softmax();
  test_seqlens();
  return pte_test::summary("test_cpu_kernels");
}
