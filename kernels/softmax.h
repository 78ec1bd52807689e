// Softmax and log-softmax along the last dimension of a (rows, cols) matrix, with a temperature.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// y = softmax(x / temperature) (or log_softmax when `log`), row by row, computed stably
// (the row maximum is subtracted first).
template <typename T>
void softmax_forward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature, bool log,
                     const T* x, T* y);
void softmax_forward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                     bool log, const float* x, float* y);

// Backward from the forward output y: softmax: grad_x = y * (grad_y - sum(grad_y * y)) / T;
// log_softmax: grad_x = (grad_y - exp(y) * sum(grad_y)) / T. Overwrites grad_x.
template <typename T>
void softmax_backward(const CpuContext& ctx, int64_t rows, int64_t cols, T temperature, bool log,
                      const T* y, const T* grad_y, T* grad_x);
void softmax_backward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                      bool log, const float* y, const float* grad_y, float* grad_x);

}  // namespace retort::kernels
