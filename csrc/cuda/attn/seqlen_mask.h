// Per-sequence geometry and the visibility rule (SPEC §2) as the flash kernels use it: actual
// lengths (clamped so a bad cu_seqlens cannot read out of bounds), where each sequence starts in
// every tensor, and which key tiles a query tile must visit (or query tiles a key tile), so that
// fully masked tiles are never loaded: time grows with the window, not with s².
#pragma once

#include <cstdint>

#include "core/problem.h"

namespace pte {
namespace flash {

struct SeqInfo {
  int64_t L_q, L_kv;          // actual lengths
  int64_t q_start, kv_start;  // token index of position 0 (thd) or 0
  int64_t delta;              // bottom-right shift L_kv - L_q, or 0

  __device__ __forceinline__ SeqInfo(const AttnProblem& p, int64_t bi) {
    L_q = seq_len(p.cu_q, bi, p.s_q);
    L_kv = seq_len(p.cu_kv, bi, p.s_kv);
    q_start = 0;
    kv_start = 0;
    if (p.thd) {
      // Clamp the start into the packed tensor and the length to what is left of it.
      q_start = clamp_start(p.cu_q[bi], p.t_q);
      kv_start = clamp_start(p.cu_kv[bi], p.t_kv);
      L_q = L_q < p.t_q - q_start ? L_q : p.t_q - q_start;
      L_kv = L_kv < p.t_kv - kv_start ? L_kv : p.t_kv - kv_start;
    }
    delta = p.bottom_right ? L_kv - L_q : 0;
  }
  static __device__ __forceinline__ int64_t clamp_start(int32_t v, int64_t t) {
    return v < 0 ? 0 : (int64_t(v) > t ? t : int64_t(v));
  }

  // Element offset of (position i, head hh) in a tensor with strides st.
  __device__ __forceinline__ int64_t q_offset(const Strides& st, int64_t bi, int64_t i,
                                              int64_t hh) const {
    return offset(st, bi, q_start + i, hh);
  }
  __device__ __forceinline__ int64_t kv_offset(const Strides& st, int64_t bi, int64_t j,
                                               int64_t hh) const {
    return offset(st, bi, kv_start + j, hh);
  }
  static __device__ __forceinline__ int64_t offset(const Strides& st, int64_t bi, int64_t tok,
                                                   int64_t hh) {
    return bi * st.batch + tok * st.seq + hh * st.head;  // thd tensors have st.batch == 0
  }
};

// Tiles [first, first + count) of `tile` positions that cover positions [lo, hi] (none when
// hi < lo).
struct TileSpan {
  int64_t first, count;
  __device__ __forceinline__ static TileSpan of(int64_t lo, int64_t hi, int tile) {
    const int64_t first = lo / tile;
    return {first, hi >= lo ? hi / tile - first + 1 : 0};
  }
};

// The window rule with both lengths: query i sees key j.
struct Mask {
  int64_t L_q, L_kv, delta, left, right;

  __device__ __forceinline__ Mask(const AttnProblem& p, const SeqInfo& s)
      : L_q(s.L_q), L_kv(s.L_kv), delta(s.delta), left(p.window_left), right(p.window_right) {}

  __device__ __forceinline__ bool visible(int64_t i, int64_t j) const {
    return i < L_q && j < L_kv && (left < 0 || j >= i + delta - left) &&
           (right < 0 || j <= i + delta + right);
  }

  // The keys of the tile [n0, n0 + n) that query i sees, as tile-local [*lo, *hi) (empty when
  // *lo >= *hi): the same rule as visible(), evaluated once per row so that the per-element test
  // of a partly masked tile is two 32-bit compares.
  __device__ __forceinline__ void row_span(int64_t i, int64_t n0, int n, int* lo, int* hi) const {
    int64_t l = n0, h = i < L_q ? L_kv : 0;
    if (left >= 0 && i + delta - left > l) l = i + delta - left;
    if (right >= 0 && i + delta + right + 1 < h) h = i + delta + right + 1;
    l -= n0;
    h -= n0;
    *lo = int(l > n ? n : l);
    *hi = int(h < 0 ? 0 : (h > n ? n : h));
  }

  // Keys [*lo, *hi] that some query of [m0, m1) (clamped to L_q) may see; empty if lo > hi.
  __device__ __forceinline__ void key_range(int64_t m0, int64_t m1, int64_t* lo,
                                            int64_t* hi) const {
    if (m1 > L_q) m1 = L_q;
    int64_t l = left < 0 ? 0 : m0 + delta - left;
    int64_t r = right < 0 ? L_kv - 1 : (m1 - 1) + delta + right;
    *lo = l < 0 ? 0 : l;
    *hi = r > L_kv - 1 ? L_kv - 1 : r;
    if (m0 >= m1) *hi = *lo - 1;
  }

  // Queries [*lo, *hi] that may see some key of [n0, n1) (clamped to L_kv): key j is visible from
  // i iff j - delta - right <= i <= j - delta + left.
  __device__ __forceinline__ void query_range(int64_t n0, int64_t n1, int64_t* lo,
                                              int64_t* hi) const {
    if (n1 > L_kv) n1 = L_kv;
    int64_t l = right < 0 ? 0 : n0 - delta - right;
    int64_t r = left < 0 ? L_q - 1 : (n1 - 1) - delta + left;
    *lo = l < 0 ? 0 : l;
    *hi = r > L_q - 1 ? L_q - 1 : r;
    if (n0 >= n1) *hi = *lo - 1;
  }

  // The tiles of BN keys that queries [m0, m1) may see (key_range in whole tiles), and the tiles
  // of BM queries that keys [n0, n1) may be seen by (query_range): a kernel visits tiles
  // [first, first + count) and loads nothing else.
  template <int BN>
  __device__ __forceinline__ TileSpan key_tiles(int64_t m0, int64_t m1) const {
    int64_t lo, hi;
    key_range(m0, m1, &lo, &hi);
    return TileSpan::of(lo, hi, BN);
  }
  template <int BM>
  __device__ __forceinline__ TileSpan query_tiles(int64_t n0, int64_t n1) const {
    int64_t lo, hi;
    query_range(n0, n1, &lo, &hi);
    return TileSpan::of(lo, hi, BM);
  }

  // True when every (query, key) of the tile [m0, m1) x [n0, n1) is visible, so the tile can skip
  // the per-element predicate. Tiles reaching past a length are never "full".
  __device__ __forceinline__ bool tile_full(int64_t m0, int64_t m1, int64_t n0,
                                            int64_t n1) const {
    return m1 <= L_q && n1 <= L_kv && (left < 0 || n0 >= (m1 - 1) + delta - left) &&
           (right < 0 || n1 - 1 <= m0 + delta + right);
  }
};

}  // namespace flash
}  // namespace pte
