// Entry points of the Hopper (sm_90a) flash kernels, declared for the arch-neutral dispatch
// (flash_api.cu); defined in launch_fwd.h and instantiated per (head dim, dtype) in sm90/inst/,
// which the build compiles for sm_90a only (group flash_sm90) and announces with PTE_FLASH_SM90.
#pragma once

#include "core/problem.h"

namespace pte {
namespace flash {
namespace sm90 {

// Head dims with an sm90 forward: a call with head dim d runs the smallest one >= d (TMA fills
// the columns past d with zeros).
constexpr int kFwdHdims[] = {64, 128, 192, 256};
// Where `auto` takes the sm90 forward: the head dims its GPU grid has run (64, 128; 2026-12-04,
// H200). 192 and 256 compile and run when forced (PTE_FLASH_VARIANT=sm90) until the grid covers
// them (the GPU build compiles PTE_HDIMS=64;128 by default).
constexpr bool fwd_preferred(int D) { return D <= 128; }

template <int D, typename T>
void run_fwd(const AttnProblem& p);

// Whether `auto` takes the sm90 kernels for FlashMask problems (startend_row_indices). They apply
// it (flashmask_walk.h) and passed all of tests/gpu/test_flashmask_gpu.py on an H200 (2026-12-04,
// test_long_skips included), and run 1.2-1.5x the sm80 family's rate (docs/performance.md).
constexpr bool kFlashMaskPreferred = true;

// The backward, both modes (`deterministic`: the dQ adds in ascending key block order, taken in
// turns; with FlashMask it runs the sm80 family). Its dQ accumulator has rows of D columns, so
// the dispatch uses it only where D is also the sm80 family's pick for d (launch.h's workspace
// size).
constexpr int kBwdHdims[] = {64, 128};
// Where `auto` takes the sm90 backward (in both modes): both head dims. Measured side by side on
// an H200 (2026-12-05, bench/bench_attention.py, docs/performance.md): at D = 128 0.85-0.98x
// cuDNN, at D = 64 0.86-1.0x cuDNN and 1.5-1.8x the sm80 backward (whose deterministic mode
// takes twice its default time; the sm90 one 1.1-1.6x).
constexpr bool bwd_preferred(int D) { return D <= 128; }
template <int D, typename T>
void run_bwd(const AttnProblem& p);

}  // namespace sm90
}  // namespace flash
}  // namespace pte
