// CPU kernel of the lse merge (paddle_te/merge.h): one (batch, position, head) row at a time,
// float32 or float64 storage, the weights in double.
#include <cmath>
#include <limits>

#include "core/merge_problem.h"

namespace pte {
namespace cpu {
namespace {

template <typename Acc, typename Part>
void merge(const MergeProblem& p) {
  const int64_t rows = p.b * p.s * p.h;
  const double neg_inf = -std::numeric_limits<double>::infinity();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t hi = r % p.h, si = (r / p.h) % p.s, bi = r / (p.h * p.s);
    auto lse_at = [&](const MergeProblem::Lse& l) -> float* {
      return l.data + bi * l.sb + hi * l.sh + si * l.ss;
    };
    auto out_off = [&](const MergeProblem::Out& o) { return bi * o.sb + si * o.ss + hi * o.sh; };
    const Acc* oa = static_cast<const Acc*>(p.out_a.data) + out_off(p.out_a);
    const Part* ob = static_cast<const Part*>(p.out_b.data) + out_off(p.out_b);
    Acc* o = static_cast<Acc*>(p.out.data) + out_off(p.out);
    const double la = *lse_at(p.lse_a), lb = *lse_at(p.lse_b);
    const double m = la > lb ? la : lb;
    if (!(m > neg_inf)) {  // both parts saw no key (or an lse is NaN): SPEC §2's empty row
      for (int64_t j = 0; j < p.d; ++j) o[j] = Acc(0);
      *lse_at(p.lse) = -std::numeric_limits<float>::infinity();
      continue;
    }
    // A part with lse -inf has weight 0 and its output is not read (it may hold anything).
    const double wa = la > neg_inf ? std::exp(la - m) : 0.0;
    const double wb = lb > neg_inf ? std::exp(lb - m) : 0.0;
    const double sum = wa + wb;  // >= 1: the larger part has weight exp(0)
    const double ca = wa / sum, cb = wb / sum;
    for (int64_t j = 0; j < p.d; ++j) {
      double v = 0.0;
      if (wa > 0.0) v += ca * double(oa[j]);
      if (wb > 0.0) v += cb * double(ob[j]);
      o[j] = Acc(v);
    }
    *lse_at(p.lse) = float(m + std::log(sum));
  }
}

template <typename Acc>
void merge_part(const MergeProblem& p) {
  if (p.part_dtype == PTE_FLOAT64) {
    merge<Acc, double>(p);
  } else {
    merge<Acc, float>(p);
  }
}

}  // namespace

void attn_merge(const MergeProblem& p) {
  // api_merge.cc admits float32 and float64 only on the CPU.
  if (p.acc_dtype == PTE_FLOAT64) {
    merge_part<double>(p);
  } else {
    merge_part<float>(p);
  }
}

}  // namespace cpu
}  // namespace pte
