// Classification losses with per-sample outputs: cross-entropy, the KD divergence, softmax entropy.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// loss[i] = -log softmax(logits[i])[labels[i]]. log_prob (rows, cols) is saved for backward.
// Labels must lie in [0, cols); the engine checks them before calling.
template <typename T>
void cross_entropy_forward(const CpuContext& ctx, int64_t rows, int64_t cols, const T* logits,
                           const int64_t* labels, T* loss, T* log_prob);
void cross_entropy_forward(const CudaContext& ctx, int64_t rows, int64_t cols,
                           const float* logits, const int64_t* labels, float* loss,
                           float* log_prob);

// grad_logits[i, c] = grad_loss[i] * (exp(log_prob[i, c]) - [c == labels[i]]). Overwrites.
template <typename T>
void cross_entropy_backward(const CpuContext& ctx, int64_t rows, int64_t cols, const T* log_prob,
                            const int64_t* labels, const T* grad_loss, T* grad_logits);
void cross_entropy_backward(const CudaContext& ctx, int64_t rows, int64_t cols,
                            const float* log_prob, const int64_t* labels, const float* grad_loss,
                            float* grad_logits);

// Per-sample KD divergence at temperature T:
//   kl[i] = sum_c p_t[i,c] * (log p_t[i,c] - log p_s[i,c]),  p = softmax(logits / T),
// with 0 * log 0 = 0 (computed from log-softmax, never log of a probability). Saves the student's
// log-probabilities and the teacher's probabilities (rows, cols) for backward. The batchmean and
// the T^2 factor are applied by the caller.
template <typename T>
void kd_divergence_forward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature,
                           const T* student_logits, const T* teacher_logits, T* kl,
                           T* student_log_prob, T* teacher_prob);
void kd_divergence_forward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                           const float* student_logits, const float* teacher_logits, float* kl,
                           float* student_log_prob, float* teacher_prob);

// grad_student_logits[i, c] = grad_kl[i] * (p_s[i,c] - p_t[i,c]) / T. Overwrites.
template <typename T>
void kd_divergence_backward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature,
                            const T* student_log_prob, const T* teacher_prob, const T* grad_kl,
                            T* grad_student_logits);
void kd_divergence_backward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                            const float* student_log_prob, const float* teacher_prob,
                            const float* grad_kl, float* grad_student_logits);

// entropy[i] = -sum_c p log p of softmax(logits[i] / T), natural log, 0 * log 0 = 0. KCD's
// per-sample knowledge value (T = 1). Not differentiable.
template <typename T>
void softmax_entropy(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature,
                     const T* logits, T* entropy);
void softmax_entropy(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                     const float* logits, float* entropy);

}  // namespace retort::kernels
