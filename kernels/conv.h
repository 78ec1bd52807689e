// 2-D convolution (NCHW, dilation 1, any groups) with an optional fused bias/residual/activation
// epilogue: im2col + GEMM on the CPU, cuDNN on CUDA.
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

enum class ConvActivation { none, relu, relu6 };

// What conv2d_forward applies to each output element as it is written, in this order, each step
// rounded to T: + bias[c], + residual, then the activation. The result is bit for bit that of the
// separate passes on the same device (add_channel_bias, binary add, unary relu/relu6), with their
// NaN and signed-zero behaviour.
template <typename T>
struct ConvEpilogue {
  const T* bias = nullptr;      // (out_channels), or none
  const T* residual = nullptr;  // (batch, out_channels, out_h, out_w), contiguous, or none; must
                                // not overlap y
  ConvActivation activation = ConvActivation::none;
  bool empty() const {
    return bias == nullptr && residual == nullptr && activation == ConvActivation::none;
  }
};

// y = epilogue(conv(x, w)). Overwrites y.
template <typename T>
void conv2d_forward(const CpuContext& ctx, const Conv2dShape& s, const T* x, const T* w, T* y,
                    const ConvEpilogue<T>& epilogue = {});
void conv2d_forward(const CudaContext& ctx, const Conv2dShape& s, const float* x, const float* w,
                    float* y, const ConvEpilogue<float>& epilogue = {});

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
