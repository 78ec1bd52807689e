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

// One tensor of a multi-tensor step: n elements of param, grad and momentum_buf (null when
// momentum = 0), and whether this is the tensor's first step (its buffer is seeded).
template <typename T>
struct SgdSlot {
  int64_t n = 0;
  T* param = nullptr;
  const T* grad = nullptr;
  T* momentum_buf = nullptr;
  bool first_step = false;
};

// sgd_step over `count` tensors with one rule, the same bits as one sgd_step per tensor. The
// CUDA twin updates up to a few dozen tensors per launch (the slots passed by value, so the step
// stays capturable in a CUDA graph), where one launch per tensor would dominate a small
// network's optimiser step (resnet56 has 170 parameter tensors).
template <typename T>
void sgd_step_many(const CpuContext& ctx, const SgdSlot<T>* slots, int64_t count, T lr,
                   T momentum, T dampening, T weight_decay, bool nesterov,
                   const T* lr_scalar = nullptr);
void sgd_step_many(const CudaContext& ctx, const SgdSlot<float>* slots, int64_t count, float lr,
                   float momentum, float dampening, float weight_decay, bool nesterov,
                   const float* lr_scalar = nullptr);

}  // namespace retort::kernels
