// Fused optimiser updates on flat parameter buffers.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// One SGD step with PyTorch's rule, in place on param and momentum_buf (n elements each):
//   d = grad + weight_decay * param
//   buf = first_step ? d : momentum * buf + (1 - dampening) * d      (skipped when momentum = 0)
//   d = nesterov ? d + momentum * buf : buf                             (d itself when momentum = 0)
//   param -= lr * d
// momentum_buf may be null when momentum = 0.
template <typename T>
void sgd_step(const CpuContext& ctx, int64_t n, T* param, const T* grad, T* momentum_buf, T lr,
              T momentum, T dampening, T weight_decay, bool nesterov, bool first_step);
void sgd_step(const CudaContext& ctx, int64_t n, float* param, const float* grad,
              float* momentum_buf, float lr, float momentum, float dampening, float weight_decay,
              bool nesterov, bool first_step);

}  // namespace retort::kernels
