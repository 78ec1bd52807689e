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
// momentum_buf may be null when momentum = 0. lr_scalar, when not null, points to one value in
// the kernel's memory (host for the CPU twin, device for CUDA) read as the learning rate instead
// of lr when the step runs: a step captured in a CUDA graph follows a schedule that way, the
// scalar rewritten between replays.
template <typename T>
void sgd_step(const CpuContext& ctx, int64_t n, T* param, const T* grad, T* momentum_buf, T lr,
              T momentum, T dampening, T weight_decay, bool nesterov, bool first_step,
              const T* lr_scalar = nullptr);
void sgd_step(const CudaContext& ctx, int64_t n, float* param, const float* grad,
              float* momentum_buf, float lr, float momentum, float dampening, float weight_decay,
              bool nesterov, bool first_step, const float* lr_scalar = nullptr);

}  // namespace retort::kernels
