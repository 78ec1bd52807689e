// CPU twin of softmax / log-softmax with temperature (kernels/softmax.h): one OpenMP task per row.
#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/parallel.h"

namespace retort::kernels {

template <typename T>
void softmax_forward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature, bool log,
                     const T* x, T* y) {
  const T inv_temperature = T(1) / temperature;
  // Rows are independent and each is reduced by one thread in index order, so the result does
  // not depend on the thread count.
  const int threads = cpu_threads(ctx, rows * cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x_row = x + r * cols;  // (cols)
    T* y_row = y + r * cols;        // (cols)
    T row_max = -std::numeric_limits<T>::infinity();
    for (int64_t c = 0; c < cols; ++c) row_max = std::max(row_max, x_row[c]);
    // z = (x - max) / T <= 0, so exp(z) <= 1 never overflows and the largest term is exactly 1.
    T sum = 0;
    if (log) {
      for (int64_t c = 0; c < cols; ++c) {
        const T z = (x_row[c] - row_max) * inv_temperature;
        y_row[c] = z;
        sum += std::exp(z);
      }
      const T log_sum = std::log(sum);
      for (int64_t c = 0; c < cols; ++c) y_row[c] -= log_sum;
    } else {
      for (int64_t c = 0; c < cols; ++c) {
        const T e = std::exp((x_row[c] - row_max) * inv_temperature);
        y_row[c] = e;
        sum += e;
      }
      const T inv_sum = T(1) / sum;
      for (int64_t c = 0; c < cols; ++c) y_row[c] *= inv_sum;
    }
  }
}

template <typename T>
void softmax_backward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature, bool log,
                      const T* y, const T* grad_y, T* grad_x) {
  const T inv_temperature = T(1) / temperature;
  const int threads = cpu_threads(ctx, rows * cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const T* y_row = y + r * cols;            // (cols)
    const T* grad_y_row = grad_y + r * cols;  // (cols)
    T* grad_x_row = grad_x + r * cols;        // (cols)
    if (log) {
      // y is log p: grad_x = (grad_y - p * sum(grad_y)) / T.
      T grad_sum = 0;
      for (int64_t c = 0; c < cols; ++c) grad_sum += grad_y_row[c];
      for (int64_t c = 0; c < cols; ++c) {
        grad_x_row[c] = (grad_y_row[c] - std::exp(y_row[c]) * grad_sum) * inv_temperature;
      }
    } else {
      // y is p: grad_x = p * (grad_y - <grad_y, p>) / T.
      T dot = 0;
      for (int64_t c = 0; c < cols; ++c) dot += grad_y_row[c] * y_row[c];
      for (int64_t c = 0; c < cols; ++c) {
        grad_x_row[c] = y_row[c] * (grad_y_row[c] - dot) * inv_temperature;
      }
    }
  }
}

template void softmax_forward<float>(const CpuContext&, int64_t, int64_t, float, bool, const float*,
                                     float*);
template void softmax_forward<double>(const CpuContext&, int64_t, int64_t, double, bool,
                                      const double*, double*);
template void softmax_backward<float>(const CpuContext&, int64_t, int64_t, float, bool,
                                      const float*, const float*, float*);
template void softmax_backward<double>(const CpuContext&, int64_t, int64_t, double, bool,
                                       const double*, const double*, double*);

}  // namespace retort::kernels
