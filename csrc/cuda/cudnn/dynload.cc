// Run-time loading of libcudnn for cudnn-frontend's shim (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING):
// the shim resolves every cuDNN call through dlsym(cudnn_frontend::cudnn_dlhandle, ...), and
// caches each symbol on first use, so the handle must be set before any frontend call. Every
// entry point of the backend calls load_library() first and refuses to run when it fails.
//
// Where libcudnn is looked for, in order:
//   1. $PTE_CUDNN_LIBRARY (a full path);
//   2. a libcudnn.so.9 already in the process (torch and Paddle load theirs on import);
//   3. the dynamic linker's search path (LD_LIBRARY_PATH, ldconfig): libcudnn.so.9, libcudnn.so.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "core/kernels.h"
#include "cuda/cudnn/frontend.h"

namespace cudnn_frontend {
// Declared extern by cudnn_frontend_shim.h; defined once per library.
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend

namespace pte {
namespace cudnn {
namespace {

// cuDNN's oldest version this backend is written for (SDPA graphs with padding, ragged offsets,
// sliding windows and bottom-right alignment; each feature's own minimum is checked by the
// frontend when the graph is built).
constexpr size_t kMinVersion = 90000;

struct Loaded {
  size_t version = 0;
  std::string why;
};

Loaded load_once() {
  Loaded r;
  void* h = nullptr;
  std::string tried;
  if (const char* env = std::getenv("PTE_CUDNN_LIBRARY"); env != nullptr && *env) {
    h = dlopen(env, RTLD_NOW | RTLD_GLOBAL);
    if (!h) tried += std::string(env) + ": " + dlerror() + "; ";
  }
  if (!h) h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  for (const char* name : {"libcudnn.so.9", "libcudnn.so"}) {
    if (h) break;
    h = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    if (!h) tried += std::string(name) + ": " + dlerror() + "; ";
  }
  if (!h) {
    r.why = "the cuDNN library could not be loaded (" + tried +
            "set PTE_CUDNN_LIBRARY or LD_LIBRARY_PATH, or import torch/paddle first)";
    return r;
  }
  using GetVersion = size_t (*)();
  auto get_version = reinterpret_cast<GetVersion>(dlsym(h, "cudnnGetVersion"));
  if (!get_version) {
    r.why = "the loaded cuDNN library has no cudnnGetVersion";
    return r;
  }
  const size_t v = get_version();
  if (v < kMinVersion) {
    r.why = "cuDNN " + std::to_string(v) + " is too old: the cudnn backend needs cuDNN >= 9.0";
    return r;
  }
  cudnn_frontend::cudnn_dlhandle = h;
  r.version = v;
  return r;
}

}  // namespace

size_t load_library(std::string* why) {
  static std::once_flag once;
  static Loaded loaded;
  std::call_once(once, [] { loaded = load_once(); });
  if (why) *why = loaded.why;
  return loaded.version;
}

size_t runtime_version() { return load_library(nullptr); }

}  // namespace cudnn
}  // namespace pte
