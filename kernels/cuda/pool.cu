// CUDA twin of kernels/pool.h: max/avg/adaptive pooling; backwards gather, so no atomics.
#include "kernels/pool.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::global_thread_index;
using cuda_detail::grid_stride;
using cuda_detail::kThreadsPerBlock;
using cuda_detail::kWarpSize;

// Window geometry copied into kernel arguments (Pool2dShape's methods are host-only).
struct Window {
  int64_t planes, in_h, in_w, out_h, out_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};

Window make_window(const char* op, const Pool2dShape& s) {
  const bool ok = s.batch >= 0 && s.channels >= 0 && s.in_h > 0 && s.in_w > 0 && s.kernel_h > 0 &&
                  s.kernel_w > 0 && s.stride_h > 0 && s.stride_w > 0 && s.pad_h >= 0 &&
                  s.pad_w >= 0 && s.out_h() > 0 && s.out_w() > 0;
  if (!ok) {
    throw std::invalid_argument(
        std::string(op) + " (CUDA): invalid pooling geometry (in " + std::to_string(s.in_h) + "x" +
        std::to_string(s.in_w) + ", kernel " + std::to_string(s.kernel_h) + "x" +
        std::to_string(s.kernel_w) + ", stride " + std::to_string(s.stride_h) + "x" +
        std::to_string(s.stride_w) + ", pad " + std::to_string(s.pad_h) + "x" +
        std::to_string(s.pad_w) + ")");
  }
  if (s.in_h * s.in_w > (int64_t{1} << 31) - 1) {
    throw std::invalid_argument(std::string(op) + " (CUDA): plane too large for int32 argmax");
  }
  return Window{s.batch * s.channels, s.in_h,     s.in_w,     s.out_h(), s.out_w(), s.kernel_h,
                s.kernel_w,           s.stride_h, s.stride_w, s.pad_h,   s.pad_w};
}

// Output rows whose window [o * stride - pad, o * stride - pad + kernel) contains input row i.
__device__ __forceinline__ void covering_outputs(int64_t i, int64_t kernel, int64_t stride,
                                                 int64_t pad, int64_t out, int64_t& first,
                                                 int64_t& last) {
  const int64_t top = i + pad;  // o * stride <= top and o * stride > top - kernel
  first = top < kernel ? 0 : (top - kernel) / stride + 1;
  last = top / stride;
  if (last > out - 1) last = out - 1;
}

// ---- Max pooling --------------------------------------------------------------------------------

__global__ void max_pool_forward_kernel(Window w, const float* __restrict__ x,
                                        float* __restrict__ y, int32_t* __restrict__ argmax) {
  const int64_t total = w.planes * w.out_h * w.out_w;
  for (int64_t idx = global_thread_index(); idx < total; idx += grid_stride()) {
    const int64_t ow = idx % w.out_w;
    const int64_t oh = (idx / w.out_w) % w.out_h;
    const int64_t plane = idx / (w.out_w * w.out_h);
    const float* in = x + plane * w.in_h * w.in_w;
    const int64_t h0 = oh * w.stride_h - w.pad_h, w0 = ow * w.stride_w - w.pad_w;
    const int64_t h_begin = max(h0, int64_t{0}), h_end = min(h0 + w.kernel_h, w.in_h);
    const int64_t w_begin = max(w0, int64_t{0}), w_end = min(w0 + w.kernel_w, w.in_w);
    // Row-major scan; the first maximum wins ties, and the first NaN wins over any number.
    float best = -INFINITY;
    int64_t best_index = -1;
    for (int64_t h = h_begin; h < h_end; ++h) {
      for (int64_t c = w_begin; c < w_end; ++c) {
        const float v = in[h * w.in_w + c];
        if (best_index < 0 || v > best || (isnan(v) && !isnan(best))) {
          best = v;
          best_index = h * w.in_w + c;
        }
      }
    }
    y[idx] = best;  // -inf with argmax -1 only for a window lying wholly in the padding
    argmax[idx] = static_cast<int32_t>(best_index);
  }
}

__global__ void max_pool_backward_kernel(Window w, const float* __restrict__ grad_y,
                                         const int32_t* __restrict__ argmax,
                                         float* __restrict__ grad_x) {
  const int64_t total = w.planes * w.in_h * w.in_w;
  for (int64_t idx = global_thread_index(); idx < total; idx += grid_stride()) {
    const int64_t ix = idx % w.in_w;
    const int64_t iy = (idx / w.in_w) % w.in_h;
    const int64_t plane = idx / (w.in_w * w.in_h);
    const int32_t self = static_cast<int32_t>(iy * w.in_w + ix);
    int64_t oh_first, oh_last, ow_first, ow_last;
    covering_outputs(iy, w.kernel_h, w.stride_h, w.pad_h, w.out_h, oh_first, oh_last);
    covering_outputs(ix, w.kernel_w, w.stride_w, w.pad_w, w.out_w, ow_first, ow_last);
    const int64_t base = plane * w.out_h * w.out_w;
    float sum = 0.0f;
    for (int64_t oh = oh_first; oh <= oh_last; ++oh) {
      for (int64_t ow = ow_first; ow <= ow_last; ++ow) {
        const int64_t o = base + oh * w.out_w + ow;
        if (argmax[o] == self) sum += grad_y[o];
      }
    }
    grad_x[idx] = sum;
  }
}

// ---- Average pooling ----------------------------------------------------------------------------

// PyTorch's divisor: the window clipped to the padded input (never the ceil_mode overhang), then
// either counted as is (count_include_pad) or clipped further to the real input.
__device__ __forceinline__ int64_t avg_divisor(const Window& w, int64_t oh, int64_t ow,
                                               bool count_include_pad) {
  int64_t h0 = oh * w.stride_h - w.pad_h, w0 = ow * w.stride_w - w.pad_w;
  int64_t h1 = min(h0 + w.kernel_h, w.in_h + w.pad_h), w1 = min(w0 + w.kernel_w, w.in_w + w.pad_w);
  if (count_include_pad) return (h1 - h0) * (w1 - w0);
  h0 = max(h0, int64_t{0});
  w0 = max(w0, int64_t{0});
  h1 = min(h1, w.in_h);
  w1 = min(w1, w.in_w);
  return (h1 - h0) * (w1 - w0);
}

__global__ void avg_pool_forward_kernel(Window w, bool count_include_pad,
                                        const float* __restrict__ x, float* __restrict__ y) {
  const int64_t total = w.planes * w.out_h * w.out_w;
  for (int64_t idx = global_thread_index(); idx < total; idx += grid_stride()) {
    const int64_t ow = idx % w.out_w;
    const int64_t oh = (idx / w.out_w) % w.out_h;
    const int64_t plane = idx / (w.out_w * w.out_h);
    const float* in = x + plane * w.in_h * w.in_w;
    const int64_t h0 = oh * w.stride_h - w.pad_h, w0 = ow * w.stride_w - w.pad_w;
    const int64_t h_begin = max(h0, int64_t{0}), h_end = min(h0 + w.kernel_h, w.in_h);
    const int64_t w_begin = max(w0, int64_t{0}), w_end = min(w0 + w.kernel_w, w.in_w);
    float sum = 0.0f;
    for (int64_t h = h_begin; h < h_end; ++h) {
      for (int64_t c = w_begin; c < w_end; ++c) sum += in[h * w.in_w + c];
    }
    const int64_t divisor = avg_divisor(w, oh, ow, count_include_pad);
    y[idx] = divisor > 0 ? sum / static_cast<float>(divisor) : 0.0f;
  }
}

__global__ void avg_pool_backward_kernel(Window w, bool count_include_pad,
                                         const float* __restrict__ grad_y,
                                         float* __restrict__ grad_x) {
  const int64_t total = w.planes * w.in_h * w.in_w;
  for (int64_t idx = global_thread_index(); idx < total; idx += grid_stride()) {
    const int64_t ix = idx % w.in_w;
    const int64_t iy = (idx / w.in_w) % w.in_h;
    const int64_t plane = idx / (w.in_w * w.in_h);
    int64_t oh_first, oh_last, ow_first, ow_last;
    covering_outputs(iy, w.kernel_h, w.stride_h, w.pad_h, w.out_h, oh_first, oh_last);
    covering_outputs(ix, w.kernel_w, w.stride_w, w.pad_w, w.out_w, ow_first, ow_last);
    const int64_t base = plane * w.out_h * w.out_w;
    float sum = 0.0f;
    for (int64_t oh = oh_first; oh <= oh_last; ++oh) {
      for (int64_t ow = ow_first; ow <= ow_last; ++ow) {
        // Every window here contains this real element, so its divisor is at least 1.
        sum += grad_y[base + oh * w.out_w + ow] /
               static_cast<float>(avg_divisor(w, oh, ow, count_include_pad));
      }
    }
    grad_x[idx] = sum;
  }
}

// ---- Adaptive average pooling
// ---------------------------------------------------------------------

struct Bins {
  int64_t planes, in_h, in_w, out_h, out_w;
};

// Bin o of an axis covers [floor(o * in / out), ceil((o + 1) * in / out)).
__device__ __forceinline__ int64_t bin_start(int64_t o, int64_t in, int64_t out) {
  return (o * in) / out;
}
__device__ __forceinline__ int64_t bin_end(int64_t o, int64_t in, int64_t out) {
  return ((o + 1) * in + out - 1) / out;
}

// One thread per output, or one warp per output when bins are large (e.g. global pooling of a
// big plane); both sum in a fixed order.
template <bool kWarpPerOutput>
__global__ void adaptive_avg_forward_kernel(Bins b, const float* __restrict__ x,
                                            float* __restrict__ y) {
  const int64_t total = b.planes * b.out_h * b.out_w;
  const int lane = kWarpPerOutput ? static_cast<int>(threadIdx.x % kWarpSize) : 0;
  const int64_t first = kWarpPerOutput ? global_thread_index() / kWarpSize : global_thread_index();
  const int64_t step = kWarpPerOutput ? grid_stride() / kWarpSize : grid_stride();
  for (int64_t idx = first; idx < total; idx += step) {
    const int64_t ow = idx % b.out_w;
    const int64_t oh = (idx / b.out_w) % b.out_h;
    const int64_t plane = idx / (b.out_w * b.out_h);
    const float* in = x + plane * b.in_h * b.in_w;
    const int64_t h0 = bin_start(oh, b.in_h, b.out_h), h1 = bin_end(oh, b.in_h, b.out_h);
    const int64_t w0 = bin_start(ow, b.in_w, b.out_w), w1 = bin_end(ow, b.in_w, b.out_w);
    const int64_t width = w1 - w0;
    const int64_t cells = (h1 - h0) * width;
    float sum = 0.0f;
    for (int64_t k = lane; k < cells; k += (kWarpPerOutput ? kWarpSize : 1)) {
      sum += in[(h0 + k / width) * b.in_w + w0 + k % width];
    }
    if constexpr (kWarpPerOutput) sum = cuda_detail::warp_sum(sum);
    if (lane == 0) y[idx] = sum / static_cast<float>(cells);
  }
}

__global__ void adaptive_avg_backward_kernel(Bins b, const float* __restrict__ grad_y,
                                             float* __restrict__ grad_x) {
  const int64_t total = b.planes * b.in_h * b.in_w;
  for (int64_t idx = global_thread_index(); idx < total; idx += grid_stride()) {
    const int64_t ix = idx % b.in_w;
    const int64_t iy = (idx / b.in_w) % b.in_h;
    const int64_t plane = idx / (b.in_w * b.in_h);
    // Bins containing row i lie in [floor(i * out / in), ceil((i + 1) * out / in) - 1]; the
    // explicit test below keeps this exact at the edges.
    const int64_t oh_first = (iy * b.out_h) / b.in_h;
    const int64_t oh_last = min(((iy + 1) * b.out_h + b.in_h - 1) / b.in_h - 1, b.out_h - 1);
    const int64_t ow_first = (ix * b.out_w) / b.in_w;
    const int64_t ow_last = min(((ix + 1) * b.out_w + b.in_w - 1) / b.in_w - 1, b.out_w - 1);
    const int64_t base = plane * b.out_h * b.out_w;
    float sum = 0.0f;
    for (int64_t oh = oh_first; oh <= oh_last; ++oh) {
      const int64_t h0 = bin_start(oh, b.in_h, b.out_h), h1 = bin_end(oh, b.in_h, b.out_h);
      if (iy < h0 || iy >= h1) continue;
      for (int64_t ow = ow_first; ow <= ow_last; ++ow) {
        const int64_t w0 = bin_start(ow, b.in_w, b.out_w), w1 = bin_end(ow, b.in_w, b.out_w);
        if (ix < w0 || ix >= w1) continue;
        sum += grad_y[base + oh * b.out_w + ow] / static_cast<float>((h1 - h0) * (w1 - w0));
      }
    }
    grad_x[idx] = sum;
  }
}

Bins make_bins(const char* op, const AdaptivePool2dShape& s) {
  if (s.batch < 0 || s.channels < 0 || s.in_h <= 0 || s.in_w <= 0 || s.out_h <= 0 || s.out_w <= 0) {
    throw std::invalid_argument(std::string(op) + " (CUDA): invalid adaptive pooling shape (in " +
                                std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + ", out " +
                                std::to_string(s.out_h) + "x" + std::to_string(s.out_w) + ")");
  }
  return Bins{s.batch * s.channels, s.in_h, s.in_w, s.out_h, s.out_w};
}

}  // namespace

void max_pool2d_forward(const CudaContext& ctx, const Pool2dShape& s, const float* x, float* y,
                        int32_t* argmax) {
  const Window w = make_window("max_pool2d_forward", s);
  const int64_t total = w.planes * w.out_h * w.out_w;
  if (total == 0) return;
  max_pool_forward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, ctx.stream>>>(w, x, y, argmax);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void max_pool2d_backward(const CudaContext& ctx, const Pool2dShape& s, const float* grad_y,
                         const int32_t* argmax, float* grad_x) {
  const Window w = make_window("max_pool2d_backward", s);
  const int64_t total = w.planes * w.in_h * w.in_w;
  if (total == 0) return;
  max_pool_backward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, ctx.stream>>>(w, grad_y,
                                                                                   argmax, grad_x);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void avg_pool2d_forward(const CudaContext& ctx, const Pool2dShape& s, bool count_include_pad,
                        const float* x, float* y) {
  const Window w = make_window("avg_pool2d_forward", s);
  const int64_t total = w.planes * w.out_h * w.out_w;
  if (total == 0) return;
  avg_pool_forward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, ctx.stream>>>(
      w, count_include_pad, x, y);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void avg_pool2d_backward(const CudaContext& ctx, const Pool2dShape& s, bool count_include_pad,
                         const float* grad_y, float* grad_x) {
  const Window w = make_window("avg_pool2d_backward", s);
  const int64_t total = w.planes * w.in_h * w.in_w;
  if (total == 0) return;
  avg_pool_backward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, ctx.stream>>>(
      w, count_include_pad, grad_y, grad_x);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void adaptive_avg_pool2d_forward(const CudaContext& ctx, const AdaptivePool2dShape& s,
                                 const float* x, float* y) {
  const Bins b = make_bins("adaptive_avg_pool2d_forward", s);
  const int64_t total = b.planes * b.out_h * b.out_w;
  if (total == 0) return;
  // Largest bin along each axis is at most ceil(in / out) + 1 cells.
  const int64_t bin_cells = (b.in_h / b.out_h + 1) * (b.in_w / b.out_w + 1);
  if (bin_cells >= 64) {
    adaptive_avg_forward_kernel<true>
        <<<blocks_for(total * kWarpSize), kThreadsPerBlock, 0, ctx.stream>>>(b, x, y);
  } else {
    adaptive_avg_forward_kernel<false>
        <<<blocks_for(total), kThreadsPerBlock, 0, ctx.stream>>>(b, x, y);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void adaptive_avg_pool2d_backward(const CudaContext& ctx, const AdaptivePool2dShape& s,
                                  const float* grad_y, float* grad_x) {
  const Bins b = make_bins("adaptive_avg_pool2d_backward", s);
  const int64_t total = b.planes * b.in_h * b.in_w;
  if (total == 0) return;
  adaptive_avg_backward_kernel<<<blocks_for(total), kThreadsPerBlock, 0, ctx.stream>>>(b, grad_y,
                                                                                       grad_x);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

}  // namespace retort::kernels
