// CUDA twin of kernels/loss.h: fused cross-entropy, KD divergence and softmax entropy per row.
#include "kernels/loss.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise.h"

namespace retort::kernels {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::global_thread_index;
using cuda_detail::grid_stride;
using cuda_detail::kThreadsPerBlock;
using cuda_detail::kWarpSize;
using cuda_detail::RowGroup;

// Row maximum and log-sum-exp of z = (x - max) / T, so that log_softmax = z - log_sum (the CPU
// twin's formulation).
template <typename Group>
__device__ void row_log_normaliser(const float* in, int64_t cols, float inv_temperature,
                                   float* scratch, float& row_max, float& log_sum) {
  row_max = -INFINITY;
  for (int64_t c = Group::rank(); c < cols; c += Group::size()) row_max = fmaxf(row_max, in[c]);
  row_max = Group::max(row_max, scratch);
  float sum = 0.0f;
  for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
    sum += expf((in[c] - row_max) * inv_temperature);
  }
  log_sum = logf(Group::sum(sum, scratch));
}

template <bool kBlockPerRow>
__global__ void cross_entropy_forward_kernel(int64_t rows, int64_t cols,
                                             const float* __restrict__ logits,
                                             const int64_t* __restrict__ labels,
                                             float* __restrict__ loss,
                                             float* __restrict__ log_prob) {
  using Group = RowGroup<kBlockPerRow>;
  __shared__ float scratch[kWarpSize];
  for (int64_t row = Group::first_row(); row < rows; row += Group::row_stride()) {
    const float* in = logits + row * cols;
    float* out = log_prob + row * cols;
    float row_max, log_sum;
    row_log_normaliser<Group>(in, cols, 1.0f, scratch, row_max, log_sum);
    for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
      out[c] = (in[c] - row_max) - log_sum;
    }
    if (Group::rank() == 0) {
      const int64_t label = labels[row];
      // The engine validates labels; an invalid one gives NaN here rather than a stray read.
      loss[row] = (label >= 0 && label < cols) ? -((in[label] - row_max) - log_sum) : NAN;
    }
  }
}

template <bool kBlockPerRow>
__global__ void kd_divergence_forward_kernel(int64_t rows, int64_t cols, float inv_temperature,
                                             const float* __restrict__ student_logits,
                                             const float* __restrict__ teacher_logits,
                                             float* __restrict__ kl,
                                             float* __restrict__ student_log_prob,
                                             float* __restrict__ teacher_prob) {
  using Group = RowGroup<kBlockPerRow>;
  __shared__ float scratch[kWarpSize];
  for (int64_t row = Group::first_row(); row < rows; row += Group::row_stride()) {
    const float* s = student_logits + row * cols;
    const float* t = teacher_logits + row * cols;
    float s_max, s_log_sum, t_max, t_log_sum;
    row_log_normaliser<Group>(s, cols, inv_temperature, scratch, s_max, s_log_sum);
    row_log_normaliser<Group>(t, cols, inv_temperature, scratch, t_max, t_log_sum);
    float sum = 0.0f;
    for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
      const float log_ps = (s[c] - s_max) * inv_temperature - s_log_sum;
      const float log_pt = (t[c] - t_max) * inv_temperature - t_log_sum;
      const float pt = expf(log_pt);
      student_log_prob[row * cols + c] = log_ps;
      teacher_prob[row * cols + c] = pt;
      // 0 * log 0 = 0: a zero teacher probability contributes nothing, even with log_pt = -inf.
      if (pt != 0.0f) sum += pt * (log_pt - log_ps);
    }
    sum = Group::sum(sum, scratch);
    if (Group::rank() == 0) kl[row] = sum;
  }
}

template <bool kBlockPerRow>
__global__ void softmax_entropy_kernel(int64_t rows, int64_t cols, float inv_temperature,
                                       const float* __restrict__ logits,
                                       float* __restrict__ entropy) {
  using Group = RowGroup<kBlockPerRow>;
  __shared__ float scratch[kWarpSize];
  for (int64_t row = Group::first_row(); row < rows; row += Group::row_stride()) {
    const float* in = logits + row * cols;
    float row_max, log_sum;
    row_log_normaliser<Group>(in, cols, inv_temperature, scratch, row_max, log_sum);
    float sum = 0.0f;
    for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
      const float log_p = (in[c] - row_max) * inv_temperature - log_sum;
      const float p = expf(log_p);
      if (p != 0.0f) sum += p * log_p;
    }
    sum = Group::sum(sum, scratch);
    if (Group::rank() == 0) entropy[row] = -sum;
  }
}

__global__ void cross_entropy_backward_kernel(int64_t rows, int64_t cols,
                                              const float* __restrict__ log_prob,
                                              const int64_t* __restrict__ labels,
                                              const float* __restrict__ grad_loss,
                                              float* __restrict__ grad_logits) {
  const int64_t total = rows * cols;
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const int64_t row = i / cols;
    const int64_t c = i - row * cols;
    const float g = grad_loss[row];
    const float grad = g * expf(log_prob[i]);
    grad_logits[i] = labels[row] == c ? grad - g : grad;
  }
}

__global__ void kd_divergence_backward_kernel(int64_t rows, int64_t cols, float inv_temperature,
                                              const float* __restrict__ student_log_prob,
                                              const float* __restrict__ teacher_prob,
                                              const float* __restrict__ grad_kl,
                                              float* __restrict__ grad_student_logits) {
  const int64_t total = rows * cols;
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) {
    const int64_t row = i / cols;
    grad_student_logits[i] =
        (grad_kl[row] * inv_temperature) * (expf(student_log_prob[i]) - teacher_prob[i]);
  }
}

void validate(const char* op, int64_t rows, int64_t cols, float temperature) {
  if (rows < 0 || cols < 0 || !(temperature > 0.0f)) {
    throw std::invalid_argument(std::string(op) + " (CUDA): need rows, cols >= 0 and " +
                                "temperature > 0 (got rows " + std::to_string(rows) + ", cols " +
                                std::to_string(cols) + ", T " + std::to_string(temperature) + ")");
  }
}

}  // namespace

void cross_entropy_forward(const CudaContext& ctx, int64_t rows, int64_t cols, const float* logits,
                           const int64_t* labels, float* loss, float* log_prob) {
  validate("cross_entropy_forward", rows, cols, 1.0f);
  if (rows == 0) return;
  if (cols == 0) {
    throw std::invalid_argument("cross_entropy_forward (CUDA): no classes (cols = 0)");
  }
  cuda_detail::launch_row_kernel(ctx.stream, rows, cols, cross_entropy_forward_kernel<true>,
                                 cross_entropy_forward_kernel<false>, logits, labels, loss,
                                 log_prob);
}

void cross_entropy_backward(const CudaContext& ctx, int64_t rows, int64_t cols,
                            const float* log_prob, const int64_t* labels, const float* grad_loss,
                            float* grad_logits) {
  validate("cross_entropy_backward", rows, cols, 1.0f);
  if (rows == 0 || cols == 0) return;
  cross_entropy_backward_kernel<<<blocks_for(rows * cols), kThreadsPerBlock, 0, ctx.stream>>>(
      rows, cols, log_prob, labels, grad_loss, grad_logits);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void kd_divergence_forward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                           const float* student_logits, const float* teacher_logits, float* kl,
                           float* student_log_prob, float* teacher_prob) {
  validate("kd_divergence_forward", rows, cols, temperature);
  if (rows == 0) return;
  if (cols == 0) return fill_value(ctx, rows, 0.0f, kl);
  cuda_detail::launch_row_kernel(ctx.stream, rows, cols, kd_divergence_forward_kernel<true>,
                                 kd_divergence_forward_kernel<false>, 1.0f / temperature,
                                 student_logits, teacher_logits, kl, student_log_prob,
                                 teacher_prob);
}

void kd_divergence_backward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                            const float* student_log_prob, const float* teacher_prob,
                            const float* grad_kl, float* grad_student_logits) {
  validate("kd_divergence_backward", rows, cols, temperature);
  if (rows == 0 || cols == 0) return;
  kd_divergence_backward_kernel<<<blocks_for(rows * cols), kThreadsPerBlock, 0, ctx.stream>>>(
      rows, cols, 1.0f / temperature, student_log_prob, teacher_prob, grad_kl, grad_student_logits);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void softmax_entropy(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                     const float* logits, float* entropy) {
  validate("softmax_entropy", rows, cols, temperature);
  if (rows == 0) return;
  if (cols == 0) return fill_value(ctx, rows, 0.0f, entropy);
  cuda_detail::launch_row_kernel(ctx.stream, rows, cols, softmax_entropy_kernel<true>,
                                 softmax_entropy_kernel<false>, 1.0f / temperature, logits,
                                 entropy);
}

}  // namespace retort::kernels
