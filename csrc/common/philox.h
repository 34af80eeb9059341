// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
// dropout keep rule built on it. Host and device code include this one header, so the CPU
// reference kernels and the CUDA kernels make the same decision for every element, bit for bit.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PTE_PHILOX_FN __host__ __device__ __forceinline__
#else
#define PTE_PHILOX_FN inline
#endif

namespace pte {

struct Philox4 {
  uint32_t x, y, z, w;
};

PTE_PHILOX_FN uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

// Ten rounds of Philox4x32 on counter c with key (k0, k1).
PTE_PHILOX_FN Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(kM0, c.x, &hi0);
    uint32_t lo1 = philox_mulhilo(kM1, c.z, &hi1);
    c = Philox4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += kW0;
    k1 += kW1;
  }
  return c;
}

// The four 32-bit draws that cover keys 4*(key/4) .. 4*(key/4)+3 of one (batch, head, query) row.
// See paddle_te/attention.h for the documented formula.
PTE_PHILOX_FN Philox4 dropout_draws(uint64_t seed, uint64_t offset, int64_t batch, int64_t head,
                                    int64_t num_heads, int64_t query, int64_t key) {
  Philox4 ctr{uint32_t(uint64_t(key) >> 2), uint32_t(query), uint32_t(batch * num_heads + head),
              uint32_t(offset)};
  return philox4x32_10(ctr, uint32_t(seed), uint32_t(seed >> 32) + uint32_t(offset >> 32));
}

// Elements whose draw is below the threshold are dropped: P(drop) = threshold / 2^32.
PTE_PHILOX_FN uint32_t dropout_threshold(float p) {
  double t = double(p) * 4294967296.0;
  return t >= 4294967295.0 ? 4294967295u : uint32_t(t);
}

PTE_PHILOX_FN uint32_t philox_pick(const Philox4& r, int64_t key) {
  switch (key & 3) {
    case 0: return r.x;
    case 1: return r.y;
    case 2: return r.z;
    default: return r.w;
  }
}

PTE_PHILOX_FN bool dropout_keep(uint64_t seed, uint64_t offset, uint32_t threshold, int64_t batch,
                                int64_t head, int64_t num_heads, int64_t query, int64_t key) {
  return philox_pick(dropout_draws(seed, offset, batch, head, num_heads, query, key), key) >=
         threshold;
}

}  // namespace pte
