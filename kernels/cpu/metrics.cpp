// CPU twin of the metric kernels (kernels/metrics.h): top-1 counting, parallel over rows.
#include "kernels/metrics.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/parallel.h"

namespace retort::kernels {

template <typename T>
void count_top1(const CpuContext& ctx, int64_t n, int64_t c, const T* logits, const int64_t* labels,
                int64_t* correct) {
  if (n < 0 || c < 0) {
    throw std::invalid_argument("count_top1: negative shape (" + std::to_string(n) + ", " +
                                std::to_string(c) + ")");
  }
  // Labels are checked before any counting, so a bad one leaves *correct untouched (and no
  // exception has to leave an OpenMP region).
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= c) {
      throw std::invalid_argument("count_top1: label " + std::to_string(labels[i]) + " of row " +
                                  std::to_string(i) + " is outside [0, " + std::to_string(c) + ")");
    }
  }
  int64_t count = 0;
#pragma omp parallel for schedule(static) reduction(+ : count) num_threads(cpu_threads(ctx, n* c))
  for (int64_t i = 0; i < n; ++i) {
    const T* row = logits + i * c;  // (c)
    const int64_t label = labels[i];
    const T target = row[label];
    if (std::isnan(target)) continue;
    bool first = true;
    for (int64_t j = 0; j < c && first; ++j) {
      if (row[j] > target || (j < label && row[j] == target)) first = false;
    }
    count += first ? 1 : 0;
  }
  *correct += count;
}

template void count_top1<float>(const CpuContext&, int64_t, int64_t, const float*, const int64_t*,
                                int64_t*);
template void count_top1<double>(const CpuContext&, int64_t, int64_t, const double*, const int64_t*,
                                 int64_t*);

}  // namespace retort::kernels
