// Which (query tile, head, sequence) a CTA of the sm90 forward computes. Blocks are launched in
// increasing blockIdx.x; giving the first blocks the last query tiles means that under causal or
// bottom-right masks, whose cost grows with the query position, the longest tiles start first and
// the short ones fill the tail of the wave.
#pragma once

#include <cstdint>

namespace pte {
namespace flash {
namespace sm90 {

struct TileCoord {
  int m_block;
  int64_t head, batch;
};

struct LongestFirstScheduler {
  __device__ __forceinline__ static TileCoord get(bool reverse) {
    const int m = reverse ? int(gridDim.x) - 1 - int(blockIdx.x) : int(blockIdx.x);
    return {m, int64_t(blockIdx.y), int64_t(blockIdx.z)};
  }
};

}  // namespace sm90
}  // namespace flash
}  // namespace pte
