// The FlashMask summary (cuda/attn/flashmask.h): per (batch, mask head, chunk of 32 key columns),
// the min and max of each bound column over the chunk. One warp per chunk, one lane per column;
// compiled for every arch (both kernel families read it).
#include "cuda/attn/flashmask.h"
#include "cuda/common.cuh"

namespace pte {
namespace flash {
namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    summarize_kernel(const int32_t* __restrict__ startend, int32_t* __restrict__ summary,
                     int64_t heads_total, int64_t s_kv, int64_t chunks, int c) {
  const int lane = threadIdx.x % 32;
  const int64_t w = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (w >= heads_total * chunks) return;
  const int64_t head = w / chunks, ch = w % chunks;
  const int64_t j = ch * flashmask::kChunk + lane;
  const bool valid = j < s_kv;
  const int32_t* col = startend + (head * s_kv + (valid ? j : 0)) * c;
  int32_t* out = summary + w * c * 2;
  for (int k = 0; k < c; ++k) {
    const int32_t v = valid ? col[k] : 0;
    int32_t lo = valid ? v : flashmask::kRowInf, hi = valid ? v : -1;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const int32_t l2 = __shfl_xor_sync(0xffffffffu, lo, o);
      const int32_t h2 = __shfl_xor_sync(0xffffffffu, hi, o);
      lo = l2 < lo ? l2 : lo;
      hi = h2 > hi ? h2 : hi;
    }
    if (lane == 0) {
      out[2 * k] = lo;
      out[2 * k + 1] = hi;
    }
  }
}

}  // namespace

void flashmask_summarize(const AttnProblem& p, int32_t* summary, cudaStream_t stream) {
  if (p.startend == nullptr) return;
  const int64_t chunks = (p.s_kv + flashmask::kChunk - 1) / flashmask::kChunk;
  const int64_t heads_total = p.b * p.startend_heads;
  const int64_t warps = heads_total * chunks;
  if (warps == 0) return;
  const int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  summarize_kernel<<<unsigned(blocks), kWarpsPerBlock * 32, 0, stream>>>(
      p.startend, summary, heads_total, p.s_kv, chunks, p.startend_c);
  PTE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace flash
}  // namespace pte
