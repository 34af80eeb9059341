// CPU reference kernels for fused attention, forward and backward (SPEC §2, §3, §8).
//
// FlashAttention-style tiling on the CPU: the score matrix is never materialized. The forward
// walks (batch, query head, 64-query block) tasks; each streams the 64-key tiles that its rows can
// see (tiles wholly outside the window are never touched, so time grows with the window) with an
// online softmax. The backward recomputes the probabilities from the forward's lse and walks
// (batch, kv head) tasks, each owning the dK/dV rows of its kv head and the dQ rows of that kv
// head's query heads (see kMinBwdTasks for small batches): no atomics, and results do not depend
// on the number of threads (bitwise repeatable, so `deterministic` is always honoured).
//
// Accumulation is in the input type (float32 or float64); float16/bfloat16 are converted to
// float32 by the caller.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/philox.h"
#include "core/error.h"
#include "core/flashmask_rule.h"
#include "core/kernels.h"
#include "cpu/cpu_common.h"

namespace pte {
namespace cpu {
namespace {

constexpr int64_t kBlockM = 64;  // query rows per tile
constexpr int64_t kBlockN = 64;  // keys per tile (also the leading dimension of score tiles)
// The backward normally runs one task per (batch, kv head), which owns dK, dV and the dQ of that
// kv head's query heads. With fewer (batch, kv head) pairs than this (small-batch MQA) that
// leaves cores idle, so it runs two passes instead: dK/dV per (batch, kv head, key tile), then
// dQ per (batch, query head, query block), recomputing P and dS (7 tile products instead of 5,
// but full parallelism and no extra memory). A function of the shape only, never of the thread
// count, so the summation order and the bits of the result are fixed.
constexpr int64_t kMinBwdTasks = 16;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ----------------------------------------------------------------------------------------------
// GEMM micro kernels.
// C[M, N] (= or +=) sum_k A(i, k) * B[k, :], where
//   A(i, k) = A[i * a_i + k * a_k] is read one scalar at a time and broadcast, so any layout works
//            (row-major P, or P^T with a_i = 1 for the dK/dV products);
//   B [K, N] has rows `ldb` apart and is contiguous along N (the vectorized dimension);
//   C [M, N] has rows `ldc` apart and is contiguous along N.
// An MR x NR block of C stays in registers across the k loop: NR is two 256-bit vectors, so with
// MR = 4 the block is 8 vector registers, leaving room for B loads and A broadcasts.
template <class T>
struct Micro {
  static constexpr int kRows = 4;
  static constexpr int kCols = int(64 / sizeof(T));
};

template <class T, bool kAcc>
PTE_CPU_INLINE void micro_full(int64_t K, const T* A, int64_t a_i, int64_t a_k, const T* B,
                               int64_t ldb, T* C, int64_t ldc) {
  constexpr int MR = Micro<T>::kRows, NR = Micro<T>::kCols;
  T acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
#pragma omp simd
    for (int c = 0; c < NR; ++c) acc[r][c] = kAcc ? C[r * ldc + c] : T(0);
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* brow = B + k * ldb;
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * a_i + k * a_k];
#pragma omp simd
      for (int c = 0; c < NR; ++c) acc[r][c] += a * brow[c];
    }
  }
  for (int r = 0; r < MR; ++r) {
#pragma omp simd
    for (int c = 0; c < NR; ++c) C[r * ldc + c] = acc[r][c];
  }
}

// Edge blocks: mr <= MR rows, nr <= NR columns.
template <class T, bool kAcc>
PTE_CPU_INLINE void micro_edge(int64_t mr, int64_t nr, int64_t K, const T* A, int64_t a_i,
                               int64_t a_k, const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int MR = Micro<T>::kRows, NR = Micro<T>::kCols;
  T acc[MR][NR];
  for (int64_t r = 0; r < mr; ++r) {
    for (int64_t c = 0; c < nr; ++c) acc[r][c] = kAcc ? C[r * ldc + c] : T(0);
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* brow = B + k * ldb;
    for (int64_t r = 0; r < mr; ++r) {
      const T a = A[r * a_i + k * a_k];
      for (int64_t c = 0; c < nr; ++c) acc[r][c] += a * brow[c];
    }
  }
  for (int64_t r = 0; r < mr; ++r) {
    for (int64_t c = 0; c < nr; ++c) C[r * ldc + c] = acc[r][c];
  }
}

template <class T, bool kAcc>
PTE_CPU_CLONES void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_i, int64_t a_k,
                         const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int MR = Micro<T>::kRows, NR = Micro<T>::kCols;
  const int64_t m_full = M - M % MR, n_full = N - N % NR;
  for (int64_t i = 0; i < m_full; i += MR) {
    for (int64_t j = 0; j < n_full; j += NR) {
      micro_full<T, kAcc>(K, A + i * a_i, a_i, a_k, B + j, ldb, C + i * ldc + j, ldc);
    }
    if (n_full < N) {
      micro_edge<T, kAcc>(MR, N - n_full, K, A + i * a_i, a_i, a_k, B + n_full, ldb,
                          C + i * ldc + n_full, ldc);
    }
  }
  if (m_full < M) {
    for (int64_t j = 0; j < N; j += NR) {
      micro_edge<T, kAcc>(M - m_full, std::min<int64_t>(NR, N - j), K, A + m_full * a_i, a_i, a_k,
                          B + j, ldb, C + m_full * ldc + j, ldc);
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Tile routines. A score tile is [m <= kBlockM, n <= kBlockN] with row stride kBlockN; row r
// sees the tile's columns [ca[r], cb[r]) (its visible range clipped to the tile).

// Online-softmax step of the forward. In: S = raw scores q.k. Out: S = exp(scale*S - new max)
// on visible columns, exactly 0 elsewhere; the running max/sum and the output accumulator
// O [m, d_v] (null in a statistics-only pass) are rescaled to the new max. M (null = none) is a
// FlashMask element mask of the tile ([m, kBlockN], 1 = masked out) on top of [ca, cb).
template <class T>
PTE_CPU_CLONES void softmax_tile_fwd(int64_t m, int64_t n, const int64_t* ca, const int64_t* cb,
                                     const uint8_t* M, T scale, T* S, T* row_max, T* row_sum, T* O,
                                     int64_t d_v) {
  for (int64_t r = 0; r < m; ++r) {
    T* s = S + r * kBlockN;
    const uint8_t* mk = M != nullptr ? M + r * kBlockN : nullptr;
    const int64_t a = ca[r], b = cb[r];
    for (int64_t j = 0; j < a; ++j) s[j] = T(0);
    for (int64_t j = b; j < n; ++j) s[j] = T(0);
    if (a >= b) continue;
    T mx = neg_inf<T>();
    if (mk != nullptr) {
      for (int64_t j = a; j < b; ++j) {
        const T x = s[j] * scale;
        mx = !mk[j] && x > mx ? x : mx;
      }
      if (mx == neg_inf<T>()) {  // every visible column of this row is masked here
        for (int64_t j = a; j < b; ++j) s[j] = T(0);
        continue;
      }
    } else {
#pragma omp simd reduction(max : mx)
      for (int64_t j = a; j < b; ++j) {
        const T x = s[j] * scale;
        mx = x > mx ? x : mx;
      }
    }
    const T m_old = row_max[r];
    const T m_new = m_old > mx ? m_old : mx;
    exp_row(s + a, b - a, scale, m_new);
    if (mk != nullptr) {
      for (int64_t j = a; j < b; ++j) s[j] = mk[j] ? T(0) : s[j];
    }
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int64_t j = a; j < b; ++j) sum += s[j];
    if (m_old != m_new) {
      // m_old == -inf: nothing accumulated yet (sum and O are 0); avoids exp(-inf - -inf) = NaN.
      const T alpha = m_old == neg_inf<T>() ? T(0) : exp_one(m_old - m_new);
      row_sum[r] *= alpha;
      if (O != nullptr) {
        T* o = O + r * d_v;
#pragma omp simd
        for (int64_t c = 0; c < d_v; ++c) o[c] *= alpha;
      }
    }
    row_sum[r] += sum;
    row_max[r] = m_new;
  }
}

// Gradient step of the backward. In: S = raw scores, dP = dO.V^T, Z = dropout multipliers (0 or
// 1/(1-p); null without dropout). Out: S = dropped probabilities P*Z (for dV = (P*Z)^T dO),
// dP = dS = scale * P * (dP*Z - D) (the gradient w.r.t. the raw scores q.k). Rows whose lse is
// -inf (no visible key) and invisible columns give exactly 0.
template <class T>
PTE_CPU_CLONES void grad_tile_bwd(int64_t m, int64_t n, const int64_t* ca, const int64_t* cb,
                                  const uint8_t* M, T scale, const T* lse, const T* D, T* S, T* dP,
                                  const T* Z) {
  for (int64_t r = 0; r < m; ++r) {
    T* s = S + r * kBlockN;
    T* dp = dP + r * kBlockN;
    int64_t a = ca[r], b = cb[r];
    const T L = lse[r], Dr = D[r];
    if (L == neg_inf<T>()) b = a;
    for (int64_t j = 0; j < a; ++j) s[j] = dp[j] = T(0);
    for (int64_t j = std::max(a, b); j < n; ++j) s[j] = dp[j] = T(0);
    exp_row(s + a, b - a, scale, L);  // P = exp(scale * S - lse)
    if (M != nullptr) {  // FlashMask: masked elements have P = 0 (and so dS = 0)
      const uint8_t* mk = M + r * kBlockN;
      for (int64_t j = a; j < b; ++j) s[j] = mk[j] ? T(0) : s[j];
    }
    if (Z != nullptr) {
      const T* z = Z + r * kBlockN;
#pragma omp simd
      for (int64_t j = a; j < b; ++j) {
        dp[j] = scale * s[j] * (dp[j] * z[j] - Dr);
        s[j] *= z[j];
      }
    } else {
#pragma omp simd
      for (int64_t j = a; j < b; ++j) dp[j] = scale * s[j] * (dp[j] - Dr);
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Helpers.

// Rows of one (sequence `bi`, head) of a [.., seq, head, dim] tensor: row i at base + i * st.seq.
template <class T, class V>
T* head_rows(const AttnProblem& p, V* base, const Strides& st, const int32_t* cu, int64_t bi,
             int64_t head) {
  return static_cast<T*>(base) + p.seq_start(st, cu, bi) + head * st.head;
}

template <class T>
void zero_rows(T* base, int64_t row_stride, int64_t rows, int64_t width) {
  for (int64_t i = 0; i < rows; ++i) std::fill_n(base + i * row_stride, width, T(0));
}

// K rows [n, d] (rows `ld` apart) -> Kt [d, kBlockN], so the score product streams contiguous
// key vectors along the tile's columns.
template <class T>
void transpose_tile(const T* rows, int64_t ld, int64_t n, int64_t d, T* out) {
  for (int64_t j = 0; j < n; ++j) {
    const T* src = rows + j * ld;
    for (int64_t c = 0; c < d; ++c) out[c * kBlockN + j] = src[c];
  }
}

// Dropout multipliers of keys [jb, je) of query i: z[j - j0] = keep ? 1/(1-p) : 0, with the
// documented Philox rule (paddle_te/attention.h, common/philox.h): one Philox call covers the 4
// keys 4g .. 4g+3. The calls of a row differ only in the first counter word, so the loop over
// groups vectorizes (8 Philox streams per AVX2 register); `draws` is scratch of at least
// 4 * (kBlockN / 4 + 2) words.
template <class T>
PTE_CPU_CLONES void dropout_row(const AttnProblem& p, uint32_t threshold, T inv_keep, int64_t bi,
                                int64_t hq, int64_t i, int64_t jb, int64_t je, int64_t j0, T* z,
                                uint32_t* draws) {
  if (jb >= je) return;
  const int64_t g_begin = jb >> 2, g_count = ((je - 1) >> 2) - g_begin + 1;
  const uint32_t k0 = uint32_t(p.seed);
  const uint32_t k1 = uint32_t(p.seed >> 32) + uint32_t(p.offset >> 32);
  const uint32_t row = uint32_t(i), stream = uint32_t(bi * p.h + hq), off = uint32_t(p.offset);
#pragma omp simd
  for (int64_t g = 0; g < g_count; ++g) {
    const Philox4 r = philox4x32_10(Philox4{uint32_t(g_begin + g), row, stream, off}, k0, k1);
    draws[4 * g] = r.x;
    draws[4 * g + 1] = r.y;
    draws[4 * g + 2] = r.z;
    draws[4 * g + 3] = r.w;
  }
  const uint32_t* d = draws - 4 * g_begin;  // d[j] is the draw of key j
#pragma omp simd
  for (int64_t j = jb; j < je; ++j) z[j - j0] = d[j] >= threshold ? inv_keep : T(0);
}

// Per-thread scratch, allocated before the parallel region (so an allocation failure throws to
// the caller instead of terminating inside OpenMP).
template <class T>
struct Work {
  std::vector<T> kt, vt;   // [d, kBlockN], [d_v, kBlockN]: transposed K, V tiles
  std::vector<T> s, dp, z; // [kBlockM, kBlockN] score / dP / dropout tiles
  std::vector<T> o;        // [kBlockM, d_v] forward output accumulator
  std::vector<T> dk, dv;   // [kBlockN, d], [kBlockN, d_v] backward accumulators
  std::vector<T> row_max, row_sum, row_lse;  // [kBlockM]
  std::vector<int64_t> lo, hi, ca, cb;       // [kBlockM] visible ranges (absolute, tile-local)
  std::vector<uint32_t> draws;               // Philox output of one tile row
  std::vector<uint8_t> fm;                   // [kBlockM, kBlockN] FlashMask of a partial tile

  Work(const AttnProblem& p, bool backward)
      : kt(p.d * kBlockN),
        vt(backward ? p.d_v * kBlockN : 0),
        s(kBlockM * kBlockN),
        dp(backward ? kBlockM * kBlockN : 0),
        z(p.dropout > 0.0f ? kBlockM * kBlockN : 0),
        o(backward ? 0 : kBlockM * p.d_v),
        dk(backward ? kBlockN * p.d : 0),
        dv(backward ? kBlockN * p.d_v : 0),
        row_max(kBlockM),
        row_sum(kBlockM),
        row_lse(kBlockM),
        lo(kBlockM),
        hi(kBlockM),
        ca(kBlockM),
        cb(kBlockM),
        draws(p.dropout > 0.0f ? kBlockN + 8 : 0),
        fm(p.startend != nullptr ? kBlockM * kBlockN : 0) {}
};

// Column bounds of rows [0, m) within key tile [j0, j0 + n).
inline void tile_columns(int64_t m, int64_t j0, int64_t n, const int64_t* lo, const int64_t* hi,
                         int64_t* ca, int64_t* cb) {
  for (int64_t r = 0; r < m; ++r) {
    const int64_t a = std::min(std::max<int64_t>(lo[r] - j0, 0), n);
    const int64_t b = std::min(std::max<int64_t>(hi[r] - j0 + 1, 0), n);
    ca[r] = a;
    cb[r] = std::max(a, b);
  }
}

// FlashMask of one (sequence, query head): the column bounds of its mask head, the tile
// classification (core/flashmask_rule.h) from the bounds' min and max over the tile's columns, and
// the element mask of a partial tile.
struct FlashMaskCols {
  const int32_t* cols = nullptr;  // [s_kv][c] of the mask head; null = no FlashMask
  int c = 0;
  bool causal = false;

  FlashMaskCols(const AttnProblem& p, int64_t bi, int64_t hq) {
    if (p.startend == nullptr) return;
    const int64_t mh = hq / (p.h / p.startend_heads);
    c = p.startend_c;
    causal = p.startend_causal;
    cols = p.startend + (bi * p.startend_heads + mh) * p.s_kv * c;
  }
  // 0 = skip, 1 = no element masked by the intervals, 2 = partial; rows [i0, i0 + m), keys
  // [j0, j0 + n).
  int classify(int64_t i0, int64_t m, int64_t j0, int64_t n) const {
    if (cols == nullptr) return 1;
    flashmask::Range r;
    for (int k = 0; k < 4; ++k) {
      r.lo[k] = flashmask::kRowInf;
      r.hi[k] = -1;
    }
    for (int64_t j = j0; j < j0 + n; ++j) {
      const int32_t* b = cols + j * c;
      for (int k = 0; k < c; ++k) {
        r.lo[k] = std::min(r.lo[k], b[k]);
        r.hi[k] = std::max(r.hi[k], b[k]);
      }
    }
    return flashmask::classify(r, c, causal, i0, i0 + m);
  }
  // M[r * kBlockN + jl] = 1 where row i0 + r is masked in key j0 + jl.
  void fill(int64_t i0, int64_t m, int64_t j0, int64_t n, uint8_t* M) const {
    for (int64_t jl = 0; jl < n; ++jl) {
      const int32_t* b = cols + (j0 + jl) * c;
      for (int64_t r = 0; r < m; ++r) M[r * kBlockN + jl] = flashmask::masked_by(b, c, causal, i0 + r);
    }
  }
};

// ----------------------------------------------------------------------------------------------
// Forward.

// One (sequence bi, query head hq, query block starting at i0) task. With lse_stats non-null
// this is the statistics-only pass of the float64 backward: it writes the row lse there (lse index
// space, in T) and nothing else. Otherwise it writes out (and p.lse when given), including the
// zeros / -inf of padded rows of this block (bshd/sbhd).
template <class T>
void fwd_block(const AttnProblem& p, int64_t bi, int64_t hq, int64_t i0, Work<T>& w,
               T* lse_stats) {
  const bool stats_only = lse_stats != nullptr;
  const int64_t Lq = seq_len(p.cu_q, bi, p.s_q);
  const int64_t Lk = seq_len(p.cu_kv, bi, p.s_kv);
  const int64_t m = std::max<int64_t>(0, std::min(kBlockM, Lq - i0));
  const int64_t hk = hq / (p.h / p.h_kv);
  const T scale = T(p.scale);
  T* o = w.o.data();

  if (m > 0) {
    const T* q = head_rows<const T>(p, p.q, p.q_st, p.cu_q, bi, hq) + i0 * p.q_st.seq;
    const T* k = head_rows<const T>(p, p.k, p.k_st, p.cu_kv, bi, hk);
    const T* v = head_rows<const T>(p, p.v, p.v_st, p.cu_kv, bi, hk);
    int64_t* lo = w.lo.data();
    int64_t* hi = w.hi.data();
    for (int64_t r = 0; r < m; ++r) {
      visible_range(i0 + r, Lq, Lk, p.window_left, p.window_right, p.bottom_right, &lo[r], &hi[r]);
      w.row_max[r] = neg_inf<T>();
      w.row_sum[r] = T(0);
    }
    if (!stats_only) std::fill_n(o, m * p.d_v, T(0));
    const uint32_t threshold = dropout_threshold(p.dropout);
    const T inv_keep = T(1) / (T(1) - T(p.dropout));

    // lo and hi are non-decreasing in i, so the block's keys are [lo of the first row, hi of the
    // last row]; rows that see nothing lie at either end and are handled per row.
    const int64_t k_begin = lo[0], k_end = hi[m - 1] + 1;
    const FlashMaskCols fm(p, bi, hq);
    for (int64_t j0 = k_begin; j0 < k_end; j0 += kBlockN) {
      const int64_t n = std::min(kBlockN, k_end - j0);
      // FlashMask: tiles masked for all their rows are skipped; partial ones test elements.
      const int cls = fm.classify(i0, m, j0, n);
      if (cls == 0) continue;
      if (cls == 2) fm.fill(i0, m, j0, n, w.fm.data());
      transpose_tile(k + j0 * p.k_st.seq, p.k_st.seq, n, p.d, w.kt.data());
      gemm<T, false>(m, n, p.d, q, p.q_st.seq, 1, w.kt.data(), kBlockN, w.s.data(), kBlockN);
      tile_columns(m, j0, n, lo, hi, w.ca.data(), w.cb.data());
      softmax_tile_fwd<T>(m, n, w.ca.data(), w.cb.data(), cls == 2 ? w.fm.data() : nullptr, scale,
                          w.s.data(), w.row_max.data(), w.row_sum.data(), stats_only ? nullptr : o,
                          p.d_v);
      if (stats_only) continue;
      if (p.dropout > 0.0f) {
        // The softmax sum above uses the undropped probabilities (lse is dropout-free); only
        // the product with V sees the dropped, rescaled ones.
        for (int64_t r = 0; r < m; ++r) {
          T* s = w.s.data() + r * kBlockN;
          T* z = w.z.data() + r * kBlockN;
          dropout_row(p, threshold, inv_keep, bi, hq, i0 + r, j0 + w.ca[r], j0 + w.cb[r], j0, z,
                      w.draws.data());
          for (int64_t j = w.ca[r]; j < w.cb[r]; ++j) s[j] *= z[j];
        }
      }
      gemm<T, true>(m, p.d_v, n, w.s.data(), kBlockN, 1, v + j0 * p.v_st.seq, p.v_st.seq, o,
                    p.d_v);
    }
    for (int64_t r = 0; r < m; ++r) {
      // A row with no visible key has sum 0: lse = -inf, output 0 (never 0/0).
      w.row_lse[r] = w.row_sum[r] > T(0) ? w.row_max[r] + std::log(w.row_sum[r]) : neg_inf<T>();
    }
  }

  if (stats_only) {
    for (int64_t r = 0; r < m; ++r) lse_stats[p.lse_index(bi, hq, i0 + r)] = w.row_lse[r];
    return;
  }
  T* out = head_rows<T>(p, p.out, p.out_st, p.cu_q, bi, hq);
  for (int64_t r = 0; r < m; ++r) {
    T* orow = out + (i0 + r) * p.out_st.seq;
    const T inv = w.row_sum[r] > T(0) ? T(1) / w.row_sum[r] : T(0);
    const T* acc = o + r * p.d_v;
    for (int64_t c = 0; c < p.d_v; ++c) orow[c] = acc[c] * inv;
    if (p.lse != nullptr) p.lse[p.lse_index(bi, hq, i0 + r)] = float(w.row_lse[r]);
  }
  if (!p.thd) {
    // Padded rows [L_q, s_q) of this block (bshd/sbhd). In thd the positions past L_q belong to
    // the next sequence and are not ours to touch.
    const int64_t pad_begin = std::max(i0, Lq), pad_end = std::min(i0 + kBlockM, p.s_q);
    for (int64_t i = pad_begin; i < pad_end; ++i) {
      std::fill_n(out + i * p.out_st.seq, p.d_v, T(0));
      if (p.lse != nullptr) p.lse[p.lse_index(bi, hq, i)] = neg_inf<float>();
    }
  }
}

// Threads for one attention pass: its work is about b*h*s_q*s_kv*(d + d_v) multiply-adds.
int attn_threads(const AttnProblem& p) {
  return threads_for(double(p.b) * p.h * p.s_q * p.s_kv * double(p.d + p.d_v));
}

// Runs fwd_block over every (bi, hq, query block); lse_stats as in fwd_block.
template <class T>
void fwd_all_blocks(const AttnProblem& p, T* lse_stats) {
  const int nt = attn_threads(p);
  std::vector<Work<T>> work(nt, Work<T>(p, /*backward=*/false));
  const int64_t nqb = ceil_div(p.s_q, kBlockM);
  const int64_t tasks = p.b * p.h * nqb;
  // Query blocks innermost: neighbouring tasks share K/V tiles in cache. Dynamic scheduling
  // balances causal/windowed blocks of unequal cost; results do not depend on the schedule.
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t qb = t % nqb, hq = (t / nqb) % p.h, bi = t / (nqb * p.h);
    fwd_block<T>(p, bi, hq, qb * kBlockM, work[thread_id()], lse_stats);
  }
}

template <class T>
void attn_fwd_impl(const AttnProblem& p) {
  fwd_all_blocks<T>(p, nullptr);
  if (p.thd) {
    // Tokens after cu_q[b] belong to no sequence: output 0, lse -inf.
    const int64_t t_end = p.cu_q[p.b];
    for (int64_t hq = 0; hq < p.h; ++hq) {
      T* out = static_cast<T*>(p.out) + hq * p.out_st.head;
      for (int64_t t = t_end; t < p.t_q; ++t) {
        std::fill_n(out + t * p.out_st.seq, p.d_v, T(0));
        if (p.lse != nullptr) p.lse[hq * p.t_q + t] = neg_inf<float>();
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Backward.

// The probabilities and score gradients of one tile: query rows [i0, i0 + m) of (bi, hq), keys
// [j0, j0 + n) whose transposed K and V tiles are in w.kt, w.vt. Leaves w.s = P*Z (dropped
// probabilities) and w.dp = dS (gradient w.r.t. the raw scores q.k), both [m, n].
template <class T>
void bwd_tile(const AttnProblem& p, int64_t bi, int64_t hq, int64_t i0, int64_t m, int64_t j0,
              int64_t n, int64_t Lq, int64_t Lk, const T* q_blk, const T* do_blk, const T* lse,
              const T* D, const uint8_t* fm_mask, Work<T>& w) {
  for (int64_t r = 0; r < m; ++r) {
    visible_range(i0 + r, Lq, Lk, p.window_left, p.window_right, p.bottom_right, &w.lo[r],
                  &w.hi[r]);
  }
  tile_columns(m, j0, n, w.lo.data(), w.hi.data(), w.ca.data(), w.cb.data());
  gemm<T, false>(m, n, p.d, q_blk, p.q_st.seq, 1, w.kt.data(), kBlockN, w.s.data(), kBlockN);
  gemm<T, false>(m, n, p.d_v, do_blk, p.grad_out_st.seq, 1, w.vt.data(), kBlockN, w.dp.data(),
                 kBlockN);
  const T* z = nullptr;
  if (p.dropout > 0.0f) {
    // The same Philox draws as the forward, so the same elements are dropped.
    const uint32_t threshold = dropout_threshold(p.dropout);
    const T inv_keep = T(1) / (T(1) - T(p.dropout));
    for (int64_t r = 0; r < m; ++r) {
      dropout_row(p, threshold, inv_keep, bi, hq, i0 + r, j0 + w.ca[r], j0 + w.cb[r], j0,
                  w.z.data() + r * kBlockN, w.draws.data());
    }
    z = w.z.data();
  }
  const int64_t row0 = p.lse_index(bi, hq, i0);  // lse/D rows of a block are contiguous
  grad_tile_bwd<T>(m, n, w.ca.data(), w.cb.data(), fm_mask, T(p.scale), lse + row0, D + row0,
                   w.s.data(), w.dp.data(), z);
}

// One (sequence bi, kv head hk, keys [kc0, kc1)) task: the dK, dV rows of those keys (written,
// zeros included), and with with_dq (then the task covers all keys of (bi, hk)) the dQ rows of
// hk's query heads, zeroed first and accumulated in place.
template <class T>
void bwd_block(const AttnProblem& p, int64_t bi, int64_t hk, int64_t kc0, int64_t kc1,
               bool with_dq, const T* lse, const T* D, Work<T>& w) {
  const int64_t Lq = seq_len(p.cu_q, bi, p.s_q);
  const int64_t Lk = seq_len(p.cu_kv, bi, p.s_kv);
  const int64_t group = p.h / p.h_kv;
  kc1 = std::min(kc1, Lk);

  const T* k = head_rows<const T>(p, p.k, p.k_st, p.cu_kv, bi, hk);
  const T* v = head_rows<const T>(p, p.v, p.v_st, p.cu_kv, bi, hk);
  T* dk = head_rows<T>(p, p.grad_k, p.grad_k_st, p.cu_kv, bi, hk);
  T* dv = head_rows<T>(p, p.grad_v, p.grad_v_st, p.cu_kv, bi, hk);
  if (with_dq) {
    for (int64_t hq = hk * group; hq < (hk + 1) * group; ++hq) {
      zero_rows(head_rows<T>(p, p.grad_q, p.grad_q_st, p.cu_q, bi, hq), p.grad_q_st.seq, Lq, p.d);
    }
  }

  for (int64_t j0 = kc0; j0 < kc1; j0 += kBlockN) {
    const int64_t n = std::min(kBlockN, kc1 - j0);
    transpose_tile(k + j0 * p.k_st.seq, p.k_st.seq, n, p.d, w.kt.data());
    transpose_tile(v + j0 * p.v_st.seq, p.v_st.seq, n, p.d_v, w.vt.data());
    std::fill_n(w.dk.data(), n * p.d, T(0));
    std::fill_n(w.dv.data(), n * p.d_v, T(0));

    for (int64_t hq = hk * group; hq < (hk + 1) * group; ++hq) {
      const FlashMaskCols fm(p, bi, hq);
      const T* q = head_rows<const T>(p, p.q, p.q_st, p.cu_q, bi, hq);
      const T* dout = head_rows<const T>(p, p.grad_out, p.grad_out_st, p.cu_q, bi, hq);
      T* dq = head_rows<T>(p, p.grad_q, p.grad_q_st, p.cu_q, bi, hq);
      for (int64_t i0 = 0; i0 < Lq; i0 += kBlockM) {
        const int64_t m = std::min(kBlockM, Lq - i0);
        int64_t lo_first, hi_first, lo_last, hi_last;
        visible_range(i0, Lq, Lk, p.window_left, p.window_right, p.bottom_right, &lo_first,
                      &hi_first);
        // Visible ranges move right with i: once a block starts past the tile, all later do.
        if (lo_first > j0 + n - 1) break;
        visible_range(i0 + m - 1, Lq, Lk, p.window_left, p.window_right, p.bottom_right, &lo_last,
                      &hi_last);
        if (hi_last < j0) continue;
        const int cls = fm.classify(i0, m, j0, n);
        if (cls == 0) continue;
        if (cls == 2) fm.fill(i0, m, j0, n, w.fm.data());
        const T* q_blk = q + i0 * p.q_st.seq;
        const T* do_blk = dout + i0 * p.grad_out_st.seq;
        bwd_tile(p, bi, hq, i0, m, j0, n, Lq, Lk, q_blk, do_blk, lse, D,
                 cls == 2 ? w.fm.data() : nullptr, w);
        // dV[n, d_v] += (P*Z)^T dO ; dK[n, d] += dS^T Q ; dQ[m, d] += dS K
        gemm<T, true>(n, p.d_v, m, w.s.data(), 1, kBlockN, do_blk, p.grad_out_st.seq,
                      w.dv.data(), p.d_v);
        gemm<T, true>(n, p.d, m, w.dp.data(), 1, kBlockN, q_blk, p.q_st.seq, w.dk.data(), p.d);
        if (with_dq) {
          gemm<T, true>(m, p.d, n, w.dp.data(), kBlockN, 1, k + j0 * p.k_st.seq, p.k_st.seq,
                        dq + i0 * p.grad_q_st.seq, p.grad_q_st.seq);
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      std::copy_n(w.dk.data() + j * p.d, p.d, dk + (j0 + j) * p.grad_k_st.seq);
      std::copy_n(w.dv.data() + j * p.d_v, p.d_v, dv + (j0 + j) * p.grad_v_st.seq);
    }
  }
}

// dQ rows [i0, i0 + m) of (bi, hq) (the two-pass backward, see kMinBwdTasks): written, zeros
// included for rows with no visible key.
template <class T>
void dq_block(const AttnProblem& p, int64_t bi, int64_t hq, int64_t i0, const T* lse, const T* D,
              Work<T>& w) {
  const int64_t Lq = seq_len(p.cu_q, bi, p.s_q);
  const int64_t Lk = seq_len(p.cu_kv, bi, p.s_kv);
  const int64_t m = std::min(kBlockM, Lq - i0);
  if (m <= 0) return;
  const int64_t hk = hq / (p.h / p.h_kv);
  const T* k = head_rows<const T>(p, p.k, p.k_st, p.cu_kv, bi, hk);
  const T* v = head_rows<const T>(p, p.v, p.v_st, p.cu_kv, bi, hk);
  const T* q_blk = head_rows<const T>(p, p.q, p.q_st, p.cu_q, bi, hq) + i0 * p.q_st.seq;
  const T* do_blk =
      head_rows<const T>(p, p.grad_out, p.grad_out_st, p.cu_q, bi, hq) + i0 * p.grad_out_st.seq;
  T* dq = head_rows<T>(p, p.grad_q, p.grad_q_st, p.cu_q, bi, hq) + i0 * p.grad_q_st.seq;
  zero_rows(dq, p.grad_q_st.seq, m, p.d);

  int64_t lo_first, hi_first, lo_last, hi_last;
  visible_range(i0, Lq, Lk, p.window_left, p.window_right, p.bottom_right, &lo_first, &hi_first);
  visible_range(i0 + m - 1, Lq, Lk, p.window_left, p.window_right, p.bottom_right, &lo_last,
                &hi_last);
  const int64_t k_begin = lo_first, k_end = hi_last + 1;  // as in fwd_block
  const FlashMaskCols fm(p, bi, hq);
  for (int64_t j0 = k_begin; j0 < k_end; j0 += kBlockN) {
    const int64_t n = std::min(kBlockN, k_end - j0);
    const int cls = fm.classify(i0, m, j0, n);
    if (cls == 0) continue;
    if (cls == 2) fm.fill(i0, m, j0, n, w.fm.data());
    transpose_tile(k + j0 * p.k_st.seq, p.k_st.seq, n, p.d, w.kt.data());
    transpose_tile(v + j0 * p.v_st.seq, p.v_st.seq, n, p.d_v, w.vt.data());
    bwd_tile(p, bi, hq, i0, m, j0, n, Lq, Lk, q_blk, do_blk, lse, D,
             cls == 2 ? w.fm.data() : nullptr, w);
    gemm<T, true>(m, p.d, n, w.dp.data(), kBlockN, 1, k + j0 * p.k_st.seq, p.k_st.seq, dq,
                  p.grad_q_st.seq);
  }
}

template <class T>
void attn_bwd_impl(const AttnProblem& p) {
  const int nt = attn_threads(p);
  const int64_t lse_space = p.thd ? p.h * p.t_q : p.b * p.h * p.s_q;

  // Row statistics in T. float32 uses the forward's lse as is; float64 recomputes it in double,
  // because the float32 lse would cap the gradients at float precision (~1e-7 relative).
  std::vector<T> lse_buf;
  const T* lse;
  if constexpr (std::is_same<T, float>::value) {
    if (p.lse != nullptr) {
      lse = p.lse;
    } else {
      lse_buf.assign(lse_space, neg_inf<T>());
      fwd_all_blocks<T>(p, lse_buf.data());
      lse = lse_buf.data();
    }
  } else {
    lse_buf.assign(lse_space, neg_inf<T>());
    fwd_all_blocks<T>(p, lse_buf.data());
    lse = lse_buf.data();
  }

  // D_i = dO_i . O_i (equals sum_j P_ij Z_ij dP_ij, the softmax-backward row term, with dropout
  // too, because O already carries the dropout).
  std::vector<T> D(lse_space, T(0));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t t = 0; t < p.b * p.h; ++t) {
    const int64_t bi = t / p.h, hq = t % p.h;
    const int64_t Lq = seq_len(p.cu_q, bi, p.s_q);
    const T* o = head_rows<const T>(p, p.out, p.out_st, p.cu_q, bi, hq);
    const T* dout = head_rows<const T>(p, p.grad_out, p.grad_out_st, p.cu_q, bi, hq);
    for (int64_t i = 0; i < Lq; ++i) {
      const T* orow = o + i * p.out_st.seq;
      const T* drow = dout + i * p.grad_out_st.seq;
      T acc = T(0);
      for (int64_t c = 0; c < p.d_v; ++c) acc += orow[c] * drow[c];
      D[p.lse_index(bi, hq, i)] = acc;
    }
  }

  std::vector<Work<T>> work(nt, Work<T>(p, /*backward=*/true));
  const int64_t pairs = p.b * p.h_kv;
  if (pairs >= kMinBwdTasks) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < pairs; ++t) {
      bwd_block<T>(p, t / p.h_kv, t % p.h_kv, 0, p.s_kv, /*with_dq=*/true, lse, D.data(),
                   work[thread_id()]);
    }
  } else {
    const int64_t nkb = ceil_div(p.s_kv, kBlockN);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < pairs * nkb; ++t) {
      const int64_t kb = t % nkb, hk = (t / nkb) % p.h_kv, bi = t / (nkb * p.h_kv);
      bwd_block<T>(p, bi, hk, kb * kBlockN, (kb + 1) * kBlockN, /*with_dq=*/false, lse, D.data(),
                   work[thread_id()]);
    }
    const int64_t nqb = ceil_div(p.s_q, kBlockM);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < p.b * p.h * nqb; ++t) {
      const int64_t qb = t % nqb, hq = (t / nqb) % p.h, bi = t / (nqb * p.h);
      dq_block<T>(p, bi, hq, qb * kBlockM, lse, D.data(), work[thread_id()]);
    }
  }

  // Positions past the sequence lengths get zero gradients.
  if (p.thd) {
    const int64_t tq_end = p.cu_q[p.b], tk_end = p.cu_kv[p.b];
    for (int64_t hq = 0; hq < p.h; ++hq) {
      zero_rows(static_cast<T*>(p.grad_q) + hq * p.grad_q_st.head + tq_end * p.grad_q_st.seq,
                p.grad_q_st.seq, p.t_q - tq_end, p.d);
    }
    for (int64_t hk = 0; hk < p.h_kv; ++hk) {
      zero_rows(static_cast<T*>(p.grad_k) + hk * p.grad_k_st.head + tk_end * p.grad_k_st.seq,
                p.grad_k_st.seq, p.t_kv - tk_end, p.d);
      zero_rows(static_cast<T*>(p.grad_v) + hk * p.grad_v_st.head + tk_end * p.grad_v_st.seq,
                p.grad_v_st.seq, p.t_kv - tk_end, p.d_v);
    }
  } else {
    for (int64_t bi = 0; bi < p.b; ++bi) {
      const int64_t Lq = seq_len(p.cu_q, bi, p.s_q), Lk = seq_len(p.cu_kv, bi, p.s_kv);
      for (int64_t hq = 0; hq < p.h; ++hq) {
        zero_rows(head_rows<T>(p, p.grad_q, p.grad_q_st, p.cu_q, bi, hq) + Lq * p.grad_q_st.seq,
                  p.grad_q_st.seq, p.s_q - Lq, p.d);
      }
      for (int64_t hk = 0; hk < p.h_kv; ++hk) {
        zero_rows(head_rows<T>(p, p.grad_k, p.grad_k_st, p.cu_kv, bi, hk) + Lk * p.grad_k_st.seq,
                  p.grad_k_st.seq, p.s_kv - Lk, p.d);
        zero_rows(head_rows<T>(p, p.grad_v, p.grad_v_st, p.cu_kv, bi, hk) + Lk * p.grad_v_st.seq,
                  p.grad_v_st.seq, p.s_kv - Lk, p.d_v);
      }
    }
  }
}

}  // namespace

void attn_fwd(const AttnProblem& p) {
  switch (p.dtype) {
    case PTE_FLOAT32:
      attn_fwd_impl<float>(p);
      return;
    case PTE_FLOAT64:
      attn_fwd_impl<double>(p);
      return;
    default:
      PTE_INTERNAL("cpu::attn_fwd: dtype=", int(p.dtype),
                   ": the CPU kernels take float32 or float64 (the caller converts float16 and "
                   "bfloat16 to float32)");
  }
}

void attn_bwd(const AttnProblem& p) {
  switch (p.dtype) {
    case PTE_FLOAT32:
      attn_bwd_impl<float>(p);
      return;
    case PTE_FLOAT64:
      attn_bwd_impl<double>(p);
      return;
    default:
      PTE_INTERNAL("cpu::attn_bwd: dtype=", int(p.dtype),
                   ": the CPU kernels take float32 or float64 (the caller converts float16 and "
                   "bfloat16 to float32)");
  }
}

}  // namespace cpu
}  // namespace pte
