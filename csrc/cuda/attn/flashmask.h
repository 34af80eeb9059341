// FlashMask (SPEC §9) as the flash kernels see it: one mask policy for every kernel family
// (sm80/, sm90/). The rule itself is core/flashmask_rule.h (shared with the CPU kernels); this
// header adds the per-(batch, query head) view over the column bounds and the tile classification
// from the summary that flashmask_summarize writes into the workspace before the attention
// kernels run:
//   summary[b][mask_heads][ceil(s_kv / 32)][C][2] = {min, max} of each bound column over the
//   chunk's key columns (< s_kv).
// A kernel asks tile_class() once per (query tile, key tile): 0 = skip the tile (every element
// masked by the intervals), 1 = no element masked by the intervals (only the window/causal rule
// may still mask), 2 = partial (test elements with masked() or column_bounds() + masked_by()).
// The window/causal rule and FlashMask combine: visible iff the rule allows it AND no interval
// masks it.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "core/flashmask_rule.h"
#include "core/problem.h"

namespace pte {
namespace flash {

// Bytes of the summary workspace of p (0 without FlashMask), and where it sits in a workspace
// whose other contents take `before` bytes (a 256-byte boundary after them).
inline size_t flashmask_summary_bytes(const AttnProblem& p) {
  if (p.startend == nullptr) return 0;
  const int64_t chunks = (p.s_kv + flashmask::kChunk - 1) / flashmask::kChunk;
  return size_t(p.b * p.startend_heads * chunks * p.startend_c * 2) * sizeof(int32_t);
}
inline size_t flashmask_summary_offset(size_t before) { return (before + 255) / 256 * 256; }

// Writes p.startend's summary to `summary` (flashmask_summary_bytes(p) bytes) on `stream`.
void flashmask_summarize(const AttnProblem& p, int32_t* summary, cudaStream_t stream);

struct FlashMaskView {
  const int32_t* cols;     // [s_kv][c] bounds of this (batch, mask head); null = no FlashMask
  const int32_t* summary;  // [chunks][c][2] of this (batch, mask head)
  int64_t s_kv;
  int c;
  bool causal;

  __device__ __forceinline__ FlashMaskView(const AttnProblem& p, int64_t bi, int64_t hq) {
    c = p.startend_c;
    causal = p.startend_causal;
    s_kv = p.s_kv;
    if (p.startend == nullptr) {
      cols = nullptr;
      summary = nullptr;
      return;
    }
    // Heads are <= 65535 (the flash check): 32-bit divisions, not the 64-bit routine.
    const int64_t mh = int(hq) / (int(p.h) / int(p.startend_heads));
    const int64_t head = bi * p.startend_heads + mh;
    const int64_t chunks = (p.s_kv + flashmask::kChunk - 1) / flashmask::kChunk;
    cols = p.startend + head * p.s_kv * c;
    summary = p.startend_summary + head * chunks * c * 2;
  }

  __device__ __forceinline__ bool active() const { return cols != nullptr; }

  // Class of the tile rows [m0, m1) x keys [n0, n1) (n0 a multiple of 32); 1 without FlashMask.
  // I = int64_t, or int (rows and keys < 2^31 - BM, which the int32 bounds imply for real
  // problems) where registers are scarce.
  template <typename I>
  __device__ __forceinline__ int tile_class(I m0, I m1, I n0, I n1) const {
    if (cols == nullptr) return 1;
    if (n1 > I(s_kv)) n1 = I(s_kv);
    if (n0 >= n1) return 1;  // no key column: nothing for the intervals to mask
    flashmask::Range r;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      r.lo[k] = flashmask::kRowInf;
      r.hi[k] = -1;
    }
    const int ch0 = int(n0 / I(flashmask::kChunk)), ch1 = int((n1 - 1) / I(flashmask::kChunk));
    for (int ch = ch0; ch <= ch1; ++ch) {
      const int32_t* s = summary + ch * c * 2;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k < c) {
          const int32_t lo = __ldg(s + 2 * k), hi = __ldg(s + 2 * k + 1);
          r.lo[k] = lo < r.lo[k] ? lo : r.lo[k];
          r.hi[k] = hi > r.hi[k] ? hi : r.hi[k];
        }
      }
    }
    return flashmask::classify_rows<I>(r, c, causal, m0, m1);
  }

  // The bounds' min and max over key columns [n0, n1) (n0 a multiple of 32), from the summary:
  // for a kernel that classifies many row tiles against one key tile (the dK/dV kernels).
  __device__ __forceinline__ flashmask::Range key_range(int64_t n0, int64_t n1) const {
    flashmask::Range r;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      r.lo[k] = flashmask::kRowInf;
      r.hi[k] = -1;
    }
    if (n1 > s_kv) n1 = s_kv;
    if (cols == nullptr || n0 >= n1) return r;
    const int64_t ch0 = n0 / flashmask::kChunk, ch1 = (n1 - 1) / flashmask::kChunk;
    for (int64_t ch = ch0; ch <= ch1; ++ch) {
      const int32_t* s = summary + ch * c * 2;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k < c) {
          const int32_t lo = __ldg(s + 2 * k), hi = __ldg(s + 2 * k + 1);
          r.lo[k] = lo < r.lo[k] ? lo : r.lo[k];
          r.hi[k] = hi > r.hi[k] ? hi : r.hi[k];
        }
      }
    }
    return r;
  }
  // tile_class from a key_range (an empty range, hi < lo, means no key column: class 1).
  __device__ __forceinline__ int range_class(const flashmask::Range& r, int64_t m0,
                                             int64_t m1) const {
    if (cols == nullptr || r.hi[0] < r.lo[0]) return 1;
    return flashmask::classify(r, c, causal, m0, m1);
  }

  // Row tile [m0, m1) against key tiles of BN: the first tile index t' in [t, n_tiles) (tile t'
  // covers keys [(n_first + t') * BN, + BN)) that is not skipped, or n_tiles; *cls = its class.
  // The lanes of a warp classify 32 tiles at once; every thread of the warp must call it with the
  // same arguments, and every warp of a block gets the same answer (block-uniform branches).
  template <int BN>
  __device__ __forceinline__ int next_key_tile(int t, int n_tiles, int64_t n_first, int64_t m0,
                                               int64_t m1, int* cls) const {
    if (cols == nullptr) {
      *cls = 1;
      return t;
    }
    const int lane = threadIdx.x % 32;
    for (; t < n_tiles; t += 32) {
      const int mine = t + lane;
      int k = 0;
      if (mine < n_tiles) {
        const int64_t n0 = (n_first + mine) * BN;
        k = tile_class(m0, m1, n0, n0 + BN);
      }
      const unsigned live = __ballot_sync(0xffffffffu, mine < n_tiles && k != 0);
      if (live != 0) {
        const int src = __ffs(live) - 1;
        *cls = __shfl_sync(0xffffffffu, k, src);
        return t + src;
      }
    }
    *cls = 0;
    return n_tiles;
  }

  // The rows outside of which the intervals mask every row in every key column of [n0, n1)
  // (flashmask::live_rows); [0, s_q) without FlashMask.
  __device__ __forceinline__ void live_rows(int64_t n0, int64_t n1, int64_t s_q, int64_t* lo,
                                            int64_t* hi) const {
    *lo = 0;
    *hi = s_q;
    if (cols == nullptr) return;
    const flashmask::Range r = key_range(n0, n1);
    if (r.hi[0] < r.lo[0]) return;
    flashmask::live_rows(r, c, causal, s_q, lo, hi);
  }

  // The bounds of key column j (< s_kv) into b[0..c).
  __device__ __forceinline__ void column_bounds(int64_t j, int32_t (&b)[4]) const {
    const int32_t* col = cols + j * c;
#pragma unroll
    for (int k = 0; k < 4; ++k) b[k] = k < c ? __ldg(col + k) : 0;
  }

  __device__ __forceinline__ static bool masked_by(const int32_t (&b)[4], int c, bool causal,
                                                   int64_t i) {
    return flashmask::masked_by(b, c, causal, i);
  }

  // The masked row intervals of key column j (< s_kv): for a kernel that tests several rows of a
  // column (flashmask::masked_by's arithmetic with the bounds decoded once).
  __device__ __forceinline__ flashmask::Intervals column_intervals(int64_t j) const {
    int32_t b[4];
    column_bounds(j, b);
    return flashmask::intervals(b, c, causal);
  }
  __device__ __forceinline__ static bool in_intervals(const flashmask::Intervals& v, int32_t i) {
    return (i >= v.a1 && i < v.e1) || (i >= v.a2 && i < v.e2);
  }

  // Whether the intervals mask row i in key column j (false past s_kv and without FlashMask).
  __device__ __forceinline__ bool masked(int64_t i, int64_t j) const {
    if (cols == nullptr || j >= s_kv || j < 0) return false;
    int32_t b[4];
    column_bounds(j, b);
    return masked_by(b, c, causal, i);
  }
};

// A walk over items [0, n) (the key tiles of a query tile, the query steps of a key block) that
// skips items of class 0. A warp classifies 32 items at once, one per lane, and keeps their classes
// as two ballot masks, so each item is classified once per walk and a step to the next item costs
// a few bit operations; only every 32nd item reads the summary. Warp-collective: every lane of the
// warp calls next() with the same arguments and gets the same answer. Two warps (or a producer and
// its consumers) walking the same items with the same classify() visit the same sequence: the
// answer is a function of the classes alone, not of the call pattern.
struct SkipCursor {
  int base = -32;     // items [base, base + 32) are classified in live / part
  unsigned live = 0;  // bit k: item base + k is not skipped
  unsigned part = 0;  // bit k: item base + k is partial (class 2)

  // The first item t' >= t that is not skipped, or n; *cls = its class (0 when n). classify(x)
  // -> 0, 1 or 2 is called for items x < n only.
  template <class Classify>
  __device__ __forceinline__ int next(int t, int n, const Classify& classify, int* cls) {
    while (t < n) {
      if (unsigned(t - base) >= 32u) {
        base = t;
        const int mine = t + int(threadIdx.x % 32);
        const int k = mine < n ? classify(mine) : 0;
        live = __ballot_sync(0xffffffffu, k != 0);
        part = __ballot_sync(0xffffffffu, k == 2);
      }
      const unsigned rest = live >> (t - base);
      if (rest != 0) {
        t += __ffs(int(rest)) - 1;
        *cls = (part >> (t - base)) & 1u ? 2 : 1;
        return t;
      }
      t = base + 32;
    }
    *cls = 0;
    return n;
  }
};

// A dK/dV block's query tiles [*first, *first + *count) of BM rows, narrowed to the rows that some
// query head of [hq0, hq1) may see in keys [n0, n1): the steps past a document's end (or before
// its start) are then never walked. Block-uniform.
template <int BM>
__device__ __forceinline__ void narrow_query_tiles(const AttnProblem& p, int64_t bi, int64_t hq0,
                                                   int64_t hq1, int64_t n0, int64_t n1,
                                                   int64_t* first, int64_t* count) {
  if (p.startend == nullptr || *count <= 0) return;
  const int64_t per = p.h / p.startend_heads;  // query heads per mask head
  int64_t lo = p.s_q, hi = 0;
  for (int64_t mh = hq0 / per; mh <= (hq1 - 1) / per; ++mh) {
    int64_t l, h;
    FlashMaskView(p, bi, mh * per).live_rows(n0, n1, p.s_q, &l, &h);
    if (l < h) {
      lo = l < lo ? l : lo;
      hi = h > hi ? h : hi;
    }
  }
  const int64_t end = *first + *count;
  int64_t f = lo / BM, e = (hi + BM - 1) / BM;
  f = f > *first ? f : *first;
  e = e < end ? e : end;
  *first = f;
  *count = e > f ? e - f : 0;
}

}  // namespace flash
}  // namespace pte
