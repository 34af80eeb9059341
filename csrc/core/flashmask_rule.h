// The FlashMask rule (SPEC §9) as plain arithmetic, shared by the CPU kernels and the CUDA mask
// policy (cuda/attn/flashmask.h), so both families apply one definition.
//
// A key column j carries C int32 bounds b[0..C). They describe (at most) two half-open row
// intervals [a1, e1) and [a2, e2) that are masked out in that column:
//   causal  C = 1: [b0, inf)                    causal  C = 2: [b0, b1)
//   !causal C = 2: [b0, inf) and [0, b1)        !causal C = 4: [b0, b1) and [b2, b3)
// An empty or inverted interval masks nothing. The ordinary window/causal rule is applied
// separately; a key is visible iff that rule allows it and no interval masks it.
#pragma once

#include <cstdint>

#include "core/problem.h"

namespace pte {
namespace flashmask {

constexpr int64_t kChunk = 32;      // key columns per summary chunk (CUDA workspace)
constexpr int32_t kRowInf = 0x7fffffff;

// The two intervals of a column from its bounds (unused entries of b are ignored).
struct Intervals {
  int32_t a1, e1, a2, e2;  // a2 >= e2 when there is no second interval
};

PTE_HOST_DEVICE Intervals intervals(const int32_t* b, int c, bool causal) {
  if (causal) return {b[0], c == 1 ? kRowInf : b[1], 0, 0};
  if (c == 2) return {b[0], kRowInf, 0, b[1]};
  return {b[0], b[1], b[2], b[3]};
}

// Whether row i is masked out in a column with bounds b.
PTE_HOST_DEVICE bool masked_by(const int32_t* b, int c, bool causal, int64_t i) {
  const Intervals v = intervals(b, c, causal);
  return (i >= v.a1 && i < v.e1) || (i >= v.a2 && i < v.e2);
}

// Per bound column, the min and max over a set of key columns: lo[k], hi[k] for k < c.
struct Range {
  int32_t lo[4], hi[4];
};

// Tile classification for rows [m0, m1) against columns whose bounds lie in r:
// 0 = every (row, column) masked by the intervals, 1 = none masked, 2 = partial (test elements).
// Conservative: 0 and 1 are only answered when they hold for every column in the range.
// I: the row type; int32_t is exact while m1 <= kRowInf (rows are int32 bounds), which a GPU
// kernel whose registers are scarce may use; int64_t otherwise.
template <typename I>
PTE_HOST_DEVICE int classify_rows(const Range& r, int c, bool causal, I m0, I m1) {
  if (m0 >= m1) return 1;
  // Interval 1 starts at bound 0 and ends at bound 1 (or never); interval 2 as intervals().
  I a1_lo = r.lo[0], a1_hi = r.hi[0];
  I e1_lo, e1_hi, a2_lo, a2_hi, e2_lo, e2_hi;
  bool has2;
  if (causal) {
    e1_lo = c == 1 ? kRowInf : r.lo[1];
    e1_hi = c == 1 ? kRowInf : r.hi[1];
    has2 = false;
    a2_lo = a2_hi = e2_lo = e2_hi = 0;
  } else if (c == 2) {
    e1_lo = e1_hi = kRowInf;
    has2 = true;
    a2_lo = a2_hi = 0;
    e2_lo = r.lo[1];
    e2_hi = r.hi[1];
  } else {
    e1_lo = r.lo[1];
    e1_hi = r.hi[1];
    has2 = true;
    a2_lo = r.lo[2];
    a2_hi = r.hi[2];
    e2_lo = r.lo[3];
    e2_hi = r.hi[3];
  }
  // Fully masked: one interval covers [m0, m1) in every column.
  if (a1_hi <= m0 && e1_lo >= m1) return 0;
  if (has2 && a2_hi <= m0 && e2_lo >= m1) return 0;
  // Untouched: each interval misses [m0, m1) in every column (starts at or after m1, or ends at
  // or before m0).
  const bool miss1 = a1_lo >= m1 || e1_hi <= m0;
  const bool miss2 = !has2 || a2_lo >= m1 || e2_hi <= m0;
  return miss1 && miss2 ? 1 : 2;
}
PTE_HOST_DEVICE int classify(const Range& r, int c, bool causal, int64_t m0, int64_t m1) {
  return classify_rows<int64_t>(r, c, causal, m0, m1);
}

// Rows [*lo, *hi) (within [0, s_q)) outside of which every row is masked by the intervals in
// every column of the range r: an interval whose latest start is <= the live rows' start masks
// [0, its earliest end) everywhere; one whose earliest end reaches s_q masks [its latest start,
// s_q). Conservative: the rows some column leaves visible all lie inside [*lo, *hi).
PTE_HOST_DEVICE void cut_dead(int64_t a_hi, int64_t e_lo, int64_t s_q, int64_t* lo, int64_t* hi) {
  if (a_hi >= e_lo) return;
  if (a_hi <= *lo && e_lo > *lo) *lo = e_lo;
  if (e_lo >= s_q && a_hi < *hi) *hi = a_hi;
}
PTE_HOST_DEVICE void live_rows(const Range& r, int c, bool causal, int64_t s_q, int64_t* lo,
                               int64_t* hi) {
  *lo = 0;
  *hi = s_q;
  if (causal) {
    cut_dead(r.hi[0], c == 1 ? kRowInf : r.lo[1], s_q, lo, hi);
  } else if (c == 2) {
    cut_dead(r.hi[0], kRowInf, s_q, lo, hi);  // rows >= LTS
    cut_dead(0, r.lo[1], s_q, lo, hi);        // rows < UTE
    cut_dead(r.hi[0], kRowInf, s_q, lo, hi);  // again: the first cut may have moved *lo
  } else {
    for (int pass = 0; pass < 2; ++pass) {    // two passes: one cut can enable the other
      cut_dead(r.hi[0], r.lo[1], s_q, lo, hi);
      cut_dead(r.hi[2], r.lo[3], s_q, lo, hi);
    }
  }
  if (*lo > s_q) *lo = s_q;  // every row masked everywhere: empty
  if (*hi < *lo) *hi = *lo;
}

}  // namespace flashmask
}  // namespace pte
