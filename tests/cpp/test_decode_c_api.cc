// Tests of the decode C API (pte_decode_attn, SPEC §10) on the CPU: a paged GQA call with an
// in-place append against a brute-force loop over a gathered contiguous copy, the untouched cache
// rows, and the status codes + messages of bad calls. Plain main(): exit code 0 on success.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "paddle_te/paddle_te.h"
#include "test_helpers.h"

using pte_test::expect_error;
using pte_test::randn;
using pte_test::tensor;

int main() {
  const int b = 2, s_q = 2, h = 4, h_kv = 2, d = 8, page = 3, pps = 4, num_pages = 9;
  const int group = h / h_kv;
  std::mt19937 rng(11);
  std::vector<double> q = randn(size_t(b) * s_q * h * d, rng);
  std::vector<double> kc = randn(size_t(num_pages) * page * h_kv * d, rng);
  std::vector<double> vc = randn(kc.size(), rng);
  std::vector<double> kn = randn(size_t(b) * s_q * h_kv * d, rng), vn = randn(kn.size(), rng);
  std::vector<int32_t> lens = {4, 0};
  std::vector<int32_t> table = {7, 2, 5, 0, 8, 1, 3, 6};  // [b, pps]
  const std::vector<double> kc0 = kc, vc0 = vc;
  std::vector<double> out(size_t(b) * s_q * h * d, NAN);
  std::vector<float> lse(size_t(b) * h * s_q, NAN);

  pte_decode_params_t p;
  pte_decode_params_init(&p);
  p.q = tensor(q.data(), PTE_FLOAT64, {b, s_q, h, d});
  p.k_cache = tensor(kc.data(), PTE_FLOAT64, {num_pages, page, h_kv, d});
  p.v_cache = tensor(vc.data(), PTE_FLOAT64, {num_pages, page, h_kv, d});
  p.cache_seqlens = tensor(lens.data(), PTE_INT32, {b});
  p.k_new = tensor(kn.data(), PTE_FLOAT64, {b, s_q, h_kv, d});
  p.v_new = tensor(vn.data(), PTE_FLOAT64, {b, s_q, h_kv, d});
  p.block_table = tensor(table.data(), PTE_INT32, {b, pps});
  p.out = tensor(out.data(), PTE_FLOAT64, {b, s_q, h, d});
  p.lse = tensor(lse.data(), PTE_FLOAT32, {b, h, s_q});
  p.softmax_scale = 0.4;
  p.window_left = 3;
  size_t ws = 1;
  EXPECT(pte_decode_workspace_size(&p, &ws) == PTE_SUCCESS && ws == 0, "%s", pte_last_error());
  EXPECT(pte_decode_attn(&p) == PTE_SUCCESS, "%s", pte_last_error());

  // Expected cache: the originals with the new rows at positions lens[b] + i.
  std::vector<double> kx = kc0, vx = vc0;
  auto slot = [&](int bi, int pos, int hk) {
    return ((size_t(table[bi * pps + pos / page]) * page + pos % page) * h_kv + hk) * d;
  };
  for (int bi = 0; bi < b; ++bi)
    for (int i = 0; i < s_q; ++i)
      for (int hk = 0; hk < h_kv; ++hk)
        for (int e = 0; e < d; ++e) {
          kx[slot(bi, lens[bi] + i, hk) + e] = kn[((size_t(bi) * s_q + i) * h_kv + hk) * d + e];
          vx[slot(bi, lens[bi] + i, hk) + e] = vn[((size_t(bi) * s_q + i) * h_kv + hk) * d + e];
        }
  EXPECT(kc == kx && vc == vx, "the append changed other rows or missed its own");

  double worst = 0, worst_lse = 0;
  for (int bi = 0; bi < b; ++bi) {
    const int n = lens[bi] + s_q;
    for (int hi = 0; hi < h; ++hi)
      for (int i = 0; i < s_q; ++i) {
        const int last = n - s_q + i;
        const int lo = last - p.window_left < 0 ? 0 : int(last - p.window_left);
        std::vector<double> w;
        double mx = -INFINITY;
        for (int j = lo; j <= last; ++j) {
          double s = 0;
          for (int e = 0; e < d; ++e)
            s += q[((size_t(bi) * s_q + i) * h + hi) * d + e] * kx[slot(bi, j, hi / group) + e];
          w.push_back(s * p.softmax_scale);
          mx = std::fmax(mx, w.back());
        }
        double sum = 0;
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int e = 0; e < d; ++e) {
          double o = 0;
          for (int j = lo; j <= last; ++j) o += w[j - lo] * vx[slot(bi, j, hi / group) + e];
          worst = std::fmax(worst, std::fabs(o / sum - out[((size_t(bi) * s_q + i) * h + hi) * d + e]));
        }
        worst_lse = std::fmax(worst_lse, std::fabs(mx + std::log(sum) - lse[(size_t(bi) * h + hi) * s_q + i]));
      }
  }
  EXPECT(worst < 1e-12, "max output error %g", worst);
  EXPECT(worst_lse < 1e-5, "max lse error %g", worst_lse);

  // Bad calls: status and a message naming the argument; nothing written before the value check.
  const std::vector<double> kc_before = kc;
  table[1] = num_pages;
  expect_error(pte_decode_attn(&p), PTE_ERROR_INVALID_ARGUMENT,
               "block_table[0, 1]=9: page index out of range", "page index");
  EXPECT(kc == kc_before, "a failed call wrote into the cache");
  table[1] = 2;
  lens[1] = pps * page - 1;
  expect_error(pte_decode_attn(&p), PTE_ERROR_INVALID_ARGUMENT,
               "cache_seqlens[1]=11 + s_q=2: cache overflow", "overflow");
  lens[1] = 0;
  // One field spoiled at a time: what it is set to, and a part of the message it must give.
  auto bad_call = [&](auto spoil, const char* part) {
    pte_decode_params_t bad = p;
    spoil(bad);
    expect_error(pte_decode_attn(&bad), PTE_ERROR_INVALID_ARGUMENT, part, part);
  };
  bad_call([](auto& b) { b.lse.dtype = PTE_FLOAT64; }, "lse has dtype float64: must be float32");
  bad_call([](auto& b) { b.k_cache.shape[2] = 3; }, "k_cache has 3 heads");
  bad_call([](auto& b) { b.v_new = pte_tensor_t{}; }, "k_new given without v_new");
  bad_call([](auto& b) { b.backend = PTE_BACKEND_CUDNN; }, "backend=cudnn");
  bad_call([](auto& b) { b.num_splits = -2; }, "num_splits=-2");
  bad_call([](auto& b) { b.softmax_scale = 0; }, "softmax_scale=0");
  return pte_test::summary("test_decode_c_api");
}
