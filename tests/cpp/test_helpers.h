// The helpers every C++ test shares: EXPECT (count the check, print the first failures, go on),
// the end-of-run summary, and for the C API tests a CPU pte_tensor_t over a host buffer, N(0, 1)
// data and the check of a bad call's status and message. Each test is one executable of one
// translation unit, so the counters live here.
#pragma once

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "paddle_te/paddle_te.h"

namespace pte_test {

inline int g_failures = 0;
inline int g_checks = 0;
// A kernel bug fails thousands of elements alike; the first few say all there is to say.
constexpr int kMaxPrinted = 40;

// Prints "<name>: N checks, M failures"; the exit code of main().
inline int summary(const char* name) {
  std::printf("%s: %d checks, %d failures\n", name, g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

// A contiguous (row-major) CPU tensor over `data`.
inline pte_tensor_t tensor(void* data, pte_dtype_t dt, std::vector<int64_t> shape) {
  pte_tensor_t t{};
  t.data = data;
  t.dtype = dt;
  t.ndim = int32_t(shape.size());
  int64_t stride = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    t.shape[i] = shape[i];
    t.strides[i] = stride;
    stride *= shape[i];
  }
  t.device = PTE_DEVICE_CPU;
  return t;
}

// n values from N(0, 1): unit scale, as STYLE habit 2 asks.
inline std::vector<double> randn(size_t n, std::mt19937& rng) {
  std::normal_distribution<double> dist;
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace pte_test

#define EXPECT(cond, ...)                                                   \
  do {                                                                      \
    ++pte_test::g_checks;                                                   \
    if (!(cond) && ++pte_test::g_failures <= pte_test::kMaxPrinted) {       \
      std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
      std::printf(__VA_ARGS__);                                             \
      std::printf("\n");                                                    \
    }                                                                       \
  } while (0)

namespace pte_test {

// A bad call: the status it must return and a part of the message it must leave (which names
// the argument). `what` labels the case in the failure text.
inline void expect_error(pte_status_t st, pte_status_t want, const char* part, const char* what) {
  EXPECT(st == want, "%s: status %d, want %d (%s)", what, int(st), int(want), pte_last_error());
  EXPECT(std::strstr(pte_last_error(), part) != nullptr, "%s: message '%s' lacks '%s'", what,
         pte_last_error(), part);
}

}  // namespace pte_test
