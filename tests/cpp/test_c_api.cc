// Tests of the C API on the CPU: a forward/backward against a brute-force loop, the softmax and
// seqlens entry points, and the status codes + messages of bad calls. Plain main(): exit code 0
// on success, the failures printed otherwise.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "paddle_te/paddle_te.h"
#include "test_helpers.h"

namespace {

using pte_test::expect_error;
using pte_test::randn;
using pte_test::tensor;

// Brute-force attention for bshd float64 with per-sequence lengths and a causal bottom-right
// window: returns out and lse.
void naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, int b, int s_q, int s_kv, int h, int h_kv,
                     int d, const std::vector<int>& len_q, const std::vector<int>& len_kv,
                     int left, double scale, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(size_t(b) * s_q * h * d, 0.0);
  lse.assign(size_t(b) * h * s_q, -INFINITY);
  for (int bi = 0; bi < b; ++bi)
    for (int hi = 0; hi < h; ++hi) {
      int hk = hi / (h / h_kv);
      for (int i = 0; i < len_q[bi]; ++i) {
        int delta = len_kv[bi] - len_q[bi];
        std::vector<double> s(len_kv[bi], -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j < len_kv[bi]; ++j) {
          bool vis = j <= i + delta && (left < 0 || j >= i + delta - left);
          if (!vis) continue;
          double acc = 0;
          for (int c = 0; c < d; ++c)
            acc += q[((size_t(bi) * s_q + i) * h + hi) * d + c] *
                   k[((size_t(bi) * s_kv + j) * h_kv + hk) * d + c];
          s[j] = acc * scale;
          mx = std::fmax(mx, s[j]);
        }
        if (mx == -INFINITY) continue;
        double sum = 0;
        for (int j = 0; j < len_kv[bi]; ++j) sum += s[j] == -INFINITY ? 0 : std::exp(s[j] - mx);
        lse[(size_t(bi) * h + hi) * s_q + i] = mx + std::log(sum);
        for (int j = 0; j < len_kv[bi]; ++j) {
          if (s[j] == -INFINITY) continue;
          double pr = std::exp(s[j] - mx) / sum;
          for (int c = 0; c < d; ++c)
            out[((size_t(bi) * s_q + i) * h + hi) * d + c] +=
                pr * v[((size_t(bi) * s_kv + j) * h_kv + hk) * d + c];
        }
      }
    }
}

void test_forward_matches_naive() {
  std::mt19937 rng(1);
  const int b = 2, s_q = 5, s_kv = 7, h = 4, h_kv = 2, d = 8, left = 3;
  std::vector<int> len_q = {5, 2}, len_kv = {7, 4};
  auto q = randn(size_t(b) * s_q * h * d, rng);
  auto k = randn(size_t(b) * s_kv * h_kv * d, rng);
  auto v = randn(size_t(b) * s_kv * h_kv * d, rng);
  std::vector<double> out(q.size(), 99.0);
  std::vector<float> lse(size_t(b) * h * s_q, 99.f);
  std::vector<int32_t> cu_q = {0, 5, 7}, cu_kv = {0, 7, 11};
  pte_attn_params_t p;
  pte_attn_params_init(&p);
  p.q = tensor(q.data(), PTE_FLOAT64, {b, s_q, h, d});
  p.k = tensor(k.data(), PTE_FLOAT64, {b, s_kv, h_kv, d});
  p.v = tensor(v.data(), PTE_FLOAT64, {b, s_kv, h_kv, d});
  p.out = tensor(out.data(), PTE_FLOAT64, {b, s_q, h, d});
  p.lse = tensor(lse.data(), PTE_FLOAT32, {b, h, s_q});
  p.cu_seqlens_q = tensor(cu_q.data(), PTE_INT32, {b + 1});
  p.cu_seqlens_kv = tensor(cu_kv.data(), PTE_INT32, {b + 1});
  p.mask_type = PTE_MASK_PADDING_CAUSAL_BOTTOM_RIGHT;
  p.window_left = left;
  p.window_right = 5;  // ignored: causal types force right = 0
  p.softmax_scale = 1.0 / std::sqrt(double(d));
  pte_status_t st = pte_attn_fwd(&p);
  EXPECT(st == PTE_SUCCESS, "status %d: %s", int(st), pte_last_error());
  std::vector<double> ref_out, ref_lse;
  naive_attention(q, k, v, b, s_q, s_kv, h, h_kv, d, len_q, len_kv, left, p.softmax_scale, ref_out,
                  ref_lse);
  double err = 0;
  for (size_t i = 0; i < out.size(); ++i) err = std::fmax(err, std::fabs(out[i] - ref_out[i]));
  EXPECT(err < 1e-10, "max |out - ref| = %g", err);
  for (size_t i = 0; i < lse.size(); ++i) {
    int bi = int(i / (h * s_q)), qi = int(i % s_q);
    if (qi >= len_q[bi]) continue;  // unspecified at padded positions
    bool both_inf = std::isinf(ref_lse[i]) && std::isinf(lse[i]);
    EXPECT(both_inf || std::fabs(lse[i] - ref_lse[i]) < 1e-5, "lse[%zu] %g vs %g", i, lse[i],
           ref_lse[i]);
  }
  // Padded query rows are exactly zero.
  for (int i = len_q[1]; i < s_q; ++i)
    for (int c = 0; c < h * d; ++c)
      EXPECT(out[((size_t(1) * s_q + i) * h) * d + c] == 0.0, "padded row %d not zero", i);

  // Backward runs and leaves padded positions at zero.
  std::vector<double> d_out = randn(out.size(), rng), d_q(q.size(), 7.0), d_k(k.size(), 7.0),
                      d_v(v.size(), 7.0);
  p.d_out = tensor(d_out.data(), PTE_FLOAT64, {b, s_q, h, d});
  p.d_q = tensor(d_q.data(), PTE_FLOAT64, {b, s_q, h, d});
  p.d_k = tensor(d_k.data(), PTE_FLOAT64, {b, s_kv, h_kv, d});
  p.d_v = tensor(d_v.data(), PTE_FLOAT64, {b, s_kv, h_kv, d});
  st = pte_attn_bwd(&p);
  EXPECT(st == PTE_SUCCESS, "bwd status %d: %s", int(st), pte_last_error());
  for (int j = len_kv[1]; j < s_kv; ++j)
    for (int c = 0; c < h_kv * d; ++c)
      EXPECT(d_k[((size_t(1) * s_kv + j) * h_kv) * d + c] == 0.0, "padded d_k row %d not zero", j);
}

void test_errors() {
  std::vector<float> q(2 * 4 * 2 * 8), k(q.size()), v(q.size()), out(q.size());
  std::vector<float> lse(2 * 2 * 4);
  auto base = [&] {
    pte_attn_params_t p;
    pte_attn_params_init(&p);
    p.q = tensor(q.data(), PTE_FLOAT32, {2, 4, 2, 8});
    p.k = tensor(k.data(), PTE_FLOAT32, {2, 4, 2, 8});
    p.v = tensor(v.data(), PTE_FLOAT32, {2, 4, 2, 8});
    p.out = tensor(out.data(), PTE_FLOAT32, {2, 4, 2, 8});
    p.softmax_scale = 0.5;
    return p;
  };
  pte_attn_params_t p = base();
  EXPECT(pte_attn_fwd(&p) == PTE_SUCCESS, "base call fails: %s", pte_last_error());

  p = base();
  p.q.ndim = 3;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "q", "q rank");
  p = base();
  p.k.dtype = PTE_FLOAT64;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "k has dtype", "k dtype");
  p = base();
  p.softmax_scale = -1;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "softmax_scale", "scale");
  p = base();
  p.dropout = 1.0f;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "dropout", "dropout");
  p = base();
  p.window_left = -2;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "window_size", "window");
  p = base();
  p.mask_type = PTE_MASK_PADDING;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "cu_seqlens_q", "padding no cu");
  p = base();
  p.backend = PTE_BACKEND_FLASH;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_NOT_SUPPORTED, "flash", "flash on cpu");
  p = base();
  p.backend = PTE_BACKEND_CUDNN;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_NOT_SUPPORTED, "cudnn", "cudnn on cpu");
  p = base();
  p.k.shape[2] = 3;
  p.k.strides[1] = 3 * 8;
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "heads", "gqa not dividing");

  std::vector<int32_t> cu_bad = {0, 5, 3};
  p = base();
  p.mask_type = PTE_MASK_PADDING;
  p.cu_seqlens_q = tensor(cu_bad.data(), PTE_INT32, {3});
  p.cu_seqlens_kv = tensor(cu_bad.data(), PTE_INT32, {3});
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "cu_seqlens_q", "cu order/bounds");
  std::vector<int64_t> cu64 = {0, 2, 4};
  p.cu_seqlens_q = tensor(cu64.data(), PTE_INT64, {3});
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "int32", "cu dtype");

  p = base();
  p.dropout = 0.1f;  // needs lse
  expect_error(pte_attn_fwd(&p), PTE_ERROR_INVALID_ARGUMENT, "lse", "dropout without lse");
  p.lse = tensor(lse.data(), PTE_FLOAT32, {2, 2, 4});
  EXPECT(pte_attn_fwd(&p) == PTE_SUCCESS, "dropout call fails: %s", pte_last_error());

  // The error text is per thread and cleared by a successful call.
  p = base();
  EXPECT(pte_attn_fwd(&p) == PTE_SUCCESS && pte_last_error()[0] == '\0', "stale error: %s",
         pte_last_error());

  const char* reason = nullptr;
  EXPECT(pte_backend_available(PTE_BACKEND_CPU, &reason) == 1, "cpu unavailable: %s", reason);
}

void test_softmax_and_seqlens() {
  // Fully masked row -> zeros; others sum to 1.
  std::vector<float> x = {1, 2, 3, 4, 5, 6}, y(6, 9.f);
  uint8_t mask[6] = {0, 1, 0, 1, 1, 1};
  pte_softmax_params_t sp;
  pte_softmax_params_init(&sp);
  sp.x = tensor(x.data(), PTE_FLOAT32, {1, 1, 2, 3});
  sp.y = tensor(y.data(), PTE_FLOAT32, {1, 1, 2, 3});
  sp.mask = tensor(mask, PTE_BOOL, {1, 1, 2, 3});
  EXPECT(pte_softmax_fwd(&sp) == PTE_SUCCESS, "softmax: %s", pte_last_error());
  EXPECT(std::fabs(y[0] + y[2] - 1.f) < 1e-6 && y[1] == 0.f, "row 0: %g %g %g", y[0], y[1], y[2]);
  EXPECT(y[3] == 0.f && y[4] == 0.f && y[5] == 0.f, "fully masked row not zero");
  sp.scale = 0.0;
  expect_error(pte_softmax_fwd(&sp), PTE_ERROR_INVALID_ARGUMENT, "scale", "softmax scale");

  // Right padding -> lengths; left padding -> valid = 0.
  uint8_t m[2 * 4] = {0, 0, 1, 1, 0, 0, 0, 0};
  int32_t cu_q[3], cu_kv[3], valid[1];
  pte_seqlens_params_t lp;
  pte_seqlens_params_init(&lp);
  lp.mask = tensor(m, PTE_BOOL, {2, 1, 1, 4});
  lp.cu_seqlens_q = tensor(cu_q, PTE_INT32, {3});
  lp.cu_seqlens_kv = tensor(cu_kv, PTE_INT32, {3});
  lp.valid = tensor(valid, PTE_INT32, {1});
  EXPECT(pte_mask_to_cu_seqlens(&lp) == PTE_SUCCESS, "seqlens: %s", pte_last_error());
  EXPECT(cu_q[0] == 0 && cu_q[1] == 2 && cu_q[2] == 6 && valid[0] == 1, "cu = %d %d %d valid %d",
         cu_q[0], cu_q[1], cu_q[2], valid[0]);
  m[0] = 1;  // a hole at the front: left padding
  EXPECT(pte_mask_to_cu_seqlens(&lp) == PTE_SUCCESS && valid[0] == 0, "left padding accepted");
  lp.valid = tensor(valid, PTE_INT64, {1});
  expect_error(pte_mask_to_cu_seqlens(&lp), PTE_ERROR_INVALID_ARGUMENT, "valid", "valid dtype");
}

// One table per vocabulary: names and parsing agree, values outside the enums have no name, and
// a bad word is INVALID_ARGUMENT naming the argument and the allowed set.
void test_vocabularies() {
  int n = 0;
  for (int i = 0; pte_qkv_format_name(pte_qkv_format_t(i)) != nullptr; ++i, ++n) {
    pte_qkv_format_t f;
    EXPECT(pte_qkv_format_parse(pte_qkv_format_name(pte_qkv_format_t(i)), &f) == PTE_SUCCESS &&
               int(f) == i, "qkv_format %d does not round-trip", i);
  }
  EXPECT(n == 3, "%d layouts", n);
  n = 0;
  for (int i = 0; pte_mask_type_name(pte_mask_type_t(i)) != nullptr; ++i, ++n) {
    pte_mask_type_t m;
    EXPECT(pte_mask_type_parse(pte_mask_type_name(pte_mask_type_t(i)), &m) == PTE_SUCCESS &&
               int(m) == i, "mask type %d does not round-trip", i);
  }
  EXPECT(n == 6, "%d mask types", n);
  for (int i = 0; i < PTE_BACKEND_COUNT; ++i) {
    pte_backend_t b;
    EXPECT(pte_backend_parse(pte_backend_name(pte_backend_t(i)), &b) == PTE_SUCCESS && int(b) == i,
           "backend %d does not round-trip", i);
  }
  EXPECT(pte_backend_name(PTE_BACKEND_COUNT) == nullptr, "a name past the enum");
  EXPECT(std::strcmp(pte_mask_type_name(PTE_MASK_PADDING_CAUSAL), "padding_causal") == 0,
         "mask name %s", pte_mask_type_name(PTE_MASK_PADDING_CAUSAL));
  pte_qkv_format_t f;
  expect_error(pte_qkv_format_parse("bhsd", &f), PTE_ERROR_INVALID_ARGUMENT,
               "qkv_format='bhsd': must be one of 'bshd', 'sbhd', 'thd'", "bad layout");
  pte_mask_type_t m;
  expect_error(pte_mask_type_parse("arbitrary", &m), PTE_ERROR_INVALID_ARGUMENT,
               "attn_mask_type='arbitrary'", "bad mask type");
  pte_backend_t b;
  expect_error(pte_backend_parse("triton", &b), PTE_ERROR_INVALID_ARGUMENT, "'cpu'", "bad backend");
}

// The backend table: on CPU tensors `auto` picks the CPU kernels (with and without dropout), a
// CUDA backend asked for by name says why it cannot run, and the CPU needs no workspace.
void test_backend_table() {
  std::vector<float> q(2 * 4 * 2 * 8, 0.5f), o(q.size()), lse(2 * 2 * 4);
  pte_attn_params_t p;
  pte_attn_params_init(&p);
  p.q = tensor(q.data(), PTE_FLOAT32, {2, 4, 2, 8});
  p.k = p.q;
  p.v = p.q;
  p.out = tensor(o.data(), PTE_FLOAT32, {2, 4, 2, 8});
  p.lse = tensor(lse.data(), PTE_FLOAT32, {2, 2, 4});
  p.softmax_scale = 0.125;
  for (float dropout : {0.f, 0.2f}) {
    p.dropout = dropout;
    pte_backend_t chosen = PTE_BACKEND_AUTO;
    EXPECT(pte_attn_select_backend(&p, 0, &chosen) == PTE_SUCCESS && chosen == PTE_BACKEND_CPU,
           "auto on CPU chose %d: %s", int(chosen), pte_last_error());
  }
  size_t bytes = 1;
  EXPECT(pte_attn_fwd_workspace_size(&p, &bytes) == PTE_SUCCESS && bytes == 0,
         "cpu workspace %zu: %s", bytes, pte_last_error());
  expect_error(pte_attn_check(&p, PTE_BACKEND_FLASH, 0), PTE_ERROR_NOT_SUPPORTED,
               "backend 'flash' runs on CUDA devices", "flash on CPU tensors");
  expect_error(pte_attn_check(&p, PTE_BACKEND_CUDNN, 0), PTE_ERROR_NOT_SUPPORTED,
               "backend 'cudnn' runs on CUDA devices", "cudnn on CPU tensors");
  const char* reason = nullptr;
  EXPECT(pte_backend_available(PTE_BACKEND_COUNT, &reason) == 0 && std::strstr(reason, "unknown"),
         "an unknown backend is available: %s", reason);
}

}  // namespace

int main() {
  test_vocabularies();
  test_backend_table();
  test_forward_matches_naive();
  test_errors();
  test_softmax_and_seqlens();
  return pte_test::summary("test_c_api");
}
