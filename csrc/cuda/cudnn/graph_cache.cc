// cuDNN handles and the cache of built SDPA graphs (sdpa.h). Graphs are kept in a bounded LRU
// cache shared by all threads; building happens outside the lock. A graph's execute() is const and
// takes the handle, stream and pointers per call, so one graph serves concurrent callers.
#include <list>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "cuda/common.cuh"
#include "cuda/cudnn/sdpa.h"

namespace pte {
namespace cudnn {

// One handle per (thread, device). Handles are not destroyed: a thread's handles live as long as
// the thread, and destroying them during process exit can run after the CUDA driver has shut
// down. Thread pools (Paddle's, Python's) are bounded, so so is this.
cudnnHandle_t handle_for(int device) {
  thread_local std::unordered_map<int, cudnnHandle_t> handles;
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  cudnnStatus_t st = fe::detail::create_handle(&h);
  if (st != CUDNN_STATUS_SUCCESS)
    throw Error(PTE_ERROR_CUDA, str("cudnnCreate failed: ", fe::detail::get_error_string(st)));
  handles.emplace(device, h);
  return h;
}

namespace {

// Graphs kept per process; each holds a few KB of host state plus cuDNN's compiled plan.
constexpr size_t kCacheCapacity = 256;
class GraphCache {
 public:
  std::shared_ptr<const Entry> find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.first);
    return it->second.second;
  }
  std::shared_ptr<const Entry> insert(const std::string& key, std::shared_ptr<const Entry> e) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second.second;  // another thread built it meanwhile
    lru_.push_front(key);
    map_.emplace(key, std::make_pair(lru_.begin(), e));
    while (map_.size() > kCacheCapacity) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    return e;
  }

 private:
  std::mutex mu_;
  std::list<std::string> lru_;
  std::unordered_map<std::string,
                     std::pair<std::list<std::string>::iterator, std::shared_ptr<const Entry>>>
      map_;
};

GraphCache& cache() {
  static GraphCache* c = new GraphCache();  // never destroyed: graphs may outlive static dtors
  return *c;
}

}  // namespace

// The graph for p (built on first use). Failed builds are cached too, so check() stays cheap.
std::shared_ptr<const Entry> graph_for(const AttnProblem& p, const Plan& pl) {
  const std::string key = make_key(p, pl);
  if (auto e = cache().find(key)) return e;
  DeviceGuard guard(p.device_id);
  return cache().insert(key, build_graph(p, pl));
}

}  // namespace cudnn
}  // namespace pte
