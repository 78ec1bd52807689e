// CPU twins of the per-sample losses (kernels/loss.h): cross-entropy, KD divergence, entropy.
#include "kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace retort::kernels {
namespace {

// log_prob = log_softmax(x / temperature) for one row, with the row maximum subtracted first so
// that every exp argument is <= 0: finite for any finite logits, however extreme.
template <typename T>
void row_log_softmax(int64_t cols, T inv_temperature, const T* x, T* log_prob) {
  T row_max = -std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c < cols; ++c) row_max = std::max(row_max, x[c]);
  T sum = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const T z = (x[c] - row_max) * inv_temperature;
    log_prob[c] = z;
    sum += std::exp(z);
  }
  const T log_sum = std::log(sum);
  for (int64_t c = 0; c < cols; ++c) log_prob[c] -= log_sum;
}

// p * log p summand with 0 * log 0 = 0: a probability that underflowed to zero (log_prob very
// negative, or -inf for a -inf logit) contributes nothing instead of 0 * -inf = NaN.
template <typename T>
T p_times(T p, T value) {
  return p == T(0) ? T(0) : p * value;
}

}  // namespace

template <typename T>
void cross_entropy_forward(const CpuContext& ctx, int64_t rows, int64_t cols, const T* logits,
                           const int64_t* labels, T* loss, T* log_prob) {
  // Rows are independent and reduced by one thread each: the result ignores the thread count.
  const int threads = cpu_threads(ctx, rows * cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    T* log_prob_row = log_prob + r * cols;  // (cols)
    row_log_softmax(cols, T(1), logits + r * cols, log_prob_row);
    loss[r] = -log_prob_row[labels[r]];
  }
}

template <typename T>
void cross_entropy_backward(const CpuContext& ctx, int64_t rows, int64_t cols, const T* log_prob,
                            const int64_t* labels, const T* grad_loss, T* grad_logits) {
  const int threads = cpu_threads(ctx, rows * cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const T* log_prob_row = log_prob + r * cols;  // (cols)
    T* grad_row = grad_logits + r * cols;         // (cols)
    const T g = grad_loss[r];
    for (int64_t c = 0; c < cols; ++c) grad_row[c] = g * std::exp(log_prob_row[c]);
    grad_row[labels[r]] -= g;
  }
}

template <typename T>
void kd_divergence_forward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature,
                           const T* student_logits, const T* teacher_logits, T* kl,
                           T* student_log_prob, T* teacher_prob) {
  const T inv_temperature = T(1) / temperature;
  const int threads = cpu_threads(ctx, rows * cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    T* log_s = student_log_prob + r * cols;  // (cols)
    T* p_t = teacher_prob + r * cols;        // (cols): holds log p_t until the last loop
    row_log_softmax(cols, inv_temperature, student_logits + r * cols, log_s);
    row_log_softmax(cols, inv_temperature, teacher_logits + r * cols, p_t);
    T sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const T log_t = p_t[c];
      const T prob_t = std::exp(log_t);
      sum += p_times(prob_t, log_t - log_s[c]);
      p_t[c] = prob_t;
    }
    kl[r] = sum;
  }
}

template <typename T>
void kd_divergence_backward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature,
                            const T* student_log_prob, const T* teacher_prob, const T* grad_kl,
                            T* grad_student_logits) {
  const T inv_temperature = T(1) / temperature;
  const int threads = cpu_threads(ctx, rows * cols);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const T* log_s = student_log_prob + r * cols;  // (cols)
    const T* p_t = teacher_prob + r * cols;        // (cols)
    T* grad_row = grad_student_logits + r * cols;  // (cols)
    const T scale = grad_kl[r] * inv_temperature;
    for (int64_t c = 0; c < cols; ++c) grad_row[c] = scale * (std::exp(log_s[c]) - p_t[c]);
  }
}

template <typename T>
void softmax_entropy(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature,
                     const T* logits, T* entropy) {
  const T inv_temperature = T(1) / temperature;
  const int threads = cpu_threads(ctx, rows * cols);
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> log_prob(static_cast<size_t>(cols));  // (cols) scratch row per thread
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      row_log_softmax(cols, inv_temperature, logits + r * cols, log_prob.data());
      T sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += p_times(std::exp(log_prob[c]), log_prob[c]);
      entropy[r] = -sum;
    }
  }
}

template void cross_entropy_forward<float>(const CpuContext&, int64_t, int64_t, const float*,
                                           const int64_t*, float*, float*);
template void cross_entropy_forward<double>(const CpuContext&, int64_t, int64_t, const double*,
                                            const int64_t*, double*, double*);
template void cross_entropy_backward<float>(const CpuContext&, int64_t, int64_t, const float*,
                                            const int64_t*, const float*, float*);
template void cross_entropy_backward<double>(const CpuContext&, int64_t, int64_t, const double*,
                                             const int64_t*, const double*, double*);
template void kd_divergence_forward<float>(const CpuContext&, int64_t, int64_t, float, const float*,
                                           const float*, float*, float*, float*);
template void kd_divergence_forward<double>(const CpuContext&, int64_t, int64_t, double,
                                            const double*, const double*, double*, double*,
                                            double*);
template void kd_divergence_backward<float>(const CpuContext&, int64_t, int64_t, float,
                                            const float*, const float*, const float*, float*);
template void kd_divergence_backward<double>(const CpuContext&, int64_t, int64_t, double,
                                             const double*, const double*, const double*, double*);
template void softmax_entropy<float>(const CpuContext&, int64_t, int64_t, float, const float*,
                                     float*);
template void softmax_entropy<double>(const CpuContext&, int64_t, int64_t, double, const double*,
                                      double*);

}  // namespace retort::kernels
