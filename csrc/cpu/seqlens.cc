// CPU kernel: padding masks -> cumulative sequence lengths (SPEC §3, paddle_te/seqlens.h).
// Masks are contiguous bool (one byte, True = padding). The kernel never fails on a mask that is
// not right padding: it writes cu_seqlens from the counts anyway and reports the verdict in
// valid[0], as the GPU kernel must (no host sync there); the caller decides what to do.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/kernels.h"
#include "cpu/cpu_common.h"

namespace pte {
namespace cpu {
namespace {

// A [s] padding row: length = number of False; right padding iff no False follows a True.
void row_length(const uint8_t* row, int64_t s, int32_t* len, bool* right_padded) {
  int64_t count = 0;
  bool seen_pad = false, ok = true;
  for (int64_t j = 0; j < s; ++j) {
    if (row[j]) {
      seen_pad = true;
    } else {
      ++count;
      if (seen_pad) ok = false;
    }
  }
  *len = int32_t(count);
  *right_padded = ok;
}

// A full [s_q, s_kv] mask: L_q = rows with any False, L_kv = columns with any False; it is the
// outer OR of two right paddings iff mask[i][j] == !(i < L_q && j < L_kv) everywhere.
// col_any: [s_kv] zeroed scratch.
void full_lengths(const uint8_t* m, int64_t s_q, int64_t s_kv, uint8_t* col_any, int32_t* len_q,
                  int32_t* len_kv, bool* right_padded) {
  int64_t lq = 0;
  for (int64_t i = 0; i < s_q; ++i) {
    const uint8_t* row = m + i * s_kv;
    bool any = false;
    for (int64_t j = 0; j < s_kv; ++j) {
      if (!row[j]) {
        any = true;
        col_any[j] = 1;
      }
    }
    lq += any ? 1 : 0;
  }
  int64_t lk = 0;
  for (int64_t j = 0; j < s_kv; ++j) lk += col_any[j];
  bool ok = true;
  for (int64_t i = 0; i < s_q && ok; ++i) {
    const uint8_t* row = m + i * s_kv;
    for (int64_t j = 0; j < s_kv; ++j) {
      const bool expect_masked = !(i < lq && j < lk);
      if (bool(row[j]) != expect_masked) {
        ok = false;
        break;
      }
    }
  }
  *len_q = int32_t(lq);
  *len_kv = int32_t(lk);
  *right_padded = ok;
}

}  // namespace

void mask_to_cu_seqlens(const SeqlensProblem& p) {
  PTE_CHECK(p.b >= 0, "mask: batch=", p.b, ": must be >= 0");
  std::vector<int32_t> len_q(p.b), len_kv(p.b);
  std::vector<uint8_t> ok(p.b, 1);
  // Scratch allocated here, not inside the parallel loop, so a failure throws to the caller.
  std::vector<uint8_t> col_any(p.full ? p.b * p.s_kv : 0, 0);
  // Batch entries are independent; the prefix sums below are serial (b is small).
  const int nt = threads_for(double(p.b) * (p.full ? p.s_q * p.s_kv : p.s_q + p.s_kv));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t bi = 0; bi < p.b; ++bi) {
    bool good = true;
    if (p.full) {
      full_lengths(p.mask + bi * p.s_q * p.s_kv, p.s_q, p.s_kv, col_any.data() + bi * p.s_kv,
                   &len_q[bi], &len_kv[bi], &good);
    } else {
      row_length(p.mask + bi * p.s_q, p.s_q, &len_q[bi], &good);
      if (p.mask_kv != nullptr) {
        bool good_kv = true;
        row_length(p.mask_kv + bi * p.s_kv, p.s_kv, &len_kv[bi], &good_kv);
        good = good && good_kv;
      } else {
        len_kv[bi] = len_q[bi];  // one mask for q and kv (self-attention)
      }
    }
    ok[bi] = good ? 1 : 0;
  }
  int32_t cq = 0, ck = 0;
  p.cu_q[0] = 0;
  p.cu_kv[0] = 0;
  for (int64_t bi = 0; bi < p.b; ++bi) {
    cq += len_q[bi];
    ck += len_kv[bi];
    p.cu_q[bi + 1] = cq;
    p.cu_kv[bi + 1] = ck;
  }
  if (p.valid != nullptr) {
    p.valid[0] = std::all_of(ok.begin(), ok.end(), [](uint8_t v) { return v != 0; }) ? 1 : 0;
  }
}

}  // namespace cpu
}  // namespace pte
