// CUDA twin of kernels/batchnorm.h (residual add and ReLU optionally fused): statistics in double,
// no atomics.
#include "kernels/batchnorm.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise.h"

namespace retort::kernels {
namespace {

using cuda_detail::aligned16;
using cuda_detail::blocks_for;
using cuda_detail::kThreadsPerBlock;
using cuda_detail::kWarpSize;

// ---- Per-channel sums ---------------------------------------------------------------------------
// Two double sums per channel over its batch * spatial values:
//   kStats:    sum (x - k), sum (x - k)^2             (training forward)
//   kGradient: sum dy,      sum dy * (x - mean[c])    (both backwards)
// where dy is grad_y cut by the fused ReLU's mask (relu_y > 0) when relu_y is given.
// k is the channel's first value: shifting by a value of the data keeps E[(x-k)^2] - E[x-k]^2
// free of the cancellation that E[x^2] - E[x]^2 suffers when |mean| >> std, in one pass.
// Block (c, chunk) sums one contiguous chunk of the channel's values in a fixed order. With one
// chunk it finishes the channel itself; otherwise it stores its partials and the finish kernel
// adds the chunks in chunk order.
enum class Moments { kStats, kGradient };

// What to do with a channel's two totals.
struct Finish {
  int64_t count;  // batch * spatial
  int64_t spatial;
  const float* x;  // the shift k of channel c is x[c * spatial]
  // Training forward.
  float momentum, eps;
  float *running_mean, *running_var, *save_mean, *save_invstd;
  // Backwards: grad_gamma = sum1 * invstd, grad_beta = sum0, where invstd is save_invstd[c]
  // (training) or 1 / sqrt(running_var[c] + eps) (evaluation, running_var given as var_for_eval).
  const float *invstd, *var_for_eval;
  float *grad_gamma, *grad_beta;
};

template <Moments kMode>
__device__ void finish_channel(const Finish& f, int64_t c, double sum0, double sum1) {
  if constexpr (kMode == Moments::kStats) {
    const double n = static_cast<double>(f.count);
    const double shifted_mean = sum0 / n;
    const double mean = static_cast<double>(f.x[c * f.spatial]) + shifted_mean;
    const double var = fmax(sum1 / n - shifted_mean * shifted_mean, 0.0);
    f.save_mean[c] = static_cast<float>(mean);
    f.save_invstd[c] = static_cast<float>(1.0 / sqrt(var + static_cast<double>(f.eps)));
    const double m = static_cast<double>(f.momentum);
    // As the CPU twin: with a single value the unbiased variance (0/0) is taken as 0.
    const double unbiased = f.count > 1 ? var * n / (n - 1.0) : 0.0;
    f.running_mean[c] = static_cast<float>((1.0 - m) * f.running_mean[c] + m * mean);
    f.running_var[c] = static_cast<float>((1.0 - m) * f.running_var[c] + m * unbiased);
  } else {
    const double invstd =
        f.invstd != nullptr
            ? static_cast<double>(f.invstd[c])
            : 1.0 / sqrt(static_cast<double>(f.var_for_eval[c]) + static_cast<double>(f.eps));
    f.grad_gamma[c] = static_cast<float>(sum1 * invstd);
    f.grad_beta[c] = static_cast<float>(sum0);
  }
}

template <Moments kMode>
__global__ void channel_moments_kernel(int64_t channels, int64_t spatial, int64_t chunk_len,
                                       const float* __restrict__ x, const float* __restrict__ dy,
                                       const float* __restrict__ relu_y,
                                       const float* __restrict__ mean, Finish finish,
                                       double* __restrict__ partial) {
  __shared__ double scratch[kWarpSize];
  const int64_t c = blockIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * chunk_len;
  const int64_t end = min(finish.count, begin + chunk_len);
  const float centre = kMode == Moments::kGradient ? mean[c] : x[c * spatial];
  double sum0 = 0.0, sum1 = 0.0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const int64_t n = j / spatial;
    const int64_t offset = (n * channels + c) * spatial + (j - n * spatial);
    const double v = static_cast<double>(x[offset]);
    if constexpr (kMode == Moments::kStats) {
      const double d = v - static_cast<double>(centre);
      sum0 += d;
      sum1 += d * d;
    } else {
      const double g =
          relu_y == nullptr || relu_y[offset] > 0.0f ? static_cast<double>(dy[offset]) : 0.0;
      sum0 += g;
      sum1 += g * (v - static_cast<double>(centre));
    }
  }
  sum0 = cuda_detail::block_sum(sum0, scratch);
  sum1 = cuda_detail::block_sum(sum1, scratch);
  if (threadIdx.x != 0) return;
  if (gridDim.y == 1) {
    finish_channel<kMode>(finish, c, sum0, sum1);
  } else {
    partial[chunk * channels + c] = sum0;
    partial[(gridDim.y + chunk) * channels + c] = sum1;
  }
}

template <Moments kMode>
__global__ void channel_moments_finish_kernel(int64_t channels, int64_t chunks,
                                              const double* __restrict__ partial, Finish finish) {
  for (int64_t c = cuda_detail::global_thread_index(); c < channels;
       c += cuda_detail::grid_stride()) {
    double sum0 = 0.0, sum1 = 0.0;
    for (int64_t k = 0; k < chunks; ++k) {
      sum0 += partial[k * channels + c];
      sum1 += partial[(chunks + k) * channels + c];
    }
    finish_channel<kMode>(finish, c, sum0, sum1);
  }
}

constexpr int64_t kTargetBlocks = 512;
constexpr int64_t kMinChunk = 4096;
constexpr int64_t kMaxChunks = 1024;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

template <Moments kMode>
void channel_moments(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                     const float* dy, const float* relu_y, const float* mean,
                     const Finish& finish) {
  const int64_t count = s.batch * s.spatial;
  int64_t chunks = 1;
  if (ctx.workspace != nullptr && s.channels < kTargetBlocks) {
    chunks = ceil_div(count, kMinChunk);
    const int64_t wanted = ceil_div(kTargetBlocks, s.channels);
    if (chunks > wanted) chunks = wanted;
    if (chunks > kMaxChunks) chunks = kMaxChunks;
  }
  const int64_t chunk_len = ceil_div(count, chunks);
  chunks = ceil_div(count, chunk_len);
  double* partial = nullptr;
  if (chunks > 1) {
    partial = static_cast<double*>(
        ctx.workspace->get(static_cast<size_t>(2 * chunks * s.channels) * sizeof(double)));
  }
  const int64_t rounded = ceil_div(chunk_len, kWarpSize) * kWarpSize;
  const unsigned threads =
      static_cast<unsigned>(rounded < kThreadsPerBlock ? rounded : kThreadsPerBlock);
  const dim3 grid(static_cast<unsigned>(s.channels), static_cast<unsigned>(chunks));
  channel_moments_kernel<kMode><<<grid, threads, 0, ctx.stream>>>(
      s.channels, s.spatial, chunk_len, x, dy, relu_y, mean, finish, partial);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
  if (chunks > 1) {
    channel_moments_finish_kernel<kMode>
        <<<blocks_for(s.channels), kThreadsPerBlock, 0, ctx.stream>>>(s.channels, chunks, partial,
                                                                      finish);
    RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
  }
}

// ---- Per-element maps with per-channel coefficients ---------------------------------------------
// out[i] = f(c, a[i], b[i]) with c the channel of element i (b[i] = 0 when b is null). With kVec4
// the spatial size is a multiple of 4 and every pointer is 16-byte aligned, so the four elements
// of a float4 share c. When mask (the fused ReLU's output) is given, b[i] is read as 0 where
// mask[i] <= 0 (or NaN). When b_out is given, the b[i] that f received is stored there too (the
// residual's gradient of a fused residual add).

struct NormaliseFn {  // y = (x - mean) * invstd * gamma + beta (+ residual), then max(y, 0)
  const float *mean, *invstd, *var_for_eval, *gamma, *beta;
  float eps;
  bool relu, add;
  __device__ float operator()(int64_t c, float x, float residual) const {
    const float inv = invstd != nullptr ? invstd[c] : 1.0f / sqrtf(var_for_eval[c] + eps);
    float y = (x - mean[c]) * (inv * gamma[c]) + beta[c];
    if (add) y = y + residual;
    return relu && y <= 0.0f ? 0.0f : y;  // the relu op's rule: NaN passes
  }
};

struct TrainGradFn {  // grad_x = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
  const float *mean, *invstd, *gamma, *grad_gamma, *grad_beta;
  float inv_count;
  __device__ float operator()(int64_t c, float x, float dy) const {
    const float inv = invstd[c];
    const float xhat = (x - mean[c]) * inv;
    return gamma[c] * inv * (dy - grad_beta[c] * inv_count - xhat * (grad_gamma[c] * inv_count));
  }
};

struct EvalGradFn {  // grad_x = dy * gamma / sqrt(running_var + eps)
  const float *running_var, *gamma;
  float eps;
  __device__ float operator()(int64_t c, float, float dy) const {
    return dy * (gamma[c] / sqrtf(running_var[c] + eps));
  }
};

__device__ inline float masked(float b, float mask) {
  return mask > 0.0f ? b : 0.0f;
}

template <bool kVec4, typename Index, typename F>
__global__ void channel_map_kernel(Index numel, Index channels, Index spatial, const float* a,
                                   const float* b, const float* mask, float* out, float* b_out,
                                   F f) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  const Index first = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (kVec4) {
    for (Index i = first; i < numel / 4; i += step) {
      const int64_t c = (i * 4 / spatial) % channels;
      const float4 u = reinterpret_cast<const float4*>(a)[i];
      float4 v = b != nullptr ? reinterpret_cast<const float4*>(b)[i] : float4{};
      if (mask != nullptr) {
        const float4 m = reinterpret_cast<const float4*>(mask)[i];
        v = make_float4(masked(v.x, m.x), masked(v.y, m.y), masked(v.z, m.z), masked(v.w, m.w));
      }
      if (b_out != nullptr) reinterpret_cast<float4*>(b_out)[i] = v;
      reinterpret_cast<float4*>(out)[i] =
          make_float4(f(c, u.x, v.x), f(c, u.y, v.y), f(c, u.z, v.z), f(c, u.w, v.w));
    }
  } else {
    for (Index i = first; i < numel; i += step) {
      const int64_t c = (i / spatial) % channels;
      float v = b != nullptr ? b[i] : 0.0f;
      if (mask != nullptr) v = masked(v, mask[i]);
      if (b_out != nullptr) b_out[i] = v;
      out[i] = f(c, a[i], v);
    }
  }
}

template <typename F>
void channel_map(const CudaContext& ctx, const BatchNormShape& s, const float* a, const float* b,
                 const float* mask, float* out, float* b_out, F f) {
  const int64_t numel = s.batch * s.channels * s.spatial;
  if (numel <= 0) return;
  const bool vec4 = s.spatial % 4 == 0 && aligned16(a) && (b == nullptr || aligned16(b)) &&
                    (mask == nullptr || aligned16(mask)) && aligned16(out) &&
                    (b_out == nullptr || aligned16(b_out));
  const int64_t work = vec4 ? numel / 4 : numel;
  const unsigned blocks = blocks_for(work);
  // i + step stays below 2^31 in the 32-bit variant.
  const bool small = numel < (int64_t{1} << 31) - cuda_detail::kMaxBlocks * kThreadsPerBlock * 4;
  if (vec4 && small) {
    channel_map_kernel<true, int32_t><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(
        static_cast<int32_t>(numel), static_cast<int32_t>(s.channels),
        static_cast<int32_t>(s.spatial), a, b, mask, out, b_out, f);
  } else if (vec4) {
    channel_map_kernel<true, int64_t><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(
        numel, s.channels, s.spatial, a, b, mask, out, b_out, f);
  } else if (small) {
    channel_map_kernel<false, int32_t><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(
        static_cast<int32_t>(numel), static_cast<int32_t>(s.channels),
        static_cast<int32_t>(s.spatial), a, b, mask, out, b_out, f);
  } else {
    channel_map_kernel<false, int64_t><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(
        numel, s.channels, s.spatial, a, b, mask, out, b_out, f);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void validate(const char* op, const BatchNormShape& s) {
  if (s.batch < 0 || s.channels < 0 || s.spatial < 0) {
    throw std::invalid_argument(std::string(op) + " (CUDA): negative size in (" +
                                std::to_string(s.batch) + ", " + std::to_string(s.channels) + ", " +
                                std::to_string(s.spatial) + ")");
  }
  if (s.channels > (int64_t{1} << 31) - 1) {
    throw std::invalid_argument(std::string(op) + " (CUDA): too many channels");
  }
}

}  // namespace

void batchnorm_forward_train(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                             const float* gamma, const float* beta, float momentum, float eps,
                             float* running_mean, float* running_var, float* y, float* save_mean,
                             float* save_invstd, bool relu, const float* residual) {
  validate("batchnorm_forward_train", s);
  if (s.channels == 0) return;
  // The engine rejects batches with fewer than two values per channel (as PyTorch does); these
  // results match the CPU twin's. n = 0: save_mean = 0, save_invstd = 1/sqrt(eps), running
  // statistics untouched. n = 1: see finish_channel.
  if (s.batch * s.spatial == 0) {
    fill_value(ctx, s.channels, 0.0f, save_mean);
    fill_value(ctx, s.channels, static_cast<float>(1.0 / std::sqrt(static_cast<double>(eps))),
               save_invstd);
    return;
  }
  Finish finish{};
  finish.count = s.batch * s.spatial;
  finish.spatial = s.spatial;
  finish.x = x;
  finish.momentum = momentum;
  finish.eps = eps;
  finish.running_mean = running_mean;
  finish.running_var = running_var;
  finish.save_mean = save_mean;
  finish.save_invstd = save_invstd;
  channel_moments<Moments::kStats>(ctx, s, x, nullptr, nullptr, nullptr, finish);
  channel_map(ctx, s, x, residual, nullptr, y, nullptr,
              NormaliseFn{save_mean, save_invstd, nullptr, gamma, beta, eps, relu,
                          residual != nullptr});
}

void batchnorm_forward_eval(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                            const float* gamma, const float* beta, const float* running_mean,
                            const float* running_var, float eps, float* y, bool relu,
                            const float* residual) {
  validate("batchnorm_forward_eval", s);
  channel_map(ctx, s, x, residual, nullptr, y, nullptr,
              NormaliseFn{running_mean, nullptr, running_var, gamma, beta, eps, relu,
                          residual != nullptr});
}

void batchnorm_backward_train(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                              const float* grad_y, const float* gamma, const float* save_mean,
                              const float* save_invstd, float* grad_x, float* grad_gamma,
                              float* grad_beta, const float* relu_y, float* grad_residual) {
  validate("batchnorm_backward_train", s);
  if (s.channels == 0) return;
  const int64_t count = s.batch * s.spatial;
  if (count == 0) {
    fill_value(ctx, s.channels, 0.0f, grad_gamma);
    fill_value(ctx, s.channels, 0.0f, grad_beta);
    return;
  }
  Finish finish{};
  finish.count = count;
  finish.invstd = save_invstd;
  finish.grad_gamma = grad_gamma;
  finish.grad_beta = grad_beta;
  channel_moments<Moments::kGradient>(ctx, s, x, grad_y, relu_y, save_mean, finish);
  const float inv_count = static_cast<float>(1.0 / static_cast<double>(count));
  channel_map(ctx, s, x, grad_y, relu_y, grad_x, grad_residual,
              TrainGradFn{save_mean, save_invstd, gamma, grad_gamma, grad_beta, inv_count});
}

void batchnorm_backward_eval(const CudaContext& ctx, const BatchNormShape& s, const float* x,
                             const float* grad_y, const float* gamma, const float* running_mean,
                             const float* running_var, float eps, float* grad_x, float* grad_gamma,
                             float* grad_beta, const float* relu_y, float* grad_residual) {
  validate("batchnorm_backward_eval", s);
  if (s.channels == 0) return;
  const int64_t count = s.batch * s.spatial;
  if (count == 0) {
    fill_value(ctx, s.channels, 0.0f, grad_gamma);
    fill_value(ctx, s.channels, 0.0f, grad_beta);
    return;
  }
  Finish finish{};
  finish.count = count;
  finish.eps = eps;
  finish.var_for_eval = running_var;
  finish.grad_gamma = grad_gamma;
  finish.grad_beta = grad_beta;
  channel_moments<Moments::kGradient>(ctx, s, x, grad_y, relu_y, running_mean, finish);
  channel_map(ctx, s, x, grad_y, relu_y, grad_x, grad_residual, EvalGradFn{running_var, gamma, eps});
}

}  // namespace retort::kernels
