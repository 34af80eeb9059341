#include "core/api_common.h"

#include "paddle_te/paddle_te.h"

namespace pte {

namespace {
// Thread-local: Paddle runs kernels on several threads at once without the GIL.
thread_local std::string g_last_error;
}  // namespace

void set_last_error(const std::string& msg) { g_last_error = msg; }

std::string shape_str(const pte_tensor_t& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

std::string device_str(const pte_tensor_t& t) {
  return t.device == PTE_DEVICE_CPU ? std::string("cpu") : str("cuda:", t.device_id);
}

void check_present(const pte_tensor_t& t, const char* name) {
  PTE_CHECK(present(t), name, ": required but not given");
}

void check_ndim(const pte_tensor_t& t, const char* name, int ndim, const char* layout) {
  check_present(t, name);
  PTE_CHECK(t.ndim == ndim, name, " has shape ", shape_str(t), ": must have ", ndim,
            " dimensions ", layout);
}

void check_shape(const pte_tensor_t& t, const char* name, const std::vector<int64_t>& shape,
                 const char* layout) {
  check_ndim(t, name, int(shape.size()), layout);
  bool same = true;
  for (size_t i = 0; i < shape.size(); ++i) same = same && t.shape[i] == shape[i];
  if (!same) {
    std::string want = "[";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    PTE_CHECK(false, name, " has shape ", shape_str(t), ": expected ", want, "] ", layout);
  }
}

void check_dtype(const pte_tensor_t& t, const char* name, pte_dtype_t dtype) {
  PTE_CHECK(t.dtype == dtype, name, " has dtype ", pte_dtype_name(t.dtype), ": must be ",
            pte_dtype_name(dtype));
}

void check_same_device(const pte_tensor_t& t, const char* name, const pte_tensor_t& ref,
                       const char* ref_name) {
  PTE_CHECK(t.device == ref.device && (t.device == PTE_DEVICE_CPU || t.device_id == ref.device_id),
            name, " is on ", device_str(t), ": must be on ", ref_name, "'s device ",
            device_str(ref));
}

void check_contiguous(const pte_tensor_t& t, const char* name) {
  int64_t expect = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    PTE_CHECK(t.shape[i] == 1 || t.strides[i] == expect, name, " with shape ", shape_str(t),
              " must be contiguous (stride ", t.strides[i], " at dim ", i, ", expected ", expect,
              ")");
    expect *= t.shape[i];
  }
}

void check_inner_contiguous(const pte_tensor_t& t, const char* name) {
  for (int i = 0; i < t.ndim; ++i)
    PTE_CHECK(t.strides[i] >= 0, name, ": negative stride ", t.strides[i], " at dim ", i,
              " is not supported");
  PTE_CHECK(t.ndim == 0 || t.shape[t.ndim - 1] == 1 || t.strides[t.ndim - 1] == 1, name,
            ": the last (head) dimension must be contiguous, stride is ", t.strides[t.ndim - 1]);
}

void check_data(const pte_tensor_t& t, const char* name) {
  int64_t n = 1;
  for (int i = 0; i < t.ndim; ++i) {
    PTE_CHECK(t.shape[i] >= 0, name, " has a negative dimension in shape ", shape_str(t));
    n *= t.shape[i];
  }
  PTE_CHECK(n == 0 || t.data != nullptr, name, ": data pointer is null");
}

}  // namespace pte

extern "C" {

const char* pte_last_error(void) { return pte::g_last_error.c_str(); }

const char* pte_dtype_name(pte_dtype_t dtype) {
  switch (dtype) {
    case PTE_FLOAT32: return "float32";
    case PTE_FLOAT64: return "float64";
    case PTE_FLOAT16: return "float16";
    case PTE_BFLOAT16: return "bfloat16";
    case PTE_INT32: return "int32";
    case PTE_INT64: return "int64";
    case PTE_BOOL: return "bool";
  }
  return "unknown";
}

// PTE_VERSION comes from paddle_te/_version.py through the build (CMakeLists.txt).
const char* pte_version(void) { return PTE_VERSION; }

}  // extern "C"
