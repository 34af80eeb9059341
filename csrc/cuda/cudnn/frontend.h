// The one place that includes cudnn-frontend. libcudnn is loaded at run time (dlopen) by the
// frontend's dynamic-loading shim, so the core links without libcudnn: on a machine without
// cuDNN the backend reports "could not be loaded" instead of the library failing to load.
#pragma once

#ifndef NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#endif
// The graph (de)serialisation to JSON is not used; skipping it saves compile time.
#ifndef CUDNN_FRONTEND_SKIP_JSON_LIB
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#endif

// Standard and CUDA headers first, outside the hidden-visibility region below.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <dlfcn.h>

#include <algorithm>
#include <any>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <valarray>
#include <variant>
#include <vector>

// cudnn-frontend is header-only: every function we use is instantiated in our objects as a weak
// symbol. Other libraries in the process (torch, Paddle) carry their own cudnn-frontend, of
// another version and without dynamic loading; with default visibility the dynamic linker could
// bind their calls to our copies or ours to theirs (same mangled names, different layouts).
// Hidden visibility keeps our copy ours.
#pragma GCC visibility push(hidden)
#include <cudnn_frontend.h>
#pragma GCC visibility pop

namespace pte {
namespace cudnn {

namespace fe = cudnn_frontend;

// Loads libcudnn once (thread-safe). Returns its version (e.g. 91900) or 0; *why says why not.
size_t load_library(std::string* why);

}  // namespace cudnn
}  // namespace pte
