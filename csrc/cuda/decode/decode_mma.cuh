// Tensor-core decode kernel (sm_80+, mma.sync m16n8k16 with fp32 accumulation; the default,
// PTE_DECODE_KERNEL=mma).
//
// One block of 4 warps per (row chunk, split, kv head, sequence), as the CUDA-core kernel. The
// rows of a chunk, m = i * group + g (query position i, query head hk * group + g) of one kv head,
// are the M dimension of the tiles: kRows = 16 * MT of them, padded with zero rows of q. The
// split's keys stream through shared memory in tiles of BN = 64 keys (a kStages-deep cp.async
// pipeline, one barrier per tile; Deep: as many stages as an sm_90 block's shared memory holds,
// see MmaConfig); warp w owns keys [16 w, 16 w + 16) of every tile:
//   S = Q K^T     [kRows x 16]  (MT x 2 m16n8 accumulators, Q and K from shared memory),
//   online softmax on S in registers (cuda/attn/softmax.h, log2 domain),
//   O += P V      [kRows x D]   (P is exactly one k16 A operand).
// So each warp keeps its own running max / sum / O for all rows over a quarter of the keys, and
// the four are merged through shared memory at the end (reusing the pipeline's buffers). The
// arithmetic per key is the same for 1 row or 16: the kernel stays bandwidth-bound for any GQA
// group x s_q up to 16 rows per block (32 with MT = 2).
//
// Key rows of a tile come from the cache (contiguous, or paged: the page is looked up per key
// row, so any page size from 1 up works and a tile may straddle pages), or from k_new / v_new
// for the appended positions (>= cache_seqlens[b]; the cache rows are written by this launch).
// Each of 16 lanes per warp resolves the source of one of the rows that warp copies (one
// block_table load and one division per lane and tile) and hands it to the copying lanes by
// shuffle. Rows past the split's end and rows on out-of-range pages are zero-filled by cp.async
// (nothing is read); the latter are also recorded in a per-tile bit set and masked, as in the
// CUDA-core kernel.
//
// Masking: key j is visible to row i iff row_lo(i) <= j < row_hi(i), the intersection of the
// split's range with the bottom-right causal bound and the left window. A warp's 16 keys that
// every row of the block sees (the common case) skip the per-element test.
#pragma once

#include "cuda/attn/sm80/mma.h"
#include "cuda/attn/sm80/tile.h"
#include "cuda/attn/softmax.h"
#include "cuda/decode/decode_args.cuh"

namespace pte {
namespace cuda {
namespace decode {

// Shared memory an sm_90 block may take (227 KiB opt-in), and half an sm_90 SM less the runtime's
// 1 KiB per block (two resident blocks).
constexpr int kSm90SmemPerBlock = 227 * 1024;
constexpr int kSm90SmemHalfSm = 228 * 1024 / 2 - 1024;
constexpr int kMaxDeepStages = 8;

template <int D_, int MT_, bool Deep_ = false>
struct MmaConfig {
  static constexpr int D = D_, MT = MT_;
  static constexpr bool Deep = Deep_;
  static constexpr int kRows = 16 * MT;    // rows per block (M)
  static constexpr int kWarpKeys = 16;     // keys per warp and tile: one k16 step of P V
  static constexpr int BN = kWarps * kWarpKeys;
  static constexpr int S = flash::TileGeom<D>::kStride;  // smem row stride, elements (D + 8)
  static constexpr int kStageBytes = 2 * BN * S * 2 + kWarps * 4;  // K + V (2-byte T) + bad bits
  static constexpr int kFixedBytes = 16 * MT * S * 2 + 2 * kWarps * 16 * MT * 4;  // q, merge stats
  // Pipeline depth. Shallow (fits sm_80's 163 KB): 4 x 18 KB (d 64), 3 x 34 KB (d 128, two
  // blocks per sm_90 SM), 2 x 66 KB (d 256). Deep (sm_90 only): the stages that fill the block's
  // budget, so kStages - 1 tiles are in flight while one is computed: d 128 takes a whole SM
  // (6 x 34 KB, one block: 5 tiles = 174 KB in flight per SM against 2 x 2 x 34 KB shallow), d 64
  // half of one (5-6 x 18 KB, two blocks), d 256 three stages (two tiles in flight, not one).
  static constexpr int kDeepBudget = D <= 64 ? kSm90SmemHalfSm : kSm90SmemPerBlock;
  static constexpr int kDeepStages = (kDeepBudget - kFixedBytes) / kStageBytes < kMaxDeepStages
                                         ? (kDeepBudget - kFixedBytes) / kStageBytes
                                         : kMaxDeepStages;
  static constexpr int kStages = Deep ? kDeepStages : (D <= 64 ? 4 : (D <= 128 ? 3 : 2));
  static_assert(kStages >= 2, "pipeline depth");
  static_assert(!Deep || kFixedBytes + kStages * kStageBytes <= kDeepBudget, "deep budget");
  static constexpr int kChunks = D / 8;                       // 16-byte chunks per key row
  static constexpr int kRowsPerWarpPass = 32 / kChunks;       // key rows a warp copies per pass
  static constexpr int kRowsPerPass = kWarps * kRowsPerWarpPass;
  static constexpr int kPasses = BN / kRowsPerPass;
  static constexpr int kResolvers = kPasses * kRowsPerWarpPass;  // rows a warp copies per tile
  static constexpr int kMergeStride = D + 8;  // floats per row of the merge buffer (no conflicts)
  static_assert(D % 16 == 0 && kChunks <= 32 && 32 % kChunks == 0, "head dim");
  static_assert(BN % kRowsPerPass == 0 && kResolvers <= 32, "tile copy layout");

  static constexpr int q_elems() { return kRows * S; }
  static constexpr int kv_elems() { return kStages * BN * S; }  // one of K, V
  template <typename T>
  static constexpr int smem_bytes() {
    return (q_elems() + 2 * kv_elems()) * int(sizeof(T)) + kStages * kWarps * 4 +
           2 * kWarps * kRows * 4;
  }
  // The merge buffer [kWarps][kRows][kMergeStride] floats reuses the K and V stages.
  template <typename T>
  static constexpr bool merge_fits() {
    return kWarps * kRows * kMergeStride * 4 <= 2 * kv_elems() * int(sizeof(T));
  }
};

// Source of one key row of a tile, as resolved by the lane that looks it up.
constexpr int kSrcNone = -1;  // nothing to read: zero-filled (past the split, or a bad page)
constexpr int kSrcNew = -2;   // row `idx` of k_new / v_new
// >= 0: page (paged) or sequence (contiguous) `src`, row `idx` within it.

template <typename T, int D, int MT, bool Deep>
__global__ void __launch_bounds__(kThreads) mma_kernel(Args<T> a) {
  using Cfg = MmaConfig<D, MT, Deep>;
  constexpr int S = Cfg::S, BN = Cfg::BN, kRows = Cfg::kRows, kStages = Cfg::kStages;
  constexpr int kChunks = Cfg::kChunks, kRpw = Cfg::kRowsPerWarpPass;
  constexpr int kRowsPerPass = Cfg::kRowsPerPass, kPasses = Cfg::kPasses;
  constexpr int NO = D / 8;  // n8 tiles of the output
  constexpr int MS = Cfg::kMergeStride;
  constexpr bool kPagedFast = MT == 1 && D <= 128;
  using Layout = CopyLayout<kRpw, kChunks>;
  static_assert(Layout::kRowsPerPass == kRowsPerPass && kWarps == 4, "tile copy layout");
  static_assert(Cfg::template merge_fits<T>(), "merge buffer must fit in the K/V stages");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [kRows][S]
  T* sK = sQ + Cfg::q_elems();              // [kStages][BN][S]
  T* sV = sK + Cfg::kv_elems();             // [kStages][BN][S]
  uint32_t* s_bad = reinterpret_cast<uint32_t*>(sV + Cfg::kv_elems());  // [kStages][kWarps]
  float* s_m = reinterpret_cast<float*>(s_bad + kStages * kWarps);        // [kWarps][kRows]
  float* s_l = s_m + kWarps * kRows;                                      // [kWarps][kRows]
  float* s_o = reinterpret_cast<float*>(sK);  // [kWarps][kRows][MS], after the key loop

  pdl_launch_dependents();  // the combine (if any) may be scheduled; it waits for this grid
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int chunk = blockIdx.x % a.row_chunks;
  const int split = blockIdx.x / a.row_chunks;
  const int hk = blockIdx.y, bi = blockIdx.z;
  const int m0 = chunk * kRows;
  const int nrows = min(kRows, a.rows - m0);  // >= 1: chunk < ceil(rows / kRows)
  int old, n;
  lengths(a, bi, &old, &n);
  const int i_first = m0 / a.group, i_last = (m0 + nrows - 1) / a.group;
  int s_lo, s_hi;
  split_range(a, n, i_first, i_last, split, &s_lo, &s_hi);
  const int n_tiles = s_hi > s_lo ? (s_hi - s_lo + BN - 1) / BN : 0;
  const int base_last = n - a.s_q;  // query i sees keys j <= base_last + i
  const bool windowed = a.window_left >= 0;
  // Keys every row of the block sees (the first row has the lowest upper bound, the last row the
  // highest lower bound).
  const int full_lo = windowed ? max(s_lo, base_last + i_last - a.window_left) : s_lo;
  const int full_hi = min(s_hi, base_last + i_first + 1);

  // Visible range of this thread's accumulator rows g and g + 8 of each m-tile; padded rows
  // repeat the last real row (their results are never stored).
  int row_lo[MT][2], row_hi[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int rr = min(mt * 16 + r * 8 + g, nrows - 1);
      const int last = base_last + (m0 + rr) / a.group;
      row_lo[mt][r] = windowed ? max(s_lo, last - a.window_left) : s_lo;
      row_hi[mt][r] = min(s_hi, last + 1);
    }

  // q rows of the chunk (zero rows past nrows): part of the first cp.async group.
  for (int idx = tid; idx < kRows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, ch = idx % kChunks;
    const bool ok = r < nrows;
    const T* src = a.q;
    if (ok) {
      const int m = m0 + r;
      const int qi = m / a.group, qh = hk * a.group + m % a.group;
      src = a.q + bi * a.q_st.batch + int64_t(qi) * a.q_st.seq + int64_t(qh) * a.q_st.head +
            ch * 8;
    }
    flash::cp_async_16(flash::smem_addr(sQ + r * S + ch * 8), src, ok);
  }

  const int64_t kc_head = int64_t(hk) * a.kc_st.head, vc_head = int64_t(hk) * a.vc_st.head;
  const T* kn_row0 = a.k_new + (a.k_new ? bi * a.kn_st.batch + hk * a.kn_st.head : 0);
  const T* vn_row0 = a.v_new + (a.v_new ? bi * a.vn_st.batch + hk * a.vn_st.head : 0);

  // Issue the copies of the tile of keys [t0, t0 + BN) into `stage`. Thread tid copies chunk
  // tid % kChunks of tile rows p * kRowsPerPass + tid / kChunks (p < kPasses), so warp w copies
  // rows p * kRowsPerPass + w * kRpw + q (q < kRpw, lanes q * kChunks ...). Lane L = p * kRpw + q
  // (L < kResolvers) of warp w resolves that row's source once and the copying lanes read it by
  // shuffle; its bad-page flag is bit L of s_bad[stage][w].
  // Fast paths, for a tile wholly inside the split and below the appended rows (every tile of a
  // long cache but the last): all its rows are cache rows, so no lane resolves sources for the
  // others and nothing is shuffled (the resolving path below costs ~35 instructions per copy,
  // about 60 % of the tile loop's instructions with both paths in one). Thread (warp, lane)
  // copies chunk `ch` of tile rows row0 + p * kRowsPerPass, as the resolving path does.
  //  * Contiguous cache: rows t0 .. t0 + BN - 1 of sequence bi, a fixed base plus t0 rows; one
  //    64-bit add per copy.
  //  * Paged, page_size >= kRowsPerPass (kPagedFast): the thread follows its row through the pages (one
  //    division per tile, then a compare per pass, as a pass moves kRowsPerPass <= page_size
  //    rows) and reads its page per pass from the block table (the same entry for most lanes).
  const int ch = lane % kChunks;
  // (PTE_DECODE_FASTCOPY=0: no tile qualifies.)
  const int fast_end = !a.fast_copy ? -1 : (a.k_new != nullptr ? min(s_hi, old) : s_hi);
  const bool contiguous = a.block_table == nullptr;
  // (Not with MT = 2 or D = 256: their registers are near 255 already, and the unrolled passes'
  // pages and addresses spilled there (ptxas); they keep the resolving path for paged caches.)
  const bool paged_fast = kPagedFast && !contiguous && a.page_size >= kRowsPerPass;
  const int row0 = warp * kRpw + lane / kChunks;  // the thread's tile row in pass 0
  const T* k_fast = a.k_cache + int64_t(bi) * a.kc_st.batch + kc_head + int64_t(row0) * a.kc_st.seq + ch * 8;
  const T* v_fast = a.v_cache + int64_t(bi) * a.vc_st.batch + vc_head + int64_t(row0) * a.vc_st.seq + ch * 8;
  const int64_t k_pass = int64_t(kRowsPerPass) * a.kc_st.seq;
  const int64_t v_pass = int64_t(kRowsPerPass) * a.vc_st.seq;
  const int* bt_row = contiguous ? nullptr : a.block_table + int64_t(bi) * a.pages_per_seq;

  auto load_tile = [&](int stage, int t0) {
    T* k_dst = sK + (stage * BN + row0) * S + ch * 8;
    T* v_dst = sV + (stage * BN + row0) * S + ch * 8;
    if (contiguous && t0 + BN <= fast_end) {  // block-uniform
      if (lane == 0) s_bad[stage * kWarps + warp] = 0u;
      const T* kp = k_fast + int64_t(t0) * a.kc_st.seq;
      const T* vp = v_fast + int64_t(t0) * a.vc_st.seq;
#pragma unroll
      for (int p = 0; p < kPasses; ++p) {
        flash::cp_async_16(flash::smem_addr(k_dst + p * kRowsPerPass * S), kp, true);
        flash::cp_async_16(flash::smem_addr(v_dst + p * kRowsPerPass * S), vp, true);
        kp += k_pass;
        vp += v_pass;
      }
      return;
    }
    if (paged_fast && t0 + BN <= fast_end) {  // block-uniform
      // Rows below t0 + BN <= n fit the capacity, so slot < pages_per_seq. A row on an
      // out-of-range page is zero-filled and its bit set, in the resolving path's layout (bit
      // p * kRpw + q of the warp's word for pass p, row q of the warp).
      PageWalk walk(t0 + row0, a.page_size);
      uint32_t bad_bits = 0;
#pragma unroll
      for (int p = 0; p < kPasses; ++p) {
        const int page = __ldg(bt_row + walk.slot);
        const bool ok = page >= 0 && page < a.num_pages;
        const int64_t at = int64_t(ok ? page : 0) * a.kc_st.batch + int64_t(walk.row) * a.kc_st.seq;
        const int64_t at_v = int64_t(ok ? page : 0) * a.vc_st.batch + int64_t(walk.row) * a.vc_st.seq;
        flash::cp_async_16(flash::smem_addr(k_dst + p * kRowsPerPass * S),
                           a.k_cache + at + kc_head + ch * 8, ok);
        flash::cp_async_16(flash::smem_addr(v_dst + p * kRowsPerPass * S),
                           a.v_cache + at_v + vc_head + ch * 8, ok);
        bad_bits |= Layout::pass_bad_bits(__ballot_sync(0xffffffffu, !ok), p);
        walk.advance(kRowsPerPass, a.page_size);
      }
      if (lane == 0) s_bad[stage * kWarps + warp] = bad_bits;
      return;
    }
    int src = kSrcNone, idx = 0;
    bool bad = false;
    if (lane < Cfg::kResolvers) {
      const int pos = t0 + (lane / kRpw) * kRowsPerPass + warp * kRpw + lane % kRpw;
      if (pos < s_hi) {
        if (a.k_new != nullptr && pos >= old) {
          src = kSrcNew;
          idx = pos - old;
        } else if (a.block_table == nullptr) {
          src = bi;
          idx = pos;
        } else {
          const int page =
              __ldg(a.block_table + int64_t(bi) * a.pages_per_seq + pos / a.page_size);
          if (page >= 0 && page < a.num_pages) {
            src = page;
            idx = pos % a.page_size;
          } else {
            bad = true;
          }
        }
      }
    }
    const uint32_t bad_bits = __ballot_sync(0xffffffffu, bad);
    if (lane == 0) s_bad[stage * kWarps + warp] = bad_bits;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int from = p * kRpw + lane / kChunks;
      const int r_src = __shfl_sync(0xffffffffu, src, from);
      const int r_idx = __shfl_sync(0xffffffffu, idx, from);
      const T* kp = a.k_cache;  // any valid address when nothing is read
      const T* vp = a.v_cache;
      if (r_src >= 0) {
        kp = a.k_cache + int64_t(r_src) * a.kc_st.batch + int64_t(r_idx) * a.kc_st.seq + kc_head +
             ch * 8;
        vp = a.v_cache + int64_t(r_src) * a.vc_st.batch + int64_t(r_idx) * a.vc_st.seq + vc_head +
             ch * 8;
      } else if (r_src == kSrcNew) {
        kp = kn_row0 + int64_t(r_idx) * a.kn_st.seq + ch * 8;
        vp = vn_row0 + int64_t(r_idx) * a.vn_st.seq + ch * 8;
      }
      const bool ok = r_src != kSrcNone;
      flash::cp_async_16(flash::smem_addr(k_dst + p * kRowsPerPass * S), kp, ok);
      flash::cp_async_16(flash::smem_addr(v_dst + p * kRowsPerPass * S), vp, ok);
    }
  };

  float acc[MT][NO][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int no = 0; no < NO; ++no)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][no][e] = 0.f;
  flash::OnlineSoftmax<MT> sm;

  // This warp's 16 keys of the tile [t0, t0 + BN) in `stage`.
  auto compute_tile = [&](int stage, int t0) {
    const int w0 = t0 + warp * Cfg::kWarpKeys;
    if (w0 >= s_hi) return;  // past the split's end (last tile): warp-uniform
    float s[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
    const T* k_tile = sK + (stage * BN + warp * Cfg::kWarpKeys) * S;
    flash::gemm_rows_rows<MT, 2, D>(s, sQ, 0, k_tile, lane);

    uint32_t bad = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) bad |= s_bad[stage * kWarps + w];
    if (bad != 0 || w0 < full_lo || w0 + Cfg::kWarpKeys > full_hi) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int kl = warp * Cfg::kWarpKeys + nt * 8 + 2 * c + e;  // key row in the tile
          const int j = t0 + kl;
          bool on_bad_page = false;
          if (bad != 0) {  // which lane resolved row kl (load_tile's layout)
            int w_of, bit;
            Layout::bad_bit_of_row(kl, &w_of, &bit);
            on_bad_page = (s_bad[stage * kWarps + w_of] >> bit) & 1u;
          }
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int r = 0; r < 2; ++r)
              if (on_bad_page || j < row_lo[mt][r] || j >= row_hi[mt][r])
                s[mt][nt][2 * r + e] = -INFINITY;
        }
    }
    sm.update(s, acc, a.scale_log2);
    const T* v_tile = sV + (stage * BN + warp * Cfg::kWarpKeys) * S;
    flash::gemm_regs_rows<MT, 2, NO, D>(acc, s, v_tile, 0, lane);
  };

  // Pipeline: kStages - 1 tiles in flight while one is computed; group 0 also holds q.
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < n_tiles) load_tile(st, s_lo + st * BN);
    flash::cp_async_commit();
  }
  int stage = 0, stage_next = kStages - 1;
  for (int t = 0; t < n_tiles; ++t) {
    // Tile t has landed, and every warp is done with tile t - 1, whose stage the copies issued
    // now overwrite: one barrier per tile.
    flash::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (t + kStages - 1 < n_tiles) load_tile(stage_next, s_lo + (t + kStages - 1) * BN);
    flash::cp_async_commit();
    compute_tile(stage, s_lo + t * BN);
    stage = stage + 1 == kStages ? 0 : stage + 1;
    stage_next = stage_next + 1 == kStages ? 0 : stage_next + 1;
  }

  if (a.k_new != nullptr && split == 0 && chunk == 0) append_rows<T, D>(a, bi, hk, old);

  // Merge the warps: M = max_w m_w, L = sum_w 2^(m_w - M) l_w, O = sum_w 2^(m_w - M) O_w / L.
  flash::cp_async_wait<0>();
  __syncthreads();  // the K/V stages are free for the merge buffer
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float l = flash::quad_sum(sm.l[mt][r]);
      if (c == 0) {
        s_m[warp * kRows + mt * 16 + r * 8 + g] = sm.m[mt][r];
        s_l[warp * kRows + mt * 16 + r * 8 + g] = l;
      }
    }
  __syncthreads();
  // Row rr's statistics over the warps' key slices: the shared maximum (0 where no warp saw a
  // key, so that 2^(m - m_use) stays finite) and the sum rescaled to it.
  auto merge_warps = [&](int rr, float* m_use, float* l) {
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w * kRows + rr]);
    *m_use = mx == -INFINITY ? 0.f : mx;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w)
      sum += exp2f(s_m[w * kRows + rr] - *m_use) * s_l[w * kRows + rr];
    *l = sum;
  };
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int rr = mt * 16 + r * 8 + g;
      float m_use, l;
      merge_warps(rr, &m_use, &l);
      // 2^-inf = 0 for a warp that saw no key; f = 0 for a row that saw none at all.
      const float f = l > 0.f ? exp2f(sm.m[mt][r] - m_use) / l : 0.f;
      float* o_row = s_o + (warp * kRows + rr) * MS + 2 * c;
#pragma unroll
      for (int no = 0; no < NO; ++no)
        *reinterpret_cast<float2*>(o_row + no * 8) =
            make_float2(acc[mt][no][2 * r] * f, acc[mt][no][2 * r + 1] * f);
    }
  __syncthreads();

  // Store: 4 consecutive columns of one row per thread and step.
  const int rows_total = a.b * a.h * a.s_q;
  for (int idx = tid; idx < nrows * (D / 4); idx += kThreads) {
    const int rr = idx / (D / 4), col = idx % (D / 4) * 4;
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float4 v = *reinterpret_cast<const float4*>(s_o + (w * kRows + rr) * MS + col);
      o.x += v.x;
      o.y += v.y;
      o.z += v.z;
      o.w += v.w;
    }
    const int m = m0 + rr;
    const int qi = m / a.group, qh = hk * a.group + m % a.group;
    const int64_t row = (int64_t(bi) * a.h + qh) * a.s_q + qi;  // lse order [b, h, s_q]
    float lse = 0.f;
    if (col == 0) {
      float m_use, l;
      merge_warps(rr, &m_use, &l);
      lse = l > 0.f ? (m_use + log2f(l)) * kLn2 : -INFINITY;
    }
    if (a.num_splits == 1) {
      T* out = a.out + bi * a.out_st.batch + int64_t(qi) * a.out_st.seq +
               int64_t(qh) * a.out_st.head + col;
      out[0] = from_float<T>(o.x);
      out[1] = from_float<T>(o.y);
      out[2] = from_float<T>(o.z);
      out[3] = from_float<T>(o.w);
      if (col == 0 && a.lse != nullptr) a.lse[row] = lse;
    } else {
      *reinterpret_cast<float4*>(a.part_o + (int64_t(split) * rows_total + row) * D + col) = o;
      if (col == 0) a.part_lse[int64_t(split) * rows_total + row] = lse;
    }
  }
}

}  // namespace decode
}  // namespace cuda
}  // namespace pte
