// Helpers shared by the C API entry points: the status guard and tensor checks.
#pragma once

#include <string>
#include <vector>

#include "core/error.h"
#include "paddle_te/common.h"

namespace pte {

// Record `msg` as the calling thread's last error.
void set_last_error(const std::string& msg);

// Run f; turn exceptions into a status code + last-error text. Nothing escapes the C boundary.
template <typename F>
pte_status_t api_guard(F&& f) {
  try {
    f();
    set_last_error("");
    return PTE_SUCCESS;
  } catch (const Error& e) {
    set_last_error(e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error("out of host memory");
    return PTE_ERROR_INTERNAL;
  } catch (const std::exception& e) {
    set_last_error(str("internal error: ", e.what()));
    return PTE_ERROR_INTERNAL;
  } catch (...) {
    set_last_error("internal error: unknown exception");
    return PTE_ERROR_INTERNAL;
  }
}

inline bool present(const pte_tensor_t& t) { return t.data != nullptr || t.ndim > 0; }

std::string shape_str(const pte_tensor_t& t);
std::string device_str(const pte_tensor_t& t);

// The argument checks every entry point shares. Each names the argument in its message.
void check_present(const pte_tensor_t& t, const char* name);
void check_ndim(const pte_tensor_t& t, const char* name, int ndim, const char* layout);
void check_shape(const pte_tensor_t& t, const char* name, const std::vector<int64_t>& shape,
                 const char* layout);
void check_dtype(const pte_tensor_t& t, const char* name, pte_dtype_t dtype);
void check_same_device(const pte_tensor_t& t, const char* name, const pte_tensor_t& ref,
                       const char* ref_name);
void check_contiguous(const pte_tensor_t& t, const char* name);
// Innermost dimension contiguous (stride 1) and non-negative strides.
void check_inner_contiguous(const pte_tensor_t& t, const char* name);
void check_data(const pte_tensor_t& t, const char* name);

}  // namespace pte
