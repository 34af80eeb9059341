// Host-side check of the sm90 backward's register-to-shared-memory addressing (CuTe layouts are
// plain integer functions, evaluated here on the CPU; no GPU involved). Built and run by
// tests/test_sm90_layouts.py with nvcc where nvcc is found.
//
// For every consumer thread of BwdTraits<D, T>, it checks what bwd_kernel.h relies on:
//  * the offset-swizzled views of dS^T and dQ (as_position_independent_swizzle_tensor) put every
//    element exactly where CuTe's address-swizzled views put it (the mapping the GPU tests
//    validated before the stores were rewritten);
//  * the element pairs (2k, 2k + 1) the kernel stores as one 32-bit (dS) or 64-bit (dQ) word are
//    adjacent in memory and aligned to the word;
//  * the S^T fragment's element i is (key frag_row(i), query q0 + 8 (i / 4) + i % 2), which the
//    float2 loads of lse and Dsum assume;
//  * the dK/dV epilogue's staging in shared memory is bank-conflict free on both sides.
// Exit status 0 when every check holds; the first failures are printed.
#define NDEBUG 1
#include <cstdint>
#include <cstdio>

#include "cuda/attn/sm90/traits.h"

using namespace cute;

static int g_failures = 0;

#define CHECK(cond, ...)                          \
  do {                                            \
    if (!(cond)) {                                \
      if (g_failures < 10) {                      \
        std::printf("FAILED %s: ", #cond);        \
        std::printf(__VA_ARGS__);                 \
        std::printf("\n");                        \
      }                                           \
      ++g_failures;                               \
    }                                             \
  } while (0)

// One thread's stores of one tile: the offset-swizzled view (by_off) puts every element where
// the address-swizzled one (by_addr) does, and element pairs (2k, 2k + 1) are adjacent and
// aligned to the pair.
template <class E, class TA, class TO>
void check_stores(const char* name, const char* what, int tidx, const E* buf, TA&& by_addr,
                  TO&& by_off, int* checked) {
  static_assert(decltype(size(by_addr))::value == decltype(size(by_off))::value, "");
  for (int i = 0; i < size(by_off); ++i) {
    const E* a = &by_addr(i);
    const E* o = &by_off(i);
    CHECK(a == o, "%s %s thread %d element %d: %td vs %td", name, what, tidx, i, a - buf, o - buf);
    if (i % 2 == 0) {
      CHECK(&by_off(i + 1) == o + 1, "%s %s pair thread %d element %d", name, what, tidx, i);
      CHECK(reinterpret_cast<uintptr_t>(o) % (2 * sizeof(E)) == 0,
            "%s %s alignment thread %d element %d", name, what, tidx, i);
    }
    ++*checked;
  }
}

template <class Traits>
void check(const char* name) {
  using Element = typename Traits::Element;
  constexpr int BM = Traits::BM, BN = Traits::BN, D = Traits::D;
  // 1024-byte aligned stand-ins for the shared-memory buffers (the swizzle's period).
  alignas(1024) static Element ds_buf[cosize_v<typename Traits::SmemLayoutDS>];
  alignas(1024) static float dq_buf[cosize_v<typename Traits::SmemLayoutDQ>];
  typename Traits::MmaSdP mma_sdp;
  typename Traits::MmaDQ mma_dq;
  int checked = 0;
  for (int tidx = 0; tidx < Traits::kConsumerThreads; ++tidx) {
    auto thr_sdp = mma_sdp.get_thread_slice(tidx);
    auto thr_dq = mma_dq.get_thread_slice(tidx);
    Tensor sdSt = make_tensor(make_smem_ptr(ds_buf), typename Traits::SmemLayoutDSt{});
    Tensor sdQ = make_tensor(make_smem_ptr(dq_buf), typename Traits::SmemLayoutDQ{});
    check_stores(name, "dS", tidx, ds_buf, thr_sdp.partition_C(sdSt),
                 thr_sdp.partition_C(as_position_independent_swizzle_tensor(sdSt)), &checked);
    check_stores(name, "dQ", tidx, dq_buf, thr_dq.partition_C(sdQ),
                 thr_dq.partition_C(as_position_independent_swizzle_tensor(sdQ)), &checked);
    Tensor tSc = thr_sdp.partition_C(make_identity_tensor(Shape<Int<BN>, Int<BM>>{}));
    const int q0 = get<1>(tSc(0));
    CHECK(q0 % 2 == 0, "%s thread %d: first query %d is odd", name, tidx, q0);
    for (int i = 0; i < size(tSc); ++i) {
      const int row = (i >> 1) & 1;  // frag_row (softmax.h)
      CHECK(get<1>(tSc(i)) == q0 + 8 * (i / 4) + i % 2, "%s thread %d element %d: query %d", name,
            tidx, i, int(get<1>(tSc(i))));
      CHECK(get<0>(tSc(i)) == get<0>(tSc(row * 2)), "%s thread %d element %d: key", name, tidx, i);
    }
  }
  // The dK/dV epilogue: fragment pairs are (key, col), (key, col + 1) with col even, and its
  // staging (row-major [BN][D], 16-byte chunks XOR-swizzled by row % 8) takes each warp's 32
  // pair writes in 32 different banks and each quarter warp's 8 chunk reads in different
  // 16-byte bank groups.
  typename Traits::MmaKV mma_kv;
  auto staged = [](int row, int chunk) { return row * D + ((chunk ^ (row % 8)) * 8); };
  for (int warp = 0; warp < Traits::kConsumerThreads / 32; ++warp) {
    for (int i = 0; i < 64; i += 2) {
      bool bank_used[32] = {};
      for (int lane = 0; lane < 32; ++lane) {
        auto thr = mma_kv.get_thread_slice(warp * 32 + lane);
        Tensor tKVc = thr.partition_C(make_identity_tensor(Shape<Int<BN>, Int<D>>{}));
        if (i >= size(tKVc)) break;
        const int row = get<0>(tKVc(i)), col = get<1>(tKVc(i));
        CHECK(get<0>(tKVc(i + 1)) == row && get<1>(tKVc(i + 1)) == col + 1 && col % 2 == 0,
              "%s dK/dV pair thread %d element %d", name, warp * 32 + lane, i);
        const int word = (staged(row, col / 8) + col % 8) * int(sizeof(Element)) / 4;
        CHECK(!bank_used[word % 32], "%s staging write conflict warp %d element %d", name, warp, i);
        bank_used[word % 32] = true;
        ++checked;
      }
    }
  }
  for (int first = 0; first < BN * D / 8; first += 8) {  // a quarter warp's reads
    bool group_used[8] = {};
    for (int c = first; c < first + 8; ++c) {
      const int row = c / (D / 8), chunk = c % (D / 8);
      const int group = (staged(row, chunk) * int(sizeof(Element)) / 16) % 8;
      CHECK(!group_used[group], "%s staging read conflict at chunk %d", name, c);
      group_used[group] = true;
    }
  }
  std::printf("%s: %d element addresses checked\n", name, checked);
}

int main() {
  using namespace pte::flash::sm90;
  check<BwdTraits<128, __nv_bfloat16>>("d128 bf16");
  check<BwdTraits<128, __half>>("d128 fp16");
  check<BwdTraits<64, __nv_bfloat16>>("d64 bf16");
  check<BwdTraits<64, __half>>("d64 fp16");
  if (g_failures) std::printf("%d failures\n", g_failures);
  return g_failures ? 1 : 0;
}
