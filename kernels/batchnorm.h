// Batch normalisation over (N, C, spatial): training (batch statistics) and evaluation (running),
// with an optional fused residual add and ReLU.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// x and y are (batch, channels, spatial) contiguous, spatial = H * W (1 for BatchNorm1d).
struct BatchNormShape {
  int64_t batch = 0, channels = 0, spatial = 1;
};

// Training mode, as PyTorch: per channel, mean and biased variance over batch * spatial values;
// y = (x - mean) * invstd * gamma + beta with invstd = 1 / sqrt(var + eps). Saves mean and invstd
// (channels each) for backward and updates running_mean/var in place with
// running = (1 - momentum) * running + momentum * batch_stat, using the unbiased variance
// (n / (n - 1)) for running_var. Statistics are accumulated in double for both dtypes.
//
// Fused ReLU (both forwards): with relu = true, y = max(BN(x), 0) is written in the same pass,
// NaN passing through as the relu op lets it; the statistics are those of x as without it.
// Fused residual (both forwards): residual, when not null, is shaped as x and must not overlap y;
// y = BN(x) + residual (then the ReLU), the sum taken after BN's output is rounded to T, so the
// CPU result is bit-identical to the unfused ops (a residual block's relu(bn2(conv2) + shortcut)).
template <typename T>
void batchnorm_forward_train(const CpuContext& ctx, const BatchNormShape& s, const T* x,
                             const T* gamma, const T* beta, T momentum, T eps, T* running_mean,
                             T* running_var, T* y, T* save_mean, T* save_invstd,
                             bool relu = false, const T* residual = nullptr);
void batchnorm_forward_train(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                             const float* gamma, const float* beta, float momentum, float eps,
                             float* running_mean, float* running_var, float* y, float* save_mean,
                             float* save_invstd, bool relu = false,
                             const float* residual = nullptr);

// Evaluation mode: normalise with the running statistics; nothing is updated.
template <typename T>
void batchnorm_forward_eval(const CpuContext& ctx, const BatchNormShape& s, const T* x,
                            const T* gamma, const T* beta, const T* running_mean,
                            const T* running_var, T eps, T* y, bool relu = false,
                            const T* residual = nullptr);
void batchnorm_forward_eval(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                            const float* gamma, const float* beta, const float* running_mean,
                            const float* running_var, float eps, float* y, bool relu = false,
                            const float* residual = nullptr);

// Backward of the training-mode forward given its saved mean/invstd. Overwrites grad_x,
// grad_gamma and grad_beta (channels each).
//
// Fused ReLU (both backwards): relu_y, when not null, is the output of the forward run with
// relu = true (same shape as x). The gradient reaching BN is then grad_y where relu_y > 0 and 0
// elsewhere (0 at the kink, as PyTorch's relu backward); it is masked as it is read, never
// stored. x is still needed: grad_x depends on xhat also where the ReLU cut the gradient.
// Fused residual (both backwards): grad_residual, when not null, is overwritten with the gradient
// reaching the sum BN(x) + residual (grad_y, masked as above with relu_y), in the same pass.
template <typename T>
void batchnorm_backward_train(const CpuContext& ctx, const BatchNormShape& s, const T* x,
                              const T* grad_y, const T* gamma, const T* save_mean,
                              const T* save_invstd, T* grad_x, T* grad_gamma, T* grad_beta,
                              const T* relu_y = nullptr, T* grad_residual = nullptr);
void batchnorm_backward_train(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                              const float* grad_y, const float* gamma, const float* save_mean,
                              const float* save_invstd, float* grad_x, float* grad_gamma,
                              float* grad_beta, const float* relu_y = nullptr,
                              float* grad_residual = nullptr);

// Backward of the evaluation-mode forward (the statistics are constants). Overwrites outputs.
template <typename T>
void batchnorm_backward_eval(const CpuContext& ctx, const BatchNormShape& s, const T* x,
                             const T* grad_y, const T* gamma, const T* running_mean,
                             const T* running_var, T eps, T* grad_x, T* grad_gamma,
                             T* grad_beta, const T* relu_y = nullptr,
                             T* grad_residual = nullptr);
void batchnorm_backward_eval(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                             const float* grad_y, const float* gamma, const float* running_mean,
                             const float* running_var, float eps, float* grad_x,
                             float* grad_gamma, float* grad_beta, const float* relu_y = nullptr,
                             float* grad_residual = nullptr);

}  // namespace retort::kernels
