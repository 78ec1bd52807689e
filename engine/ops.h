// The differentiable ops of the engine: every op records a node for backward when grad mode is on.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/tensor.h"

namespace retort {

// --- elementwise (engine/ops/elementwise.cpp): NumPy broadcasting, same dtype and device -------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// alpha * x + beta: the scalar forms (x + s, x * s, s - x, ...) are all this op.
Tensor affine(const Tensor& x, double alpha, double beta);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor relu6(const Tensor& x);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& x, double s) { return affine(x, 1.0, s); }
inline Tensor operator+(double s, const Tensor& x) { return affine(x, 1.0, s); }
inline Tensor operator-(const Tensor& x, double s) { return affine(x, 1.0, -s); }
inline Tensor operator-(double s, const Tensor& x) { return affine(x, -1.0, s); }
inline Tensor operator*(const Tensor& x, double s) { return affine(x, s, 0.0); }
inline Tensor operator*(double s, const Tensor& x) { return affine(x, s, 0.0); }
inline Tensor operator/(const Tensor& x, double s) { return affine(x, 1.0 / s, 0.0); }

// --- reductions (engine/ops/reduce.cpp) --------------------------------------------------------
// Sum / mean over `dims` (negative dims count from the end; empty = all dims).
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Sums x down to `shape` (the inverse of broadcasting `shape` to x's shape).
Tensor sum_to(const Tensor& x, const Shape& shape);

// --- linear algebra (engine/ops/linear.cpp) ----------------------------------------------------
// (m, k) x (k, n) -> (m, n).
Tensor matmul(const Tensor& a, const Tensor& b);
// x (N, in), weight (out, in), optional bias (out) -> x weight^T + bias, as torch's F.linear.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// --- convolution (engine/ops/conv.cpp) ---------------------------------------------------------
struct Conv2dOptions {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, groups = 1;
  static Conv2dOptions make(int64_t stride, int64_t padding, int64_t groups = 1) {
    return {stride, stride, padding, padding, groups};
  }
};
// x (N, C_in, H, W), weight (C_out, C_in / groups, kH, kW), optional bias (C_out).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

enum class Activation { none, relu, relu6 };
// act(conv2d(x, weight, bias, options) + residual) as one op: bias and residual may be undefined;
// residual (N, C_out, out_h, out_w) has the output's shape, device and dtype. The bias, residual
// and activation are applied as the convolution writes its output, bit for bit as the separate
// ops would on the same device. Saves x and weight as conv2d does, plus its output for a ReLU's
// mask.
Tensor conv2d_fused(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    const Tensor& residual, Activation activation,
                    const Conv2dOptions& options = {});

// --- normalisation (engine/ops/batchnorm.cpp) --------------------------------------------------
// x (N, C) or (N, C, H, W). Training: batch statistics, and running_mean/var (may be undefined)
// are updated in place with `momentum` as PyTorch. Evaluation: running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum = 0.1, double eps = 1e-5);
// relu(batch_norm(...)) as one op: the same arguments, checks and running-statistics update, the
// ReLU applied as the output is written and its mask applied as the gradient is read (one kernel
// pass each way instead of two). Saves x and its own output for backward.
Tensor batch_norm_relu(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Tensor& running_mean, const Tensor& running_var, bool training,
                       double momentum = 0.1, double eps = 1e-5);
// relu(batch_norm(x, ...) + residual) as one op, the last unit of a residual block: residual is
// shaped as x (same device and dtype) and is added after BN's output is rounded, as the unfused
// ops do. One pass forward; backward masks the gradient once and writes the residual's gradient
// in the pass that computes x's. Saves x and its own output.
Tensor batch_norm_add_relu(const Tensor& x, const Tensor& residual, const Tensor& weight,
                           const Tensor& bias, const Tensor& running_mean,
                           const Tensor& running_var, bool training, double momentum = 0.1,
                           double eps = 1e-5);

// --- pooling (engine/ops/pool.cpp) -------------------------------------------------------------
struct Pool2dOptions {
  int64_t kernel_h = 2, kernel_w = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // average pooling only
  // stride defaults to the kernel size, as in PyTorch.
  static Pool2dOptions make(int64_t kernel, int64_t stride = 0, int64_t padding = 0,
                            bool ceil_mode = false) {
    const int64_t s = stride > 0 ? stride : kernel;
    return {kernel, kernel, s, s, padding, padding, ceil_mode, true};
  }
};
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// (N, C, H, W) -> (N, C): the mean over each plane.
Tensor global_avg_pool2d(const Tensor& x);

// --- softmax family and losses (engine/ops/softmax.cpp, engine/ops/loss.cpp) -------------------
// Along the last dimension, of x / temperature.
Tensor softmax(const Tensor& x, double temperature = 1.0);
Tensor log_softmax(const Tensor& x, double temperature = 1.0);

enum class Reduction { none, mean, sum };
// logits (N, C), labels (N) int64 in [0, C).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     Reduction reduction = Reduction::mean);
// Per-sample KL(p_t || p_s) of the temperature-softened distributions, shape (N). Gradients flow
// to the student only; the teacher's logits must not require grad.
Tensor kd_divergence(const Tensor& student_logits, const Tensor& teacher_logits,
                     double temperature);
// The KD loss of Hinton et al. as RepDistiller computes it: batchmean KL times T^2.
Tensor kd_loss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature);
// Per-sample entropy (natural log) of softmax(logits / T), shape (N); no gradient.
Tensor softmax_entropy(const Tensor& logits, double temperature = 1.0);

// --- step statistics kept on the device (engine/ops/metrics.cpp): in place, no autograd --------
// dst += src for tensors of one shape, device and dtype; dst contiguous. Lets a training loop sum
// its losses where they are computed and read the total once, instead of once per step.
void accumulate_(Tensor& dst, const Tensor& src);
// correct (a one-element i64 tensor on the logits' device) += the number of rows of logits
// (N, C) whose label's logit ranks first: no logit above it and no equal one at a lower index
// (nn::count_correct's rule for k = 1); a NaN logit is never correct. On the CPU a label outside
// [0, C) is an error naming the row; on a device it counts as wrong (checking would synchronise).
void count_top1_(Tensor& correct, const Tensor& logits, const Tensor& labels);

}  // namespace retort

namespace retort {

// --- optimiser update (engine/ops/optim.cpp): in place, outside autograd -----------------------
struct SgdStepOptions {
  double lr = 0.1, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};
// param -= lr * update(grad) with PyTorch's SGD rule. momentum_buf (same shape as param) is
// needed when momentum != 0; first_step initialises it with the first update. lr_scalar, when
// defined, is one value on param's device and in its dtype, read as the learning rate (in place
// of o.lr) when the step runs on the device: a step captured in a CUDA graph then follows what is
// written there between replays.
void sgd_step(Tensor& param, const Tensor& grad, Tensor& momentum_buf, const SgdStepOptions& o,
              bool first_step, const Tensor& lr_scalar = Tensor());
// sgd_step over many parameters at once, the same bits as one call each: params[i], grads[i],
// momentum_bufs[i] (undefined entries allowed when momentum = 0) and first_steps[i] as there,
// every tensor on one device and of one dtype. On CUDA a launch updates a few dozen tensors.
void sgd_step_many(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                   const std::vector<Tensor>& momentum_bufs, const std::vector<bool>& first_steps,
                   const SgdStepOptions& o, const Tensor& lr_scalar = Tensor());

}  // namespace retort
