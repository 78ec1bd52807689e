// CUDA twin of kernels/softmax.h: row-wise (log-)softmax with temperature, a warp or block per row.
#include "kernels/softmax.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::kWarpSize;
using cuda_detail::RowGroup;

// z = (x - max) / T <= 0 (as the CPU twin computes it: the largest term is exactly exp(0) = 1).
template <bool kBlockPerRow, bool kLog>
__global__ void softmax_forward_kernel(int64_t rows, int64_t cols, float inv_temperature,
                                       const float* __restrict__ x, float* __restrict__ y) {
  using Group = RowGroup<kBlockPerRow>;
  __shared__ float scratch[kWarpSize];
  for (int64_t row = Group::first_row(); row < rows; row += Group::row_stride()) {
    const float* in = x + row * cols;
    float* out = y + row * cols;
    float row_max = -INFINITY;
    for (int64_t c = Group::rank(); c < cols; c += Group::size()) row_max = fmaxf(row_max, in[c]);
    row_max = Group::max(row_max, scratch);
    float sum = 0.0f;
    for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
      sum += expf((in[c] - row_max) * inv_temperature);
    }
    sum = Group::sum(sum, scratch);
    if constexpr (kLog) {
      const float log_sum = logf(sum);
      for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
        out[c] = (in[c] - row_max) * inv_temperature - log_sum;
      }
    } else {
      const float inv_sum = 1.0f / sum;
      for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
        out[c] = expf((in[c] - row_max) * inv_temperature) * inv_sum;
      }
    }
  }
}

template <bool kBlockPerRow, bool kLog>
__global__ void softmax_backward_kernel(int64_t rows, int64_t cols, float inv_temperature,
                                        const float* __restrict__ y,
                                        const float* __restrict__ grad_y,
                                        float* __restrict__ grad_x) {
  using Group = RowGroup<kBlockPerRow>;
  __shared__ float scratch[kWarpSize];
  for (int64_t row = Group::first_row(); row < rows; row += Group::row_stride()) {
    const float* out = y + row * cols;
    const float* g = grad_y + row * cols;
    float* gx = grad_x + row * cols;
    // softmax: sum(grad_y * y); log_softmax: sum(grad_y).
    float dot = 0.0f;
    for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
      dot += kLog ? g[c] : g[c] * out[c];
    }
    dot = Group::sum(dot, scratch);
    for (int64_t c = Group::rank(); c < cols; c += Group::size()) {
      gx[c] = kLog ? (g[c] - expf(out[c]) * dot) * inv_temperature
                   : out[c] * (g[c] - dot) * inv_temperature;
    }
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

void softmax_forward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                     bool log, const float* x, float* y) {
  validate("softmax_forward", rows, cols, temperature);
  if (rows == 0 || cols == 0) return;
  if (log) {
    cuda_detail::launch_row_kernel(ctx.stream, rows, cols, softmax_forward_kernel<true, true>,
                                   softmax_forward_kernel<false, true>, 1.0f / temperature, x, y);
  } else {
    cuda_detail::launch_row_kernel(ctx.stream, rows, cols, softmax_forward_kernel<true, false>,
                                   softmax_forward_kernel<false, false>, 1.0f / temperature, x, y);
  }
}

void softmax_backward(const CudaContext& ctx, int64_t rows, int64_t cols, float temperature,
                      bool log, const float* y, const float* grad_y, float* grad_x) {
  validate("softmax_backward", rows, cols, temperature);
  if (rows == 0 || cols == 0) return;
  if (log) {
    cuda_detail::launch_row_kernel(ctx.stream, rows, cols, softmax_backward_kernel<true, true>,
                                   softmax_backward_kernel<false, true>, 1.0f / temperature, y,
                                   grad_y, grad_x);
  } else {
    cuda_detail::launch_row_kernel(ctx.stream, rows, cols, softmax_backward_kernel<true, false>,
                                   softmax_backward_kernel<false, false>, 1.0f / temperature, y,
                                   grad_y, grad_x);
  }
}

}  // namespace retort::kernels
