// Errors inside the core are C++ exceptions carrying a status; the C API entry points catch
// them and turn them into a status code plus thread-local text (api_guard in api.cc).
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "paddle_te/common.h"

namespace pte {

class Error : public std::runtime_error {
 public:
  Error(pte_status_t status, const std::string& what) : std::runtime_error(what), status_(status) {}
  pte_status_t status() const { return status_; }

 private:
  pte_status_t status_;
};

namespace detail {
// Messages are built without iostreams: where the module is compiled by another GCC than the
// libstdc++ of the process that loads it, `ostream <<` of a number can crash in locale code
// (docs/performance.md, "Notes behind code comments"). std::to_string / snprintf do not touch
// locale facets.
inline void append_one(std::string& s, const std::string& v) { s += v; }
inline void append_one(std::string& s, const char* v) { s += v != nullptr ? v : "(null)"; }
inline void append_one(std::string& s, char v) { s += v; }
inline void append_one(std::string& s, bool v) { s += v ? "1" : "0"; }  // as ostream prints it
template <typename T>
void append_one(std::string& s, const T& v) {
  if constexpr (std::is_enum_v<T>) {
    s += std::to_string(static_cast<std::underlying_type_t<T>>(v));
  } else if constexpr (std::is_integral_v<T>) {
    s += std::to_string(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", double(v));  // ostream's default format
    s += buf;
  } else if constexpr (std::is_pointer_v<T>) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%p", static_cast<const void*>(v));
    s += buf;
  } else {
    s += std::string(std::string_view(v));
  }
}
}  // namespace detail

// Build a message from pieces: pte::str("head_dim=", d, ": must be <= 256").
template <typename... Args>
std::string str(const Args&... args) {
  std::string s;
  (detail::append_one(s, args), ...);
  return s;
}

}  // namespace pte

// PTE_CHECK(cond, "arg=", value, ": must be ...") throws INVALID_ARGUMENT with the message.
#define PTE_CHECK(cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) throw ::pte::Error(PTE_ERROR_INVALID_ARGUMENT, ::pte::str(__VA_ARGS__)); \
  } while (0)

#define PTE_UNSUPPORTED(...) throw ::pte::Error(PTE_ERROR_NOT_SUPPORTED, ::pte::str(__VA_ARGS__))
#define PTE_INTERNAL(...) throw ::pte::Error(PTE_ERROR_INTERNAL, ::pte::str(__VA_ARGS__))
