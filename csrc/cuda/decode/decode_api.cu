// Host side of the CUDA decode kernels: what they can run (decode_check), which attention kernel
// and how many rows per block (plan), how many splits (from shapes and the device only, never
// from cache_seqlens), workspace, and the launch.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "core/decode_problem.h"
#include "core/kernels.h"
#include "cuda/common.cuh"
#include "cuda/decode/decode.cuh"

namespace pte {
namespace cuda {
namespace {

using decode::Kernel;
using decode::Plan;

constexpr int kMinArch = 80;
constexpr int kSm90 = 90;  // programmatic dependent launch; the deep pipeline's shared memory
constexpr int kMaxGridYZ = 65535;
constexpr int kVecElems = 8;  // one 16-byte load of fp16/bf16

// Splits of the CUDA-core kernel: aim for this many blocks per SM (several resident blocks keep
// enough loads in flight to saturate HBM), with at least kMinKeysPerSplit positions of capacity
// per split.
constexpr int kTargetBlocksPerSm = 4;
constexpr int kMinKeysPerSplit = 32;  // short caches (latency case) still spread over many SMs
constexpr int kMaxAutoSplits = 64;

// Splits of the tensor-core kernel (mma_splits below): up to kMmaMaxAutoSplits (b = 1 with one kv
// head still fills the SMs: 128 x 1k keys of a 128k cache), each with at least kMmaMinSplitTiles
// key tiles of capacity, the fewest whose efficiency is within kMmaWaveSlack of the best. The
// slack is tight: 0.95 gives up at most 5 % of the streaming time to save splits (each costs a
// partial-output row per query row and a longer combine).
constexpr int kMmaMaxAutoSplits = 128;
constexpr int kMmaMinSplitTiles = 2;
constexpr double kMmaWaveSlack = 0.95;
constexpr int kSmemPerBlockReserved = 1024;  // the runtime's own shared memory per block (sm_80+)
constexpr int kMaxThreadsPerSm = 2048;        // sm_80 / sm_90 (fewer on sm_86/89: a bound only)

// PTE_DECODE_KERNEL=auto|simt|mma chooses the attention kernel (benchmarks and tests run both).
enum class Requested { kAuto, kSimt, kMma, kInvalid };

Requested requested_kernel() {
  const int c = cuda::env_choice("PTE_DECODE_KERNEL", "simt", "mma");
  return c < 0 ? Requested::kInvalid : Requested(c);
}

// PTE_DECODE_PIPELINE=auto|shallow|deep: the tensor-core kernel's K/V pipeline (MmaConfig in
// decode_mma.cuh). auto is shallow (mma_deep below); deep is for benchmarks and tests, which
// compare the two.
enum class Pipeline { kAuto, kShallow, kDeep, kInvalid };

Pipeline requested_pipeline() {
  const int c = cuda::env_choice("PTE_DECODE_PIPELINE", "shallow", "deep");
  return c < 0 ? Pipeline::kInvalid : Pipeline(c);
}

// PTE_DECODE_PDL=0 launches the combine plainly on sm_90 too (benchmarks measure what the
// programmatic dependent launch saves; tests compare the two); unset or 1: dependent launch.
bool pdl_enabled(int device_id) {
  const char* v = std::getenv("PTE_DECODE_PDL");
  return device_arch(device_id) >= kSm90 && (v == nullptr || std::strcmp(v, "0") != 0);
}

// PTE_DECODE_FASTCOPY=0 sends every tile of the tensor-core kernel through the resolving copy
// path (benchmarks measure what the fast copies save; tests run both); unset or 1: fast copies.
bool fast_copy_enabled() {
  const char* v = std::getenv("PTE_DECODE_FASTCOPY");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

int64_t group_rows(const DecodeProblem& p) { return (p.h / p.h_kv) * p.s_q; }

template <bool Deep>
int mma_smem_of(int64_t d, int tiles) {
  using E = __half;  // 2 bytes, as __nv_bfloat16
  switch (d) {
    case 64: return tiles == 1 ? decode::MmaConfig<64, 1, Deep>::template smem_bytes<E>()
                               : decode::MmaConfig<64, 2, Deep>::template smem_bytes<E>();
    case 128: return tiles == 1 ? decode::MmaConfig<128, 1, Deep>::template smem_bytes<E>()
                                : decode::MmaConfig<128, 2, Deep>::template smem_bytes<E>();
    case 256: return decode::MmaConfig<256, 1, Deep>::template smem_bytes<E>();
    default: return INT_MAX;
  }
}

// Dynamic shared memory of the tensor-core kernel for head dim d, `tiles` m16 tiles and the
// pipeline (deep or shallow).
int mma_smem(int64_t d, int tiles, bool deep) {
  return deep ? mma_smem_of<true>(d, tiles) : mma_smem_of<false>(d, tiles);
}

int mma_tiles(const DecodeProblem& p) {
  return decode::mma_tiles(int(std::min<int64_t>(group_rows(p), INT_MAX)), int(p.d));
}

bool mma_fits(const DecodeProblem& p, bool deep) {
  return mma_smem(p.d, mma_tiles(p), deep) <= max_smem_optin(p.device_id);
}

// The deep pipeline only where asked for (PTE_DECODE_PIPELINE=deep). Measured on the H200
// (2026-12-04, bench_decode.py, d = 128): one deep block per SM (6 stages, 209 KB) reached
// η 0.39-0.52 where two shallow blocks per SM reached 0.58-0.81 on the same cases: the second
// block's warps, not more bytes per block, keep the loads coming.
bool mma_deep(const DecodeProblem& p) {
  return requested_pipeline() == Pipeline::kDeep && mma_fits(p, true);
}

// The attention kernel and its rows per block. auto: the tensor-core kernel wherever its shared
// memory fits (every sm_80/sm_90 part; not the 99 KB of sm_86/sm_89 at d >= 128). It does the
// same arithmetic per key for 1 row as for 16, well under the bandwidth budget either way, and
// keeps 2-3 tiles of K/V in flight per block where the CUDA-core kernel issues two key steps;
// the CUDA-core kernel stays selectable (PTE_DECODE_KERNEL=simt) for comparison. On sm_90
// either kernel's combine is a programmatic dependent launch (pdl_enabled).
Plan plan(const DecodeProblem& p) {
  const Requested req = requested_kernel();
  const bool pdl = pdl_enabled(p.device_id);
  if (req == Requested::kMma || (req == Requested::kAuto && mma_fits(p, false)))
    return {Kernel::kMma, 16 * mma_tiles(p), mma_deep(p), pdl};
  return {Kernel::kSimt, decode::rows_per_block(int(std::min<int64_t>(group_rows(p), INT_MAX))),
          false, pdl};
}

bool vec_ok(const void* p, const Strides& st) {
  return is_aligned(p, 16) && st.batch % kVecElems == 0 && st.seq % kVecElems == 0 &&
         st.head % kVecElems == 0;
}

int64_t row_chunks(const DecodeProblem& p, const Plan& pl) {
  return (group_rows(p) + pl.tile_rows - 1) / pl.tile_rows;
}

template <typename T>
decode::Args<T> make_args(const DecodeProblem& p, const Plan& pl) {
  decode::Args<T> a{};
  a.q = static_cast<const T*>(p.q);
  a.k_cache = static_cast<T*>(p.k_cache);
  a.v_cache = static_cast<T*>(p.v_cache);
  a.k_new = static_cast<const T*>(p.k_new);
  a.v_new = static_cast<const T*>(p.v_new);
  a.out = static_cast<T*>(p.out);
  a.lse = p.lse;
  a.q_st = p.q_st;
  a.kc_st = p.kc_st;
  a.vc_st = p.vc_st;
  a.kn_st = p.kn_st;
  a.vn_st = p.vn_st;
  a.out_st = p.out_st;
  a.cache_seqlens = p.cache_seqlens;
  a.block_table = p.block_table;
  a.b = int(p.b);
  a.s_q = int(p.s_q);
  a.h = int(p.h);
  a.h_kv = int(p.h_kv);
  a.group = int(p.h / p.h_kv);
  a.rows = a.group * a.s_q;
  a.row_chunks = int(row_chunks(p, pl));
  a.d = int(p.d);
  a.d_v = int(p.d_v);
  a.capacity = int(p.capacity);
  a.page_size = int(p.page_size);
  a.num_pages = int(p.num_pages);
  a.pages_per_seq = int(p.pages_per_seq);
  a.appended = p.k_new != nullptr ? int(p.s_q) : 0;
  // A window at least the capacity is unbounded; keeping it bounded by the capacity also keeps
  // `last - window_left` in the kernel far from int overflow.
  a.window_left = (p.window_left < 0 || p.window_left >= p.capacity) ? -1 : int(p.window_left);
  a.num_splits = p.num_splits;
  a.scale_log2 = float(p.scale * double(decode::kLog2e));
  a.fast_copy = fast_copy_enabled();
  if (p.num_splits > 1) {
    const int64_t rows_total = p.b * p.h * p.s_q;
    float* ws = static_cast<float*>(p.workspace);
    a.part_o = ws;
    a.part_lse = ws + int64_t(p.num_splits) * rows_total * p.d_v;
  }
  return a;
}

}  // namespace

const char* decode_check(const DecodeProblem& p) {
  if (p.dtype != PTE_FLOAT16 && p.dtype != PTE_BFLOAT16)
    return "the CUDA decode kernels take float16 or bfloat16";
  if (device_arch(p.device_id) < kMinArch) return "the CUDA decode kernels need sm_80 or newer";
  if (p.d != 64 && p.d != 128 && p.d != 256) return "head dim must be 64, 128 or 256 on the GPU";
  if (p.d_v != p.d) return "v's head dim must equal q's on the GPU";
  if (p.b > kMaxGridYZ) return "batch must be <= 65535 on the GPU";
  if (p.h_kv > kMaxGridYZ) return "kv heads must be <= 65535 on the GPU";
  if (p.capacity >= INT_MAX || p.b * p.h * p.s_q >= INT_MAX || p.num_pages >= INT_MAX)
    return "cache capacity, pages and b*h*s_q must each be < 2^31 on the GPU";
  if (!vec_ok(p.q, p.q_st) || !vec_ok(p.k_cache, p.kc_st) || !vec_ok(p.v_cache, p.vc_st))
    return "q, k_cache and v_cache need 16-byte aligned rows (pointers and strides multiples of "
           "8 elements)";
  if (p.k_new != nullptr && (!vec_ok(p.k_new, p.kn_st) || !vec_ok(p.v_new, p.vn_st)))
    return "k_new and v_new need 16-byte aligned rows (pointers and strides multiples of 8 "
           "elements)";
  const Requested req = requested_kernel();
  if (req == Requested::kInvalid)
    return "PTE_DECODE_KERNEL must be auto, simt or mma (the environment variable that picks "
           "the decode kernel)";
  if (req == Requested::kMma && !mma_fits(p, false))
    return "PTE_DECODE_KERNEL=mma: the tensor-core decode kernel needs more shared memory for "
           "this head dim than the device allows per block (use auto or simt)";
  const Pipeline pipe = requested_pipeline();
  if (pipe == Pipeline::kInvalid)
    return "PTE_DECODE_PIPELINE must be auto, shallow or deep (the environment variable that "
           "picks the tensor-core decode kernel's K/V pipeline)";
  if (pipe == Pipeline::kDeep && req != Requested::kSimt && mma_fits(p, false) &&
      !mma_fits(p, true))
    return "PTE_DECODE_PIPELINE=deep: the deep K/V pipeline needs more shared memory than the "
           "device allows per block (sm_90's 227 KB; use auto or shallow)";
  return "";
}

namespace {

int32_t simt_splits(const DecodeProblem& p, const Plan& pl) {
  const int64_t base = p.b * p.h_kv * row_chunks(p, pl);
  if (base == 0) return 1;
  const int64_t target = int64_t(kTargetBlocksPerSm) * cuda::sm_count(p.device_id);
  int64_t splits = (target + base - 1) / base;
  const int64_t by_len = p.capacity / kMinKeysPerSplit;
  if (splits > by_len) splits = by_len;
  if (splits > kMaxAutoSplits) splits = kMaxAutoSplits;
  return int32_t(splits < 1 ? 1 : splits);
}

// Tensor-core kernel. Blocks are heavy (several K/V tiles of 18-66 KB in flight each), so the
// grid is sized in resident-block slots: SMs x the blocks that fit an SM (shallow d 128: 132 x 2;
// deep d 128: 132 x 1, one block owns an SM's shared memory). A split count s gives base * s
// blocks of ceil(tiles / s) key tiles each (tiles: the capacity in 64-key tiles), run in
// ceil(base * s / slots) waves, so the streaming time is waves x tiles per split; the best
// possible is base x tiles / slots, and their ratio is the efficiency. It counts both the idle
// slots of a last partial wave and the rounding of a split to whole tiles (16k keys over 8 kv
// heads, deep: 16 splits of 16 tiles fill 128 of 132 SMs, 17 would start a second wave).
//
// A split gets at least kMmaMinSplitTiles tiles of capacity. Short caches are latency-bound, not
// bandwidth-bound: a block issues its first kStages - 1 tiles before it waits on any, so a
// split of 2 tiles costs the same one memory round trip as a split of 1, while 1-tile splits
// double the blocks, the partial rows written and the combine's reads. Beyond 2, a split would
// start to wait on its own SM's load rate (a tile is 34 KB at d 128). The latency case (b = 1,
// 1k keys, 4 kv heads) so takes 8 splits of 2 tiles (32 blocks), not 16 of one; the one
// combine launch behind it overlaps the attention on sm_90 (programmatic dependent launch).
int32_t mma_splits(const DecodeProblem& p, const Plan& pl) {
  const int64_t base = p.b * p.h_kv * row_chunks(p, pl);
  if (base == 0) return 1;
  const int smem = mma_smem(p.d, pl.tile_rows / 16, pl.deep) + kSmemPerBlockReserved;
  const int per_sm =
      std::max(1, std::min(smem_per_sm(p.device_id) / smem, kMaxThreadsPerSm / decode::kThreads));
  const int64_t slots = int64_t(sm_count(p.device_id)) * per_sm;
  constexpr int64_t kTileKeys = decode::MmaConfig<64, 1>::BN;  // the same for every config
  const int64_t tiles = std::max<int64_t>(1, (p.capacity + kTileKeys - 1) / kTileKeys);
  const int64_t by_len = (tiles + kMmaMinSplitTiles - 1) / kMmaMinSplitTiles;
  const int64_t max_splits = std::max<int64_t>(1, std::min<int64_t>(kMmaMaxAutoSplits, by_len));
  auto efficiency = [&](int64_t s) {
    const double ideal = double(base) * double(tiles) / double(slots);
    const int64_t waves = (base * s + slots - 1) / slots;
    const int64_t per_split = (tiles + s - 1) / s;
    return ideal / double(waves * per_split);
  };
  double best = 0.0;
  for (int64_t s = 1; s <= max_splits; ++s) best = std::max(best, efficiency(s));
  for (int64_t s = 1; s <= max_splits; ++s)
    if (efficiency(s) >= kMmaWaveSlack * best) return int32_t(s);
  return 1;
}

}  // namespace

int32_t decode_num_splits(const DecodeProblem& p) {
  if (p.num_splits > 0) return p.num_splits;
  const Plan pl = plan(p);
  return pl.kernel == Kernel::kMma ? mma_splits(p, pl) : simt_splits(p, pl);
}

size_t decode_workspace_size(const DecodeProblem& p, int32_t num_splits) {
  if (num_splits <= 1) return 0;
  const size_t rows_total = size_t(p.b * p.h * p.s_q);
  return size_t(num_splits) * rows_total * (size_t(p.d_v) + 1) * sizeof(float);
}

void decode_attn(const DecodeProblem& p) {
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  if (p.b == 0) return;
  const Plan pl = plan(p);
  PTE_CHECK(p.num_splits <= 1 || is_aligned(p.workspace, 16), "workspace: must be 16-byte aligned");
  if (p.dtype == PTE_FLOAT16) {
    decode::launch_fp16(make_args<__half>(p, pl), pl, stream);
  } else if (p.dtype == PTE_BFLOAT16) {
    decode::launch_bf16(make_args<__nv_bfloat16>(p, pl), pl, stream);
  } else {
    PTE_CHECK(false, "q has dtype ", pte_dtype_name(p.dtype),
              ": the CUDA decode kernels take float16 or bfloat16");
  }
}

}  // namespace cuda
}  // namespace pte
