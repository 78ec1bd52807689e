// 2-D convolution (NCHW, no bias, dilation 1, any groups): im2col + GEMM on the CPU, cuDNN on CUDA.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// x: (batch, in_channels, in_h, in_w); w: (out_channels, in_channels / groups, kernel_h, kernel_w);
// y: (batch, out_channels, out_h, out_w). Both channel counts are divisible by groups.
struct Conv2dShape {
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t groups = 1;
  int64_t out_h() const { return (in_h + 2 * pad_h - kernel_h) / stride_h + 1; }
  int64_t out_w() const { return (in_w + 2 * pad_w - kernel_w) / stride_w + 1; }
};

// y = conv(x, w). Overwrites y.
template <typename T>
void conv2d_forward(const CpuContext& ctx, const Conv2dShape& s, const T* x, const T* w, T* y);
void conv2d_forward(const CudaContext& ctx, const Conv2dShape& s, const float* x, const float* w,
                    float* y);

// grad_x = d(sum grad_y * y)/dx. Overwrites grad_x.
template <typename T>
void conv2d_backward_data(const CpuContext& ctx, const Conv2dShape& s, const T* grad_y,
                          const T* w, T* grad_x);
void conv2d_backward_data(const CudaContext& ctx, const Conv2dShape& s, const float* grad_y,
                          const float* w, float* grad_x);

// grad_w = d(sum grad_y * y)/dw. Overwrites grad_w; the sum over the batch is deterministic.
template <typename T>
void conv2d_backward_filter(const CpuContext& ctx, const Conv2dShape& s, const T* x,
                            const T* grad_y, T* grad_w);
void conv2d_backward_filter(const CudaContext& ctx, const Conv2dShape& s, const float* x,
                            const float* grad_y, float* grad_w);

}  // namespace retort::kernels
