// The shared-memory pipeline of the sm90 kernels, on mbarriers: a "full" barrier per stage that
// the producer arms with the stage's byte count and TMA completes, and an "empty" barrier per stage
// on which every consumer thread arrives once it no longer reads the stage. Phases alternate per
// round through the stages, so a stage used for tile t waits on parity (t / kStages) & 1.
#pragma once

#include <cstdint>

#include <cutlass/arch/barrier.h>

namespace pte {
namespace flash {
namespace sm90 {

using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
using EmptyBarrier = cutlass::arch::ClusterBarrier;

template <int kStages>
struct StageIter {
  int t;  // tile counter since the start of the loop
  __device__ __forceinline__ int stage() const { return t % kStages; }
  __device__ __forceinline__ uint32_t phase() const { return uint32_t(t / kStages) & 1u; }
  // Before refilling stage() in round t / kStages >= 1, the producer waits for the consumers'
  // release of the previous round: parity of round - 1.
  __device__ __forceinline__ bool must_wait_empty() const { return t >= kStages; }
  __device__ __forceinline__ uint32_t empty_phase() const {
    return uint32_t(t / kStages - 1) & 1u;
  }
};

}  // namespace sm90
}  // namespace flash
}  // namespace pte
