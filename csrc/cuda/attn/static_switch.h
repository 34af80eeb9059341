// The one compile-time switch of the kernel launchers: a runtime flag picks a kernel template
// argument. bool_switch(flag, f) calls f(std::true_type{}) or f(std::false_type{}), so inside f
// `decltype(tag)::value` is a constant expression and each branch instantiates its own kernel:
//
//   bool_switch(p.dropout > 0.f, [&](auto drop) {
//     launch<Cfg, T, decltype(drop)::value>(p, stream);
//   });
//
// Nested calls cover several flags; every combination is compiled, so keep the flags to those
// that change the kernel's code (dropout, atomic dQ), not its sizes.
#pragma once

#include <type_traits>
#include <utility>

namespace pte {
namespace flash {

template <typename F>
decltype(auto) bool_switch(bool flag, F&& f) {
  if (flag) return std::forward<F>(f)(std::true_type{});
  return std::forward<F>(f)(std::false_type{});
}

}  // namespace flash
}  // namespace pte
