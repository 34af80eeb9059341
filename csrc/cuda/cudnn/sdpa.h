// The cuDNN backend's pieces, one concern per file, and what they share:
//   graph.cc        AttnProblem -> cudnn-frontend SDPA graph (Plan, the cache key, the Builder,
//                   the heuristic build and the optional plan list for autotuning);
//   graph_cache.cc  cuDNN handles per (thread, device) and the bounded LRU cache of built graphs;
//   attention.cc    the entry points (core/kernels.h): checks, workspace layout, execution.
// attention.cc's header comment describes the mapping of paddle_te's problem onto cuDNN's.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/problem.h"
#include "cuda/common.cuh"
#include "cuda/cudnn/aux_kernels.h"
#include "cuda/cudnn/frontend.h"

namespace pte {
namespace cudnn {

// Offsets into the caller's workspace are aligned to this many bytes (TMA / vector loads).
constexpr size_t kAlign = 256;
// Fixed tensor UIDs: the variant pack is built from these.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV,
  kScale, kSeed, kOffset, kLenQ, kLenKV,
  kRagBase = 32  // + RaggedSlot
};

inline size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// ---------------------------------------------------------------------------------------------
// Resolved graph parameters (what the key is made of).

struct Plan {
  bool backward;
  bool padding;        // seq_len tensors (from cu_seqlens, or constant as a cuDNN workaround)
  bool stats;          // forward writes softmax stats
  bool stats_buffer;   // stats go through the workspace (thd, or the backward's sanitised copy)
  bool fix_rows;       // run the row fix-up kernels
  bool wide_offsets;   // int64 ragged offsets
  int64_t left_bound;  // cuDNN's (exclusive) left bound, -1 = none
  int64_t right_bound; // -1 = none
};

Plan make_plan(const AttnProblem& p, bool backward);
// Everything that changes the graph, as bytes: device, dtype, shapes, strides, mask, dropout,
// determinism.
std::string make_key(const AttnProblem& p, const Plan& pl);

// ---------------------------------------------------------------------------------------------
// A built graph (or the reason it could not be built).

struct Entry {
  std::shared_ptr<fe::graph::Graph> graph;  // null when the build failed
  std::string error;
  int64_t workspace = 0;  // the largest cuDNN workspace of the plans below
  // Executable plan indices, cuDNN's heuristic choice first; more than one only when the graph is
  // autotuned (see tune_plan). `chosen` is the plan every call runs once tuning is done.
  std::vector<int64_t> plans;
  std::string desc;  // for PTE_CUDNN_DEBUG
  mutable std::mutex tune_mu;
  mutable std::atomic<int64_t> chosen{-1};
};

// Build the graph of (p, pl) on p's device (the caller selects it); failures are returned in
// Entry::error, not thrown, so they can be cached.
std::shared_ptr<const Entry> build_graph(const AttnProblem& p, const Plan& pl);

// PTE_CUDNN_DEBUG=1: print the plans of each graph built and the tuning times to stderr.
bool debug_on();

// ---------------------------------------------------------------------------------------------
// Handles and the graph cache.

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    PTE_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) PTE_CUDA_CHECK(cudaSetDevice(device));
    else prev_ = -1;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// The calling thread's cuDNN handle for `device`.
cudnnHandle_t handle_for(int device);

// The graph for p (built on first use). Failed builds are cached too, so check() stays cheap.
std::shared_ptr<const Entry> graph_for(const AttnProblem& p, const Plan& pl);

}  // namespace cudnn
}  // namespace pte
