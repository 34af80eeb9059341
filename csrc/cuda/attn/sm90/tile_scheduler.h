// Which (query tile, head, sequence) tiles a CTA of the sm90 forward computes. Tiles are numbered
// query tile fastest, so that the CTAs running at one time share a head's K and V in L2. Under a
// right window bound (causal, bottom-right), whose cost grows with the query position, the query
// tiles are taken in reverse so the longest start first and the short ones fill the tail.
//   one tile per CTA: CTA c computes tile c;
//   persistent: one CTA per SM; CTA c computes tiles c, c + G, c + 2G, ... (G = grid size), and its
//   producer loads the next tile's Q, K and V while the consumers finish the current epilogue.
#pragma once

#include <cstdint>

namespace pte {
namespace flash {
namespace sm90 {

struct TileCoord {
  int m_block;
  int64_t head, batch;
};

struct TileList {
  int m_blocks;
  int64_t heads, batch;
  bool reverse;

  __host__ __device__ __forceinline__ int64_t total() const { return m_blocks * heads * batch; }
  __device__ __forceinline__ TileCoord coord(int64_t t) const {
    const int m = int(t % m_blocks);
    const int64_t hb = t / m_blocks;
    return {reverse ? m_blocks - 1 - m : m, hb % heads, hb / heads};
  }
};

}  // namespace sm90
}  // namespace flash
}  // namespace pte
