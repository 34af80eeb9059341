// Errors inside the core are C++ exceptions carrying a status; the C API entry points catch
// them and turn them into a status code plus thread-local text (api_guard in api.cc).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

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
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

// Build a message from pieces: pte::str("head_dim=", d, ": must be <= 256").
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

}  // namespace pte

// PTE_CHECK(cond, "arg=", value, ": must be ...") throws INVALID_ARGUMENT with the message.
#define PTE_CHECK(cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) throw ::pte::Error(PTE_ERROR_INVALID_ARGUMENT, ::pte::str(__VA_ARGS__)); \
  } while (0)

#define PTE_UNSUPPORTED(...) throw ::pte::Error(PTE_ERROR_NOT_SUPPORTED, ::pte::str(__VA_ARGS__))
#define PTE_INTERNAL(...) throw ::pte::Error(PTE_ERROR_INTERNAL, ::pte::str(__VA_ARGS__))
