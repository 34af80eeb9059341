// Shared-memory tiles of the flash kernels and the warp-level GEMM steps on them.
//
// A tile holds R rows (tokens) x D columns (head dim, D = the compiled head dim >= the actual d),
// row-major with a row stride of D + 8 elements: the 16-byte pad shifts consecutive rows by four
// banks, so the eight 16-byte row segments one ldmatrix reads never share a bank, for every D.
// Rows past a sequence's length and columns past d are zero-filled by cp.async, so they add
// nothing to a dot product.
#pragma once

#include <cstdint>

#include "cuda/attn/sm80/mma.h"

namespace pte {
namespace flash {

template <int D>
struct TileGeom {
  static constexpr int kStride = D + 8;  // elements per smem row
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
};

// Issue cp.async copies of rows [0, R) of a tile whose row 0 is at `g` (row stride `row_stride`
// elements). Rows >= valid_rows and columns >= d are zero-filled; `safe` is any valid address,
// passed instead of an out-of-range one. When the threads divide into whole rows (D/8 divides
// kThreads), each thread copies one fixed column chunk of every kThreads/(D/8)-th row, so its
// addresses advance by a constant per copy and tiles that are entirely in range skip the
// predicates.
template <int R, int D, int kThreads, typename T>
__device__ __forceinline__ void load_tile(T* s, const T* g, int64_t row_stride, int64_t valid_rows,
                                          int d, const T* safe, int tid) {
  constexpr int kChunks = TileGeom<D>::kChunks;
  constexpr int kStride = TileGeom<D>::kStride;
  if constexpr (kThreads % kChunks == 0) {
    constexpr int kRowStep = kThreads / kChunks;
    constexpr int kPasses = (R + kRowStep - 1) / kRowStep;
    const int r0 = tid / kChunks, ch = tid % kChunks;
    if (R % kRowStep != 0 && r0 >= R) return;  // only when a tile has fewer rows than a pass
    const uint32_t dst = smem_addr(s + r0 * kStride + ch * 8);
    const T* src = g + r0 * row_stride + ch * 8;
    const int64_t step = kRowStep * row_stride;
    const bool col_ok = ch * 8 < d;
    if (col_ok && valid_rows >= R) {
#pragma unroll
      for (int i = 0; i < kPasses; ++i) {
        if (R % kRowStep == 0 || r0 + i * kRowStep < R)
          cp_async_16(dst + i * kRowStep * kStride * int(sizeof(T)), src + i * step, true);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kPasses; ++i) {
        const int r = r0 + i * kRowStep;
        if (R % kRowStep != 0 && r >= R) break;
        const bool ok = col_ok && r < valid_rows;
        cp_async_16(dst + i * kRowStep * kStride * int(sizeof(T)), ok ? src + i * step : safe, ok);
      }
    }
  } else {
#pragma unroll
    for (int idx = tid; idx < R * kChunks; idx += kThreads) {
      const int r = idx / kChunks, ch = idx % kChunks;
      const bool ok = r < valid_rows && ch * 8 < d;
      cp_async_16(smem_addr(s + r * kStride + ch * 8), ok ? g + r * row_stride + ch * 8 : safe, ok);
    }
  }
}

// acc[mt][nt] += A[rows a_row0 + mt*16 .. +16, 0:D] * B[rows nt*8 .. +8, 0:D]^T for NT n-tiles:
// both operands are tiles in smem whose rows are the M and N indices and whose columns are the
// reduction (head-dim) index: S = Q K^T, dP = dO V^T, S^T = K Q^T, dP^T = V dO^T.
// Steps past the runtime head dim d are not skipped: they add zeros, and a runtime branch per
// step would split the unrolled loop into blocks the compiler cannot software-pipeline (measured:
// ~3x slower on H100).
template <int MT, int NT, int D, typename T>
__device__ __forceinline__ void gemm_rows_rows(float (&acc)[MT][NT][4], const T* sA, int a_row0,
                                               const T* sB, int lane) {
  static_assert(NT % 2 == 0, "n-tiles come in pairs (one ldmatrix.x4)");
  constexpr int S = TileGeom<D>::kStride, E = int(sizeof(T));
  const int mi = lane / 8, r8 = lane % 8;
  const uint32_t a_base = smem_addr(sA + (a_row0 + (mi & 1) * 8 + r8) * S + (mi >> 1) * 8);
  const uint32_t b_base = smem_addr(sB + ((mi >> 1) * 8 + r8) * S + (mi & 1) * 8);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(a[mt], a_base + (mt * 16 * S + kk * 16) * E);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      ldmatrix_x4(b, b_base + (np * 16 * S + kk * 16) * E);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        Mma<T>::run(acc[mt][2 * np], a[mt], b[0], b[1]);
        Mma<T>::run(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// acc[mt][no] += P[mt] (registers: fp32 accumulators of KT*2 n-tiles, i.e. a [16 x 16*KT]
// operand) * B[0:16*KT, col0 + 0:8*NO], B a smem tile whose rows are the reduction index (keys
// or queries) and whose columns are the output columns: O = P V, dV = P^T dO, dK = dS^T Q,
// dQ = dS K. Output columns past d hold zeros (never stored).
template <int MT, int KT2, int NO, int D, typename T>
__device__ __forceinline__ void gemm_regs_rows(float (&acc)[MT][NO][4], const float (&p)[MT][KT2][4],
                                               const T* sB, int col0, int lane) {
  static_assert(KT2 % 2 == 0 && NO % 2 == 0, "tiles come in pairs");
  constexpr int S = TileGeom<D>::kStride, E = int(sizeof(T));
  const int mi = lane / 8, r8 = lane % 8;
  const uint32_t b_base = smem_addr(sB + ((mi & 1) * 8 + r8) * S + col0 + (mi >> 1) * 8);
#pragma unroll
  for (int kk = 0; kk < KT2 / 2; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a[mt][0] = Mma<T>::pack(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      a[mt][1] = Mma<T>::pack(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      a[mt][2] = Mma<T>::pack(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      a[mt][3] = Mma<T>::pack(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dn = 0; dn < NO / 2; ++dn) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, b_base + (kk * 16 * S + dn * 16) * E);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        Mma<T>::run(acc[mt][2 * dn], a[mt], b[0], b[1]);
        Mma<T>::run(acc[mt][2 * dn + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// acc[no] += A[a_row0 .. +16, 0:KR] * B[0:KR, col0 + 0:8*NO] with both operands in smem and
// A stored transposed (sAt[k][m], row stride SA; read with ldmatrix.trans), B stored with the
// reduction index as rows (row stride SB): dQ = dS K from dS^T staged by the dK/dV kernel.
// NO may be odd (head dims 160 and 224 split into slices of 5 and 7 n-tiles).
template <int KR, int NO, int SA, int SB, typename T>
__device__ __forceinline__ void gemm_tsmem_rows(float (&acc)[NO][4], const T* sAt, int a_row0,
                                                const T* sB, int col0, int lane) {
  static_assert(KR % 16 == 0, "reduction in k16 steps");
  constexpr int E = int(sizeof(T));
  const int mi = lane / 8, r8 = lane % 8;
  // Matrix mi of the A fragment is (m half mi & 1, k half mi >> 1); stored as [k][m].
  const uint32_t a_base = smem_addr(sAt + ((mi >> 1) * 8 + r8) * SA + a_row0 + (mi & 1) * 8);
  const uint32_t b_base = smem_addr(sB + ((mi & 1) * 8 + r8) * SB + col0 + (mi >> 1) * 8);
  const uint32_t b2_base = smem_addr(sB + ((mi & 1) * 8 + r8) * SB + col0 + (NO - 1) * 8);
#pragma unroll
  for (int kk = 0; kk < KR / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4_trans(a, a_base + kk * 16 * SA * E);
#pragma unroll
    for (int dn = 0; dn < NO / 2; ++dn) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, b_base + (kk * 16 * SB + dn * 16) * E);
      Mma<T>::run(acc[2 * dn], a, b[0], b[1]);
      Mma<T>::run(acc[2 * dn + 1], a, b[2], b[3]);
    }
    if (NO % 2 == 1) {
      uint32_t b[2];
      ldmatrix_x2_trans(b, b2_base + kk * 16 * SB * E);
      Mma<T>::run(acc[NO - 1], a, b[0], b[1]);
    }
  }
}

// acc[mt][no] += A[a_row0 + mt*16 .. +16, 0:KR] * B[0:KR, col0 + 0:8*NO] with both operands in
// smem and B stored with the reduction index as rows (row stride SB, read with ldmatrix.trans).
// A is stored either with its rows as rows (kATrans = false: A[m][k] at sA[m * SA + k]) or
// transposed (kATrans = true: A[m][k] at sA[k * SA + m]). The 2-D tiled backward uses all three
// forms on its staged P and dS: dV = P^T dO and dK = dS^T Q (A transposed), dQ = dS K.
template <int MT, int NO, int KR, bool kATrans, int SA, int SB, typename T>
__device__ __forceinline__ void gemm_smem_kn(float (&acc)[MT][NO][4], const T* sA, int a_row0,
                                             const T* sB, int col0, int lane) {
  static_assert(KR % 16 == 0 && NO % 2 == 0, "k16 steps, n-tiles in pairs");
  constexpr int E = int(sizeof(T));
  const int mi = lane / 8, r8 = lane % 8;
  // Matrix mi of an A fragment covers (m half mi & 1, k half mi >> 1).
  const uint32_t a_base =
      kATrans ? smem_addr(sA + ((mi >> 1) * 8 + r8) * SA + a_row0 + (mi & 1) * 8)
              : smem_addr(sA + (a_row0 + (mi & 1) * 8 + r8) * SA + (mi >> 1) * 8);
  const uint32_t b_base = smem_addr(sB + ((mi & 1) * 8 + r8) * SB + col0 + (mi >> 1) * 8);
#pragma unroll
  for (int kk = 0; kk < KR / 16; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (kATrans)
        ldmatrix_x4_trans(a[mt], a_base + (kk * 16 * SA + mt * 16) * E);
      else
        ldmatrix_x4(a[mt], a_base + (mt * 16 * SA + kk * 16) * E);
    }
#pragma unroll
    for (int dn = 0; dn < NO / 2; ++dn) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, b_base + (kk * 16 * SB + dn * 16) * E);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        Mma<T>::run(acc[mt][2 * dn], a[mt], b[0], b[1]);
        Mma<T>::run(acc[mt][2 * dn + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// dst[0..1] += (a, b) in fp32 global memory (8-byte aligned): one vector reduction on sm_90,
// two scalar ones before.
__device__ __forceinline__ void atomic_add_pair(float* dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // red (no return value), not atom: nothing waits for the old value.
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(dst), "f"(a), "f"(b) : "memory");
#else
  atomicAdd(dst, a);
  atomicAdd(dst + 1, b);
#endif
}

}  // namespace flash
}  // namespace pte
