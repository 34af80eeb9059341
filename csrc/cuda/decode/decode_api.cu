// Host side of the CUDA decode kernels: what they can run (decode_check), how many splits
// (from shapes and the device only, never from cache_seqlens), workspace, and the launch.
#include <climits>

#include "core/decode_problem.h"
#include "core/kernels.h"
#include "cuda/decode/decode.cuh"

namespace pte {
namespace cuda {
namespace {

constexpr int kMinArch = 80;
constexpr int kMaxGridYZ = 65535;
// Splits: aim for this many blocks per SM (several resident blocks keep enough loads in flight
// to saturate HBM), with at least kMinKeysPerSplit positions of capacity per split.
constexpr int kTargetBlocksPerSm = 4;
constexpr int kMinKeysPerSplit = 32;  // short caches (latency case) still spread over many SMs
constexpr int kMaxAutoSplits = 64;
constexpr int kVecElems = 8;  // one 16-byte load of fp16/bf16

bool vec_ok(const void* p, const Strides& st) {
  return is_aligned(p, 16) && st.batch % kVecElems == 0 && st.seq % kVecElems == 0 &&
         st.head % kVecElems == 0;
}

int64_t row_chunks(const DecodeProblem& p) {
  const int64_t rows = (p.h / p.h_kv) * p.s_q;
  const int64_t per = decode::rows_per_block(int(rows < INT_MAX ? rows : INT_MAX));
  return (rows + per - 1) / per;
}

template <typename T>
decode::Args<T> make_args(const DecodeProblem& p) {
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
  a.row_chunks = int(row_chunks(p));
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
  return "";
}

int32_t decode_num_splits(const DecodeProblem& p) {
  if (p.num_splits > 0) return p.num_splits;
  const int64_t base = p.b * p.h_kv * row_chunks(p);
  if (base == 0) return 1;
  const int64_t target = int64_t(kTargetBlocksPerSm) * cuda::sm_count(p.device_id);
  int64_t splits = (target + base - 1) / base;
  const int64_t by_len = p.capacity / kMinKeysPerSplit;
  if (splits > by_len) splits = by_len;
  if (splits > kMaxAutoSplits) splits = kMaxAutoSplits;
  return int32_t(splits < 1 ? 1 : splits);
}

size_t decode_workspace_size(const DecodeProblem& p, int32_t num_splits) {
  if (num_splits <= 1) return 0;
  const size_t rows_total = size_t(p.b * p.h * p.s_q);
  return size_t(num_splits) * rows_total * (size_t(p.d_v) + 1) * sizeof(float);
}

void decode_attn(const DecodeProblem& p) {
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const int rows_per = decode::rows_per_block(int((p.h / p.h_kv) * p.s_q));
  if (p.b == 0) return;
  if (p.dtype == PTE_FLOAT16) {
    decode::launch_fp16(make_args<__half>(p), rows_per, stream);
  } else if (p.dtype == PTE_BFLOAT16) {
    decode::launch_bf16(make_args<__nv_bfloat16>(p), rows_per, stream);
  } else {
    PTE_CHECK(false, "q has dtype ", pte_dtype_name(p.dtype),
              ": the CUDA decode kernels take float16 or bfloat16");
  }
}

}  // namespace cuda
}  // namespace pte
