// What every CUDA decode kernel (SPEC §10) reads: the argument struct, the clamped lengths and
// the cache addressing (contiguous or paged), and the launch plan the host picks. The kernels
// live in decode_simt.cuh (CUDA cores), decode_mma.cuh (tensor cores) and decode_combine.cuh
// (the lse merge of split-KV partial outputs).
//
// No value is read on the host: lengths come from cache_seqlens on the device, and the split of
// a sequence's visible key range over the fixed number of blocks happens in the kernels, so a
// CUDA graph replays with new lengths. Lengths are clamped to the capacity and keys on
// out-of-range pages are masked, so bad values cannot read or write out of bounds.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "core/decode_problem.h"
#include "cuda/common.cuh"

namespace pte {
namespace cuda {
namespace decode {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Largest split count the combine kernel takes (its per-warp weight buffer); the core refuses
// more (api_decode.cc kMaxSplits).
constexpr int kMaxCombineSplits = 256;

// The attention kernel a launch runs. kSimt: CUDA-core dot products, per-lane row state
// (decode_simt.cuh). kMma: mma.sync tensor-core tiles with K/V streamed through shared memory
// (decode_mma.cuh).
enum class Kernel { kSimt, kMma };

// What the host decided for one call: the kernel and the rows (query head of a GQA group x query
// position) one block holds: 1, 2, 4 or 8 for kSimt, 16 or 32 (one or two m16 tiles) for kMma;
// for kMma the K/V pipeline (deep: as many stages as an sm_90 block's shared memory takes); and
// whether the combine is launched as a programmatic dependent of the attention kernel (sm_90).
struct Plan {
  Kernel kernel;
  int tile_rows;
  bool deep = false;
  bool pdl = false;
};

// Everything the kernels read; element strides, head dim contiguous.
template <typename T>
struct Args {
  const T* q;
  T* k_cache;
  T* v_cache;
  const T* k_new;
  const T* v_new;
  T* out;
  float* lse;  // [b, h, s_q] or null
  Strides q_st, kc_st, vc_st, kn_st, vn_st, out_st;
  const int32_t* cache_seqlens;
  const int32_t* block_table;  // null: contiguous cache
  int b, s_q, h, h_kv, group, rows, row_chunks, d, d_v;
  int capacity, page_size, num_pages, pages_per_seq;
  int appended;      // s_q with k_new, else 0
  int window_left;   // -1 = unbounded
  int num_splits;
  float scale_log2;  // softmax_scale * log2(e)
  float* part_o;     // [num_splits, b*h*s_q, d_v] (num_splits > 1)
  float* part_lse;   // [num_splits, b*h*s_q]
  bool fast_copy;    // the tensor-core kernel's fast tile copies (PTE_DECODE_FASTCOPY=0: off)
};

// Programmatic dependent launch (sm_90+). The attention kernel lets the combine kernel (launched
// with cudaLaunchAttributeProgrammaticStreamSerialization) start while its own blocks still run,
// so the second launch's latency and the combine's prologue hide behind the attention; the
// combine then waits, before it reads a partial result, for the attention grid to complete and
// its memory to be visible. Both are no-ops when the launch carried no such attribute, and are
// compiled out for sm_80 (where the host never asks for it: decode_api.cu).
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait_primary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Cached length of sequence bi before the append (clamped to [0, capacity]) and its key count
// after the append (clamped to the capacity).
template <typename T>
__device__ __forceinline__ void lengths(const Args<T>& a, int bi, int* old, int* n) {
  int len = a.cache_seqlens[bi];
  len = len < 0 ? 0 : (len > a.capacity ? a.capacity : len);
  *old = len;
  *n = len + a.appended > a.capacity ? a.capacity : len + a.appended;
}

// Element offset of (position pos, kv head hk) of sequence bi in a cache with strides st, or -1
// when pos lives on a page index outside [0, num_pages).
template <typename T>
__device__ __forceinline__ int64_t cache_offset(const Args<T>& a, const Strides& st, int bi,
                                                int pos, int hk) {
  if (a.block_table == nullptr) return bi * st.batch + int64_t(pos) * st.seq + hk * st.head;
  const int page = a.block_table[int64_t(bi) * a.pages_per_seq + pos / a.page_size];
  if (page < 0 || page >= a.num_pages) return -1;
  return int64_t(page) * st.batch + int64_t(pos % a.page_size) * st.seq + hk * st.head;
}

// The tensor-core kernel's tile copy layout (decode_mma.cuh): thread (warp, lane) copies 16-byte
// chunk lane % kChunks of tile rows p * kRowsPerPass + warp * kRpw + lane / kChunks, pass p <
// BN / kRowsPerPass (kRpw = 32 / kChunks rows per warp and pass). A row's bad-page flag (the row
// lies on a page outside [0, num_pages): zero-filled and masked) is bit p * kRpw + q of its
// warp's word, q = lane / kChunks of the lanes that copy it.
template <int kRpw, int kChunks>
struct CopyLayout {
  static constexpr int kRowsPerPass = 4 * kRpw;  // 4 warps
  // Where tile row kl's flag is: the warp's word and the bit in it.
  __host__ __device__ static void bad_bit_of_row(int kl, int* warp, int* bit) {
    const int p = kl / kRowsPerPass, rem = kl % kRowsPerPass;
    *warp = rem / kRpw;
    *bit = p * kRpw + rem % kRpw;
  }
  // The flags of pass p's rows in a warp, from a ballot over its lanes of "my row is bad" (the
  // kChunks lanes of a row agree).
  __host__ __device__ static uint32_t pass_bad_bits(uint32_t ballot, int p) {
    uint32_t bits = 0;
    for (int q = 0; q < kRpw; ++q) bits |= ((ballot >> (q * kChunks)) & 1u) << (p * kRpw + q);
    return bits;
  }
};

// A thread's row through a paged cache as the passes move it by `step` <= page_size rows: the
// page slot (index into the sequence's block_table row) and the row in the page, one division at
// the start instead of one per pass.
struct PageWalk {
  int slot, row;
  __host__ __device__ PageWalk(int pos, int page_size)
      : slot(pos / page_size), row(pos % page_size) {}
  __host__ __device__ void advance(int step, int page_size) {
    row += step;
    if (row >= page_size) {
      row -= page_size;
      ++slot;
    }
  }
};

// The block's share of its rows' visible keys. The rows of a block are m0 .. m0 + nrows - 1 of
// the (query position i, group member) pairs m = i * group + g of one kv head, sorted by i; query
// i sees keys j <= n - s_q + i (and j >= n - s_q + i - window_left with a window). [lo, hi) is
// the union over the block's rows; each of the num_splits blocks of the same rows takes an equal
// consecutive part [s_lo, s_hi) of it (possibly empty).
template <typename T>
__device__ __forceinline__ void split_range(const Args<T>& a, int n, int i_first, int i_last,
                                            int split, int* s_lo, int* s_hi) {
  const int hi = min(n, n - a.s_q + i_last + 1);
  const int lo = a.window_left < 0 ? 0 : max(0, n - a.s_q + i_first - a.window_left);
  const int total = max(0, hi - lo);
  const int per = (total + a.num_splits - 1) / a.num_splits;
  *s_lo = lo + split * per;
  *s_hi = min(hi, *s_lo + per);
}

// In-place append, done by the first block of each (kv head, sequence): the new rows of k_new /
// v_new are written to the cache at positions old .. old + appended - 1. Positions past the
// capacity or on out-of-range pages are skipped (never written out of bounds). No block of the
// launch reads those cache rows (keys >= old are read from k_new / v_new), so there is no
// ordering to respect.
template <typename T, int D>
__device__ __forceinline__ void append_rows(const Args<T>& a, int bi, int hk, int old) {
  constexpr int kVecs = D / 8;
  for (int idx = threadIdx.x; idx < a.appended * kVecs; idx += blockDim.x) {
    const int i = idx / kVecs, c = idx % kVecs;
    const int pos = old + i;
    if (pos >= a.capacity) continue;
    const int64_t ko = cache_offset(a, a.kc_st, bi, pos, hk);
    const int64_t vo = cache_offset(a, a.vc_st, bi, pos, hk);
    if (ko < 0 || vo < 0) continue;
    const T* kn = a.k_new + bi * a.kn_st.batch + int64_t(i) * a.kn_st.seq + hk * a.kn_st.head;
    const T* vn = a.v_new + bi * a.vn_st.batch + int64_t(i) * a.vn_st.seq + hk * a.vn_st.head;
    reinterpret_cast<uint4*>(a.k_cache + ko)[c] = reinterpret_cast<const uint4*>(kn)[c];
    reinterpret_cast<uint4*>(a.v_cache + vo)[c] = reinterpret_cast<const uint4*>(vn)[c];
  }
}

}  // namespace decode
}  // namespace cuda
}  // namespace pte
