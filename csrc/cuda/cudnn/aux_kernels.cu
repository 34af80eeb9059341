#include "cuda/cudnn/aux_kernels.h"

#include <cmath>

#include "cuda/common.cuh"

namespace pte {
namespace cudnn {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

__device__ __forceinline__ int64_t clamp_start(int32_t v, int64_t t) {
  return v < 0 ? 0 : (int64_t(v) > t ? t : int64_t(v));
}

__global__ void seqlens_kernel(SeqlenParams p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i > p.b) return;
  if (i < p.b) {
    p.len_q[i] = int32_t(seq_len(p.cu_q, i, p.s_q));
    p.len_kv[i] = int32_t(seq_len(p.cu_kv, i, p.s_kv));
  }
  for (int k = 0; k < kNumRagged; ++k) {
    if (p.off[k] == nullptr) continue;
    const int32_t* cu = p.kv_side[k] ? p.cu_kv : p.cu_q;
    const int64_t v = int64_t(cu[i]) * p.seq_stride[k];
    if (p.wide) static_cast<int64_t*>(p.off[k])[i] = v;
    else static_cast<int32_t*>(p.off[k])[i] = int32_t(v);
  }
}

// Lengths of sequence bi as the kernels see them (thd: also clamped to the packed tensor).
struct Lens {
  int64_t L_q, L_kv, q0, kv0;
  __device__ __forceinline__ Lens(const AttnProblem& p, int64_t bi) {
    L_q = seq_len(p.cu_q, bi, p.s_q);
    L_kv = seq_len(p.cu_kv, bi, p.s_kv);
    q0 = kv0 = 0;
    if (p.thd) {
      q0 = clamp_start(p.cu_q[bi], p.t_q);
      kv0 = clamp_start(p.cu_kv[bi], p.t_kv);
      L_q = L_q < p.t_q - q0 ? L_q : p.t_q - q0;
      L_kv = L_kv < p.t_kv - kv0 ? L_kv : p.t_kv - kv0;
    }
  }
};

__device__ __forceinline__ bool row_empty(const AttnProblem& p, const Lens& s, int64_t i) {
  int64_t lo, hi;
  visible_range(i, s.L_q, s.L_kv, p.window_left, p.window_right, p.bottom_right, &lo, &hi);
  return lo > hi;
}

__global__ void lse_to_stats_kernel(AttnProblem p, const float* lse, float* stats) {
  const int64_t n = p.b * p.h * p.s_q;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % p.s_q;
    const int64_t hh = (e / p.s_q) % p.h;
    const int64_t bi = e / (p.s_q * p.h);
    Lens s(p, bi);
    float v = INFINITY;
    if (i < s.L_q && !row_empty(p, s, i)) {
      const int64_t idx = p.thd ? hh * p.t_q + s.q0 + i : (bi * p.h + hh) * p.s_q + i;
      v = lse[idx];
      if (!(v > -INFINITY)) v = INFINITY;  // -inf or NaN: treat the row as empty
    }
    stats[e] = v;
  }
}

__device__ __forceinline__ void zero_row(const RowFixTensor& t, int64_t row_off, int lane) {
  if (t.data == nullptr) return;
  uint16_t* base = static_cast<uint16_t*>(t.data) + row_off;
  for (int64_t hh = 0; hh < t.heads; ++hh)
    for (int64_t c = lane; c < t.dim; c += kWarp) base[hh * t.st.head + c] = 0;
}

// One warp per row. Rows [0, b*s) are (sequence, position) pairs; for thd, rows [b*s, b*s + t)
// are the packed tokens, checked against the end of the last sequence.
__global__ void row_fix_kernel(AttnProblem p, RowFixParams f) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  const int64_t s = f.kv_side ? p.s_kv : p.s_q;
  const int64_t t = f.kv_side ? p.t_kv : p.t_q;
  const int64_t rows = p.b * s + (p.thd ? t : 0);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; r < rows;
       r += warps) {
    if (r >= p.b * s) {  // thd tail token
      const int64_t tok = r - p.b * s;
      const int32_t* cu = f.kv_side ? p.cu_kv : p.cu_q;
      if (tok < clamp_start(cu[p.b], t)) continue;
      for (int k = 0; k < 2; ++k) zero_row(f.x[k], tok * f.x[k].st.seq, lane);
      continue;
    }
    const int64_t bi = r / s, i = r % s;
    Lens sl(p, bi);
    const int64_t L = f.kv_side ? sl.L_kv : sl.L_q;
    if (i >= L) {
      if (!p.thd)  // thd has no per-sequence padding: those tokens belong to the next sequence
        for (int k = 0; k < 2; ++k)
          zero_row(f.x[k], bi * f.x[k].st.batch + i * f.x[k].st.seq, lane);
      continue;
    }
    const int64_t tok = (f.kv_side ? sl.kv0 : sl.q0) + i;
    if (f.kv_side) continue;  // valid keys keep cuDNN's gradients
    const bool empty = row_empty(p, sl, i);
    if (empty)
      for (int k = 0; k < 2; ++k)
        zero_row(f.x[k], bi * f.x[k].st.batch + tok * f.x[k].st.seq, lane);
    if (f.lse != nullptr) {
      for (int64_t hh = lane; hh < p.h; hh += kWarp) {
        const int64_t idx = p.thd ? hh * p.t_q + tok : (bi * p.h + hh) * p.s_q + i;
        if (empty) f.lse[idx] = -INFINITY;
        else if (f.stats != nullptr) f.lse[idx] = f.stats[(bi * p.h + hh) * p.s_q + i];
      }
    }
  }
}

int blocks_for(int64_t work, int per_block) {
  // Grid-stride loops: cap the grid, enough blocks to fill any current GPU several times.
  constexpr int64_t kMaxBlocks = 4096;
  int64_t n = (work + per_block - 1) / per_block;
  if (n < 1) n = 1;
  return int(n < kMaxBlocks ? n : kMaxBlocks);
}

}  // namespace

void launch_seqlens(const SeqlenParams& p, void* stream) {
  seqlens_kernel<<<blocks_for(p.b + 1, kThreads), kThreads, 0, cudaStream_t(stream)>>>(p);
  PTE_CUDA_CHECK_LAUNCH();
}

void launch_lse_to_stats(const AttnProblem& p, const float* lse, float* stats, void* stream) {
  lse_to_stats_kernel<<<blocks_for(p.b * p.h * p.s_q, kThreads), kThreads, 0,
                        cudaStream_t(stream)>>>(p, lse, stats);
  PTE_CUDA_CHECK_LAUNCH();
}

void launch_row_fix(const AttnProblem& p, const RowFixParams& f, void* stream) {
  const int64_t s = f.kv_side ? p.s_kv : p.s_q;
  const int64_t t = f.kv_side ? p.t_kv : p.t_q;
  const int64_t rows = p.b * s + (p.thd ? t : 0);
  constexpr int kRowsPerBlock = kThreads / kWarp;
  row_fix_kernel<<<blocks_for(rows, kRowsPerBlock), kThreads, 0, cudaStream_t(stream)>>>(p, f);
  PTE_CUDA_CHECK_LAUNCH();
}

bool may_have_empty_rows(const AttnProblem& p) {
  if (p.cu_q != nullptr || p.cu_kv != nullptr || p.thd) return true;
  if (p.s_q == 0) return false;
  if (p.s_kv == 0) return true;
  // Without lengths every sequence is (s_q, s_kv); the visible range moves monotonically with i,
  // so an empty row exists iff the first or the last row is empty.
  for (int64_t i : {int64_t(0), p.s_q - 1}) {
    int64_t lo, hi;
    visible_range(i, p.s_q, p.s_kv, p.window_left, p.window_right, p.bottom_right, &lo, &hi);
    if (lo > hi) return true;
  }
  return false;
}

}  // namespace cudnn
}  // namespace pte
