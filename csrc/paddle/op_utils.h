// Helpers shared by the Paddle custom ops: paddle::Tensor -> pte_tensor_t, status -> exception,
// a C call with its workspace. This directory is the only code in paddle_te that sees Paddle types;
// everything below it talks through the C API in csrc/include/paddle_te/.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "paddle/common/enforce.h"
#include "paddle/extension.h"
#include "paddle_te/paddle_te.h"

// Raise an op's error. Paddle's static-graph executor passes the text of its own exception type
// (EnforceNotMet) on to Python and reports any other one, PD_THROW's included, as
// "RuntimeError: 'std::exception'": a bad argument found at Executor.run lost its message. The
// Python side (paddle_te/_ops_lib.py) reads the status tag at the start of the text either way.
// The error code picks Paddle's Python type: INVALID_ARGUMENT a ValueError, EXTERNAL an OSError
// (what PD_THROW gave in dygraph, kept for CUDA and internal failures).
#define PTE_OP_THROW_CODE(code, ...)                                                          \
  throw ::common::enforce::EnforceNotMet(                                                    \
      ::common::ErrorSummary(code, ::common::ErrorMessage(__VA_ARGS__).to_string()),          \
      __FILE__, __LINE__)
#define PTE_OP_THROW(...) PTE_OP_THROW_CODE(::common::ErrorCode::INVALID_ARGUMENT, __VA_ARGS__)
#define PTE_OP_CHECK(cond, ...)             \
  do {                                      \
    if (!(cond)) PTE_OP_THROW(__VA_ARGS__); \
  } while (0)

namespace pte_paddle {

// Prefix of every error message raised by the ops. The Python wrappers (paddle_te/ops.py)
// recognise it and re-raise the text as ValueError for the two "caller's fault" statuses.
inline const char* status_tag(pte_status_t s) {
  switch (s) {
    case PTE_ERROR_INVALID_ARGUMENT:
      return "[paddle_te:invalid_argument] ";
    case PTE_ERROR_NOT_SUPPORTED:
      return "[paddle_te:not_supported] ";
    case PTE_ERROR_CUDA:
      return "[paddle_te:cuda_error] ";
    case PTE_SUCCESS:
      return "";
    default:
      return "[paddle_te:internal_error] ";
  }
}

// Throw (PTE_OP_THROW -> Python exception) when a C API call failed. `what` names the op.
inline void check_status(pte_status_t s, const char* what) {
  if (s == PTE_SUCCESS) return;
  const char* msg = pte_last_error();
  const std::string text =
      std::string(status_tag(s)) + what + ": " + (msg && *msg ? msg : "unknown error");
  const bool callers_fault = s == PTE_ERROR_INVALID_ARGUMENT || s == PTE_ERROR_NOT_SUPPORTED;
  PTE_OP_THROW_CODE(callers_fault ? ::common::ErrorCode::INVALID_ARGUMENT
                                  : ::common::ErrorCode::EXTERNAL,
                    text);
}

// A word of one of the C API's vocabularies (pte_qkv_format_parse, pte_mask_type_parse,
// pte_backend_parse): the core holds the one table and writes the message with the allowed set.
template <typename E>
E parse_word(pte_status_t (*parse)(const char*, E*), const std::string& s, const char* extra = "") {
  E value{};
  if (parse(s.c_str(), &value) != PTE_SUCCESS)
    PTE_OP_THROW("[paddle_te:invalid_argument] ", pte_last_error(), extra);
  return value;
}

inline pte_dtype_t to_pte_dtype(paddle::DataType t) {
  switch (t) {
    case paddle::DataType::FLOAT32:
      return PTE_FLOAT32;
    case paddle::DataType::FLOAT64:
      return PTE_FLOAT64;
    case paddle::DataType::FLOAT16:
      return PTE_FLOAT16;
    case paddle::DataType::BFLOAT16:
      return PTE_BFLOAT16;
    case paddle::DataType::INT32:
      return PTE_INT32;
    case paddle::DataType::INT64:
      return PTE_INT64;
    case paddle::DataType::BOOL:
      return PTE_BOOL;
    default:
      PTE_OP_THROW("[paddle_te:invalid_argument] unsupported tensor dtype ",
                   phi::DataTypeToString(t),
                   ": allowed float32, float64, float16, bfloat16, int32, int64, bool");
  }
}

// A view of a (contiguous) Paddle tensor. Paddle makes custom-op inputs contiguous before the
// kernel runs, so the strides follow from the dims (row-major, in elements).
inline pte_tensor_t to_pte(const paddle::Tensor& x) {
  pte_tensor_t t;
  t.data = nullptr;
  t.dtype = PTE_FLOAT32;
  t.ndim = 0;
  for (int i = 0; i < PTE_MAX_DIMS; ++i) {
    t.shape[i] = 0;
    t.strides[i] = 0;
  }
  t.device = PTE_DEVICE_CPU;
  t.device_id = 0;
  if (!x.initialized()) return t;  // absent: data == NULL, ndim == 0

  const auto dims = x.shape();
  PTE_OP_CHECK(static_cast<int>(dims.size()) <= PTE_MAX_DIMS,
               "[paddle_te:invalid_argument] tensor rank ", dims.size(), " exceeds ", PTE_MAX_DIMS);
  t.dtype = to_pte_dtype(x.dtype());
  t.ndim = static_cast<int32_t>(dims.size());
  int64_t stride = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    t.shape[i] = dims[i];
    t.strides[i] = stride;
    stride *= dims[i] > 0 ? dims[i] : 1;
  }
  // data() of a tensor with zero elements may be null; the core checks sizes before pointers.
  t.data = const_cast<void*>(x.data());
#ifdef PADDLE_WITH_CUDA
  if (x.is_gpu()) {
    t.device = PTE_DEVICE_CUDA;
    t.device_id = x.place().GetDeviceId();
  }
#endif
  return t;
}

inline pte_tensor_t to_pte(const paddle::optional<paddle::Tensor>& x) {
  if (x) return to_pte(*x);
  return to_pte(paddle::Tensor());
}

// The stream the op must run on (the tensor's stream); NULL on the CPU.
inline void* stream_of(const paddle::Tensor& x) {
#ifdef PADDLE_WITH_CUDA
  if (x.is_gpu()) return reinterpret_cast<void*>(x.stream());
#endif
  (void)x;
  return nullptr;
}

inline bool on_gpu(const paddle::Tensor& x) {
#ifdef PADDLE_WITH_CUDA
  return x.is_gpu();
#else
  (void)x;
  return false;
#endif
}

// SPEC §3: on the CPU, float16 and bfloat16 are computed in float32. The ops cast around the
// CPU kernels (the kernels themselves take float32/float64).
inline bool needs_fp32_on_cpu(const paddle::Tensor& x) {
  return !on_gpu(x) &&
         (x.dtype() == paddle::DataType::FLOAT16 || x.dtype() == paddle::DataType::BFLOAT16);
}

inline paddle::Tensor to_compute(const paddle::Tensor& x, bool cast) {
  return cast ? x.cast(paddle::DataType::FLOAT32) : x;
}

// Scales travel as decimal strings: PIR custom ops have no double attribute, and a float
// attribute would round float64 problems' scale to float32. The Python side writes repr(float),
// which round-trips exactly through strtod.
inline double parse_scale(const std::string& s, const char* name) {
  const char* begin = s.c_str();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  PTE_OP_CHECK(!s.empty() && end == begin + s.size(),
               "[paddle_te:invalid_argument] ", name, "=\"", s, "\": not a number");
  return v;  // finiteness and sign are checked by the core, which names the argument
}

// Run `call` with the workspace `size` asks for, allocated on `place` (Paddle's allocator, on the
// op's stream) and released when the call has been queued. `op` names the op in errors.
template <typename P>
void run_with_workspace(P* p, pte_status_t (*size)(const P*, size_t*),
                        pte_status_t (*call)(const P*), const paddle::Place& place,
                        const char* op) {
  size_t bytes = 0;
  check_status(size(p, &bytes), op);
  paddle::Tensor ws;  // undefined when none is needed
  if (bytes != 0)
    ws = paddle::empty({static_cast<int64_t>(bytes)}, paddle::DataType::UINT8, place);
  p->workspace = bytes ? ws.data() : nullptr;
  p->workspace_size = bytes;
  check_status(call(p), op);
}

}  // namespace pte_paddle
