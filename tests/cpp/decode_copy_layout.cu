// The tensor-core decode kernel's tile copy bookkeeping, checked on the host (built and run by
// tests/test_decode_layout.py with nvcc): the paged fast path's PageWalk against a division per
// pass, and the bad-page flags written from per-pass ballots (CopyLayout::pass_bad_bits) against
// the per-row decoding of compute_tile (CopyLayout::bad_bit_of_row) and the resolving path's lane
// layout, for every warp, pass and tile row at d = 64, 128 and 256.
#include <cstdint>
#include <cstdio>
#include <random>

#include "cuda/decode/decode_args.cuh"

using pte::cuda::decode::CopyLayout;
using pte::cuda::decode::PageWalk;

static int failures = 0;

#define EXPECT(cond, ...)            \
  do {                               \
    if (!(cond)) {                   \
      if (failures++ < 20) {         \
        std::printf(__VA_ARGS__);    \
        std::printf("\n");           \
      }                              \
    }                                \
  } while (0)

template <int D>
void check_layout(std::mt19937& rng) {
  constexpr int kChunks = D / 8, kRpw = 32 / kChunks, BN = 64;
  using L = CopyLayout<kRpw, kChunks>;
  constexpr int kPasses = BN / L::kRowsPerPass;
  long checked = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    bool bad[BN];
    const int density = trial % 5;  // none, some, many, all, one
    for (int r = 0; r < BN; ++r)
      bad[r] = density == 0 ? false : density == 3 ? true : density == 4 ? r == trial % BN
                                                                       : (rng() % 4) < unsigned(density);
    // The fast path: per warp, per pass, a ballot of the lanes' rows.
    uint32_t word_fast[4] = {0, 0, 0, 0}, word_resolve[4] = {0, 0, 0, 0};
    for (int w = 0; w < 4; ++w)
      for (int p = 0; p < kPasses; ++p) {
        uint32_t ballot = 0;
        for (int lane = 0; lane < 32; ++lane) {
          const int row = p * L::kRowsPerPass + w * kRpw + lane / kChunks;
          if (bad[row]) ballot |= 1u << lane;
        }
        word_fast[w] |= L::pass_bad_bits(ballot, p);
        // The resolving path: lane L' = p * kRpw + q resolves row p * kRowsPerPass + w * kRpw + q
        // and the warp's ballot sets bit L'.
        for (int q = 0; q < kRpw; ++q)
          if (bad[p * L::kRowsPerPass + w * kRpw + q]) word_resolve[w] |= 1u << (p * kRpw + q);
      }
    for (int w = 0; w < 4; ++w)
      EXPECT(word_fast[w] == word_resolve[w], "d=%d warp %d: fast %08x resolving %08x", D, w,
             word_fast[w], word_resolve[w]);
    // compute_tile's reading of the words, row by row.
    for (int kl = 0; kl < BN; ++kl) {
      int w, bit;
      L::bad_bit_of_row(kl, &w, &bit);
      EXPECT(w >= 0 && w < 4 && bit >= 0 && bit < 32, "d=%d row %d: warp %d bit %d", D, kl, w, bit);
      EXPECT(bool((word_fast[w] >> bit) & 1u) == bad[kl], "d=%d row %d read back wrong", D, kl);
      ++checked;
    }
  }
  std::printf("d=%d: %ld row flags checked\n", D, checked);
}

void check_walk() {
  long checked = 0;
  for (int page_size = 1; page_size <= 256; ++page_size)
    for (int step : {4, 8, 16}) {
      if (step > page_size) continue;  // the fast path needs page_size >= kRowsPerPass
      for (int pos0 = 0; pos0 < 3 * page_size + 70; pos0 += (page_size > 64 ? 7 : 1)) {
        PageWalk walk(pos0, page_size);
        for (int p = 0; p < 16; ++p) {
          const int pos = pos0 + p * step;
          EXPECT(walk.slot == pos / page_size && walk.row == pos % page_size,
                 "page_size %d step %d pos %d: slot %d row %d", page_size, step, pos, walk.slot,
                 walk.row);
          walk.advance(step, page_size);
          ++checked;
        }
      }
    }
  std::printf("page walk: %ld positions checked\n", checked);
}

int main() {
  std::mt19937 rng(7);
  check_layout<64>(rng);
  check_layout<128>(rng);
  check_layout<256>(rng);
  check_walk();
  if (failures) std::printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
