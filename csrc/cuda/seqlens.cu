// mask -> cu_seqlens on the GPU (see paddle_te/seqlens.h for the forms and the verdict).
//
// Two kernels with a launch configuration that depends only on b, no device->host copy and no
// allocation, so the call is capturable in a CUDA graph:
// 1. lengths_kernel, one block per batch: each row of the mask is summarised by
//    (count of False, index of the first True). A row is right padding iff first_true == count.
//    * [b,1,1,s] / [b,1,1,s_q] + [b,1,1,s_kv]: the length is the count; valid iff right padding.
//    * full [b,1,s_q,s_kv]: valid iff every row is right padding, the rows with any False are
//      rows 0..L_q-1 and all of them have the same count L_kv. That is exactly
//      mask[i][j] == !(i < L_q && j < L_kv) with L_q = rows with any False and L_kv = columns
//      with any False, in one pass over the mask.
//    The block writes its lengths to cu[bi + 1], encoded as -(L + 1) when the batch is not right
//    padding (lengths are >= 0, so the sign carries the verdict without extra storage).
// 2. scan_kernel, one block: decodes, writes valid[0], and turns the lengths into the inclusive
//    prefix sums cu[1..b] (cu[0] = 0), chunk by chunk with a running carry (any b).
// When the verdict is 0 the lengths are still the counts of False (rows/columns as in the
// single-row forms; rows with any False and the longest row for the full form): callers must
// not use them.
#include <cub/block/block_scan.cuh>

#include "core/kernels.h"
#include "cuda/common.cuh"

namespace pte {
namespace cuda {

namespace {

constexpr int kLenThreads = 256;
constexpr int kLenWarps = kLenThreads / 32;
constexpr int kScanThreads = 1024;

struct RowStat {
  int64_t count;       // elements that are False (take part)
  int64_t first_true;  // index of the first True, n if none
};

// The summary of one row of n bytes, computed by one warp. Nonzero bytes are True.
__device__ RowStat warp_row_stat(const uint8_t* row, int64_t n) {
  const int lane = threadIdx.x % 32;
  int64_t count = 0, first = n;
  for (int64_t j = lane; j < n; j += 32) {
    if (row[j] == 0)
      ++count;
    else if (j < first)
      first = j;
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    count += __shfl_xor_sync(0xffffffffu, count, o);
    const int64_t f = __shfl_xor_sync(0xffffffffu, first, o);
    first = f < first ? f : first;
  }
  return {count, first};
}

__device__ __forceinline__ int32_t encode(int64_t len, bool ok) {
  return ok ? int32_t(len) : -int32_t(len) - 1;
}

__global__ void __launch_bounds__(kLenThreads) lengths_kernel(SeqlensProblem p) {
  const int64_t bi = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (!p.full) {
    // Warp 0: the q mask; warp 1: the kv mask (the same row in the self-attention form).
    if (warp > 1) return;
    const bool kv = warp == 1;
    const int64_t n = kv ? p.s_kv : p.s_q;
    const uint8_t* row = (kv && p.mask_kv ? p.mask_kv : p.mask) + bi * n;
    const RowStat st = warp_row_stat(row, n);
    if (lane == 0) (kv ? p.cu_kv : p.cu_q)[bi + 1] = encode(st.count, st.first_true == st.count);
    return;
  }

  // Full form: warps take rows in turn and fold them into per-warp summaries.
  __shared__ unsigned long long s_rows_any, s_last_any, s_kv_min, s_kv_max;
  __shared__ int s_bad;
  if (threadIdx.x == 0) {
    s_rows_any = 0;
    s_last_any = 0;  // (index of the last row with any False) + 1
    s_kv_min = ~0ull;
    s_kv_max = 0;
    s_bad = 0;
  }
  __syncthreads();
  const uint8_t* base = p.mask + bi * p.s_q * p.s_kv;
  int64_t rows_any = 0, last_any = 0, kv_min = INT64_MAX, kv_max = 0;
  bool bad = false;
  for (int64_t i = warp; i < p.s_q; i += kLenWarps) {
    const RowStat st = warp_row_stat(base + i * p.s_kv, p.s_kv);
    if (st.count == 0) continue;
    bad |= st.first_true != st.count;
    ++rows_any;
    last_any = i + 1;
    kv_min = st.count < kv_min ? st.count : kv_min;
    kv_max = st.count > kv_max ? st.count : kv_max;
  }
  if (lane == 0) {
    atomicAdd(&s_rows_any, (unsigned long long)rows_any);
    atomicMax(&s_last_any, (unsigned long long)last_any);
    atomicMin(&s_kv_min, (unsigned long long)kv_min);
    atomicMax(&s_kv_max, (unsigned long long)kv_max);
    if (bad) atomicOr(&s_bad, 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t lq = int64_t(s_rows_any), lk = int64_t(s_kv_max);
    // Rows with any False must be a prefix, each a right-padded row of the same length.
    const bool ok = !s_bad && int64_t(s_last_any) == lq && (lq == 0 || int64_t(s_kv_min) == lk);
    p.cu_q[bi + 1] = encode(lq, ok);
    p.cu_kv[bi + 1] = encode(lk, ok);
  }
}

__global__ void __launch_bounds__(kScanThreads) scan_kernel(int32_t* cu_q, int32_t* cu_kv,
                                                           int32_t* valid, int64_t b) {
  using Scan = cub::BlockScan<int32_t, kScanThreads>;
  __shared__ typename Scan::TempStorage tmp;
  int32_t carry_q = 0, carry_kv = 0;
  int any_bad = 0;
  for (int64_t base = 0; base < b; base += kScanThreads) {
    const int64_t idx = base + threadIdx.x;
    int32_t lq = 0, lk = 0;
    if (idx < b) {
      lq = cu_q[idx + 1];
      lk = cu_kv[idx + 1];
      if (lq < 0 || lk < 0) any_bad = 1;
      lq = lq < 0 ? -lq - 1 : lq;
      lk = lk < 0 ? -lk - 1 : lk;
    }
    int32_t total;
    Scan(tmp).InclusiveSum(lq, lq, total);
    __syncthreads();  // tmp is reused
    if (idx < b) cu_q[idx + 1] = carry_q + lq;
    carry_q += total;
    Scan(tmp).InclusiveSum(lk, lk, total);
    __syncthreads();
    if (idx < b) cu_kv[idx + 1] = carry_kv + lk;
    carry_kv += total;
  }
  any_bad = __syncthreads_or(any_bad);
  if (threadIdx.x == 0) {
    cu_q[0] = 0;
    cu_kv[0] = 0;
    *valid = any_bad ? 0 : 1;
  }
}

}  // namespace

void mask_to_cu_seqlens(const SeqlensProblem& p) {
  cudaStream_t st = static_cast<cudaStream_t>(p.stream);
  if (p.b > 0) {
    constexpr int64_t kMaxGrid = 0x7fffffff;
    PTE_CHECK(p.b <= kMaxGrid, "mask: batch=", p.b, ": must be <= ", kMaxGrid, " on CUDA");
    lengths_kernel<<<unsigned(p.b), kLenThreads, 0, st>>>(p);
    PTE_CUDA_CHECK_LAUNCH();
  }
  scan_kernel<<<1, kScanThreads, 0, st>>>(p.cu_q, p.cu_kv, p.valid, p.b);
  PTE_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace pte
