// The FlashMask tile classification (core/flashmask_rule.h), which both kernel families use to
// skip tiles or drop the per-element test, against brute force on random column bounds: it may
// answer "partial" too often (conservative) but never "skip" or "untouched" wrongly. Also the
// element rule against SPEC §9's table written out here. Plain main(): nonzero on failure.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "core/flashmask_rule.h"
#include "test_helpers.h"

namespace {

// SPEC §9 table, written independently of masked_by().
bool spec_masked(const int32_t* b, int c, bool causal, int64_t i) {
  if (causal && c == 1) return i >= b[0];
  if (causal && c == 2) return i >= b[0] && i < b[1];
  if (!causal && c == 2) return i >= b[0] || i < b[1];
  return (i >= b[0] && i < b[1]) || (i >= b[2] && i < b[3]);
}

}  // namespace

int main() {
  std::mt19937_64 gen(42);
  int decided = 0, narrowed = 0;
  const struct { bool causal; int c; } kinds[] = {{true, 1}, {true, 2}, {false, 2}, {false, 4}};
  for (int trial = 0; trial < 20000; ++trial) {
    const auto kind = kinds[trial % 4];
    const int s_q = 1 + int(gen() % 300);
    const int ncols = 1 + int(gen() % 96);
    // Structured (narrow value spread) half of the time, so that skip / untouched do occur.
    const int spread = trial % 2 ? s_q + 1 : 1 + int(gen() % 24);
    const int base = int(gen() % (s_q + 1));
    std::vector<int32_t> cols(ncols * 4);
    for (auto& x : cols) x = std::min<int32_t>(s_q, base + int32_t(gen() % spread));
    if (trial % 8 == 3)  // far-apart bounds: whole-range intervals
      for (int j = 0; j < ncols; ++j) {
        cols[j * 4 + 0] = 0;
        cols[j * 4 + 1] = s_q;
      }
    pte::flashmask::Range r;
    for (int k = 0; k < 4; ++k) {
      r.lo[k] = pte::flashmask::kRowInf;
      r.hi[k] = -1;
    }
    for (int j = 0; j < ncols; ++j)
      for (int k = 0; k < kind.c; ++k) {
        r.lo[k] = std::min(r.lo[k], cols[j * 4 + k]);
        r.hi[k] = std::max(r.hi[k], cols[j * 4 + k]);
      }
    const int64_t m0 = gen() % s_q, m1 = std::min<int64_t>(s_q, m0 + 1 + gen() % 128);
    int n_masked = 0, n_total = 0;
    for (int j = 0; j < ncols; ++j)
      for (int64_t i = m0; i < m1; ++i) {
        const bool want = spec_masked(&cols[j * 4], kind.c, kind.causal, i);
        const bool got = pte::flashmask::masked_by(&cols[j * 4], kind.c, kind.causal, i);
        EXPECT(want == got, "masked_by c=%d causal=%d i=%lld", kind.c, kind.causal, (long long)i);
        n_masked += want;
        ++n_total;
      }
    const int cls = pte::flashmask::classify(r, kind.c, kind.causal, m0, m1);
    const bool wrong = (cls == 0 && n_masked != n_total) || (cls == 1 && n_masked != 0);
    EXPECT(!wrong, "classify c=%d causal=%d rows [%lld, %lld): class %d, %d of %d masked", kind.c,
           kind.causal, (long long)m0, (long long)m1, cls, n_masked, n_total);
    decided += cls != 2;
    // live_rows: every row outside [lo, hi) is masked in every column; inside, the rows a column
    // leaves visible are all there.
    int64_t lo, hi;
    pte::flashmask::live_rows(r, kind.c, kind.causal, s_q, &lo, &hi);
    bool bad = lo < 0 || hi > s_q || hi < lo;
    for (int64_t i = 0; i < s_q && !bad; ++i) {
      if (i >= lo && i < hi) continue;
      for (int j = 0; j < ncols && !bad; ++j)
        bad = !spec_masked(&cols[j * 4], kind.c, kind.causal, i);
    }
    EXPECT(!bad, "live_rows c=%d causal=%d: [%lld, %lld) of %d rows", kind.c, kind.causal,
           (long long)lo, (long long)hi, s_q);
    narrowed += (hi - lo) < s_q;
  }
  // The structured cases must be decided often, or the classification is useless.
  EXPECT(decided >= 4000, "only %d of 20000 tiles were classified skip/untouched", decided);
  EXPECT(narrowed >= 2000, "live_rows narrowed only %d of 20000 ranges", narrowed);
  std::printf("%d decided tiles, %d narrowed\n", decided, narrowed);
  return pte_test::summary("test_flashmask_rule");
}
