// Dropout inside the flash kernels: the keep decision of csrc/common/philox.h, evaluated per
// accumulator fragment. One Philox call yields the draws of 4 consecutive keys (key / 4); in the
// C fragment a lane holds keys 2c and 2c+1 of one row, which share a call, so the forward and the
// dQ kernel make one call per (row, n-tile). The dK/dV kernel holds transposed tiles (rows are
// keys) and makes one call per element.
#pragma once

#include <cstdint>

#include "common/philox.h"
#include "core/problem.h"

namespace pte {
namespace flash {

struct Dropout {
  uint64_t seed, offset;
  uint32_t threshold;
  float scale;  // 1 / (1 - p): inverted dropout
  int64_t batch, num_heads;

  __device__ __forceinline__ Dropout(const AttnProblem& p, int64_t bi) {
    seed = p.seed;
    offset = p.offset;
    if (p.seed_offset_device != nullptr) {
      // Device-resident {seed, offset} (e.g. a framework generator's state): no host sync.
      seed = uint64_t(p.seed_offset_device[0]);
      offset = uint64_t(p.seed_offset_device[1]);
    }
    threshold = dropout_threshold(p.dropout);
    scale = 1.0f / (1.0f - p.dropout);
    batch = bi;
    num_heads = p.h;
  }

  // Keep flags of keys j and j + 1 (j even) of query i in head `head`.
  __device__ __forceinline__ void keep_pair(int64_t head, int64_t i, int64_t j, bool* k0,
                                            bool* k1) const {
    Philox4 r = dropout_draws(seed, offset, batch, head, num_heads, i, j);
    uint32_t a = (j & 2) ? r.z : r.x;
    uint32_t b = (j & 2) ? r.w : r.y;
    *k0 = a >= threshold;
    *k1 = b >= threshold;
  }

  __device__ __forceinline__ bool keep(int64_t head, int64_t i, int64_t j) const {
    return philox_pick(dropout_draws(seed, offset, batch, head, num_heads, i, j), j) >= threshold;
  }
};

}  // namespace flash
}  // namespace pte
