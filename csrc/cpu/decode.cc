// CPU reference kernel of decode_attn (SPEC §10): check the values of cache_seqlens and
// block_table, append k_new / v_new in place, then attend with float64 accumulation.
// Storage types float32, float64, and float16 / bfloat16 (converted element by element, so the
// in-place append writes the cache's own dtype and no cast copy of the cache is ever made).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/decode_problem.h"
#include "core/error.h"
#include "cpu/cpu_common.h"

namespace pte {
namespace cpu {
namespace {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline double load(const float* p) { return *p; }
inline double load(const double* p) { return *p; }
inline double load(const BFloat16* p) { return bits_float(uint32_t(p->bits) << 16); }
inline double load(const Half* p) {
  const uint32_t h = p->bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (man << 13));
  // Subnormal (or zero): man * 2^-24.
  const double v = std::ldexp(double(man), -24);
  return sign ? -v : v;
}

inline void store(float* p, double v) { *p = float(v); }
inline void store(double* p, double v) { *p = v; }
inline void store(BFloat16* p, double v) {
  const float f = float(v);
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a quiet NaN
    p->bits = uint16_t((u >> 16) | 0x40);
    return;
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  p->bits = uint16_t(u >> 16);
}
inline void store(Half* p, double v) {
  // Round-to-nearest-even float -> half through float's bit pattern.
  const float f = float(v);
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) {
    p->bits = uint16_t(sign | 0x7e00u);
    return;
  }
  if (abs >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
    p->bits = uint16_t(sign | 0x7c00u);
    return;
  }
  if (abs < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
    const float m = bits_float(abs) * 16777216.0f;  // * 2^24: exact, then round to integer
    p->bits = uint16_t(sign | uint32_t(std::nearbyint(m)));
    return;
  }
  const uint32_t exp = ((abs >> 23) - 112) << 10;
  uint32_t man = abs & 0x7fffffu;
  uint32_t hb = exp | (man >> 13);
  const uint32_t rest = man & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (hb & 1u))) ++hb;  // carries into the exponent
  p->bits = uint16_t(sign | hb);
}

template <typename T>
T* at(void* base, const Strides& st, int64_t b, int64_t s, int64_t h) {
  return static_cast<T*>(base) + b * st.batch + s * st.seq + h * st.head;
}
template <typename T>
const T* at(const void* base, const Strides& st, int64_t b, int64_t s, int64_t h) {
  return static_cast<const T*>(base) + b * st.batch + s * st.seq + h * st.head;
}

// Every value a sequence's keys depend on, checked before anything is written.
void check_values(const DecodeProblem& p) {
  const int64_t added = p.k_new != nullptr ? p.s_q : 0;
  for (int64_t bi = 0; bi < p.b; ++bi) {
    const int64_t len = p.cache_seqlens[bi];
    PTE_CHECK(len >= 0, "cache_seqlens[", bi, "]=", len, ": must be >= 0");
    PTE_CHECK(len + added <= p.capacity, "cache_seqlens[", bi, "]=", len,
              added ? str(" + s_q=", added) : std::string(),
              ": cache overflow, the cache holds ", p.capacity, " positions per sequence",
              p.paged ? str(" (pages_per_seq=", p.pages_per_seq, " x page_size=", p.page_size, ")")
                      : str(" (s_max=", p.capacity, ")"));
    if (p.paged) {
      const int64_t used = (len + added + p.page_size - 1) / p.page_size;
      for (int64_t pg = 0; pg < used; ++pg) {
        const int64_t page = p.block_table[bi * p.pages_per_seq + pg];
        PTE_CHECK(page >= 0 && page < p.num_pages, "block_table[", bi, ", ", pg, "]=", page,
                  ": page index out of range [0, ", p.num_pages, ")");
      }
    }
  }
}

// (page or batch, row) of position `pos` of sequence bi.
inline void locate(const DecodeProblem& p, int64_t bi, int64_t pos, int64_t* slab, int64_t* row) {
  if (p.paged) {
    *slab = p.block_table[bi * p.pages_per_seq + pos / p.page_size];
    *row = pos % p.page_size;
  } else {
    *slab = bi;
    *row = pos;
  }
}

template <typename T>
void append(const DecodeProblem& p) {
  for (int64_t bi = 0; bi < p.b; ++bi) {
    const int64_t len = p.cache_seqlens[bi];
    for (int64_t i = 0; i < p.s_q; ++i) {
      int64_t slab, row;
      locate(p, bi, len + i, &slab, &row);
      for (int64_t hk = 0; hk < p.h_kv; ++hk) {
        std::memcpy(at<T>(p.k_cache, p.kc_st, slab, row, hk), at<T>(p.k_new, p.kn_st, bi, i, hk),
                    sizeof(T) * p.d);
        std::memcpy(at<T>(p.v_cache, p.vc_st, slab, row, hk), at<T>(p.v_new, p.vn_st, bi, i, hk),
                    sizeof(T) * p.d_v);
      }
    }
  }
}

template <typename T>
void attend(const DecodeProblem& p) {
  const int64_t group = p.h / p.h_kv;
  const int64_t rows = p.b * p.h * p.s_q;
  const int64_t n_max = p.capacity;
  const double work = double(rows) * double(n_max) * double(p.d + p.d_v);
#pragma omp parallel num_threads(threads_for(work))
  {
    std::vector<double> score(size_t(n_max) + 1), acc(size_t(p.d_v)), qrow(size_t(p.d));
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t bi = r / (p.h * p.s_q);
      const int64_t hi = (r / p.s_q) % p.h;
      const int64_t i = r % p.s_q;
      const int64_t hk = hi / group;
      const int64_t n = int64_t(p.cache_seqlens[bi]) + (p.k_new != nullptr ? p.s_q : 0);
      // Visible keys [lo, hi] (bottom-right causal with an optional left window).
      const int64_t last = n - p.s_q + i;
      int64_t lo = p.window_left < 0 ? 0 : last - p.window_left;
      if (lo < 0) lo = 0;
      const int64_t hi_k = last < n - 1 ? last : n - 1;
      T* o = at<T>(p.out, p.out_st, bi, i, hi);
      float* lse = p.lse != nullptr ? p.lse + (bi * p.h + hi) * p.s_q + i : nullptr;
      if (lo > hi_k) {
        for (int64_t e = 0; e < p.d_v; ++e) store(o + e, 0.0);
        if (lse != nullptr) *lse = -std::numeric_limits<float>::infinity();
        continue;
      }
      const T* qp = at<T>(p.q, p.q_st, bi, i, hi);
      for (int64_t e = 0; e < p.d; ++e) qrow[e] = load(qp + e);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = lo; j <= hi_k; ++j) {
        int64_t slab, row;
        locate(p, bi, j, &slab, &row);
        const T* kp = at<T>(p.k_cache, p.kc_st, slab, row, hk);
        double s = 0;
        for (int64_t e = 0; e < p.d; ++e) s += qrow[e] * load(kp + e);
        s *= p.scale;
        score[j - lo] = s;
        mx = s > mx ? s : mx;
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = lo; j <= hi_k; ++j) {
        const double w = std::exp(score[j - lo] - mx);
        sum += w;
        int64_t slab, row;
        locate(p, bi, j, &slab, &row);
        const T* vp = at<T>(p.v_cache, p.vc_st, slab, row, hk);
        for (int64_t e = 0; e < p.d_v; ++e) acc[e] += w * load(vp + e);
      }
      for (int64_t e = 0; e < p.d_v; ++e) store(o + e, acc[e] / sum);
      if (lse != nullptr) *lse = float(mx + std::log(sum));
    }
  }
}

template <typename T>
void run(const DecodeProblem& p) {
  check_values(p);
  if (p.k_new != nullptr) append<T>(p);
  attend<T>(p);
}

}  // namespace

void decode_attn(const DecodeProblem& p) {
  switch (p.dtype) {
    case PTE_FLOAT32:
      return run<float>(p);
    case PTE_FLOAT64:
      return run<double>(p);
    case PTE_FLOAT16:
      return run<Half>(p);
    case PTE_BFLOAT16:
      return run<BFloat16>(p);
    default:
      PTE_CHECK(false, "q has dtype ", pte_dtype_name(p.dtype),
                ": the CPU decode kernel takes float32, float64, float16, bfloat16");
  }
}

}  // namespace cpu
}  // namespace pte
