// Pooling over NCHW planes: max and average windows, and adaptive (incl. global) average pooling.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// Window pooling geometry, PyTorch's rules: out = floor_or_ceil((in + 2*pad - kernel) / stride) + 1;
// with ceil_mode the last window must start inside the input or left padding.
struct Pool2dShape {
  int64_t batch = 0, channels = 0, in_h = 0, in_w = 0;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  int64_t out_h() const { return out_size(in_h, kernel_h, stride_h, pad_h); }
  int64_t out_w() const { return out_size(in_w, kernel_w, stride_w, pad_w); }
  int64_t out_size(int64_t in, int64_t k, int64_t st, int64_t pad) const {
    int64_t span = in + 2 * pad - k;
    int64_t out = (ceil_mode ? (span + st - 1) / st : span / st) + 1;
    if (ceil_mode && (out - 1) * st >= in + pad) --out;
    return out;
  }
};

// Max pooling. argmax receives, per output element, the flat index (h * in_w + w) of the chosen
// input inside its plane; padding never wins. The first maximum in row-major order wins ties.
template <typename T>
void max_pool2d_forward(const CpuContext& ctx, const Pool2dShape& s, const T* x, T* y,
                        int32_t* argmax);
void max_pool2d_forward(const CudaContext& ctx, const Pool2dShape& s, const float* x, float* y,
                        int32_t* argmax);

// grad_x = scatter of grad_y to the argmax positions (summed where windows overlap). Overwrites.
template <typename T>
void max_pool2d_backward(const CpuContext& ctx, const Pool2dShape& s, const T* grad_y,
                         const int32_t* argmax, T* grad_x);
void max_pool2d_backward(const CudaContext& ctx, const Pool2dShape& s, const float* grad_y,
                         const int32_t* argmax, float* grad_x);

// Average pooling. count_include_pad as PyTorch: the divisor counts padded positions inside the
// padded input (but never the ceil_mode overhang); otherwise only real input positions.
template <typename T>
void avg_pool2d_forward(const CpuContext& ctx, const Pool2dShape& s, bool count_include_pad,
                        const T* x, T* y);
void avg_pool2d_forward(const CudaContext& ctx, const Pool2dShape& s, bool count_include_pad,
                        const float* x, float* y);

template <typename T>
void avg_pool2d_backward(const CpuContext& ctx, const Pool2dShape& s, bool count_include_pad,
                         const T* grad_y, T* grad_x);
void avg_pool2d_backward(const CudaContext& ctx, const Pool2dShape& s, bool count_include_pad,
                         const float* grad_y, float* grad_x);

// Adaptive average pooling to (out_h, out_w), PyTorch's bins: rows [floor(i*in/out),
// ceil((i+1)*in/out)). out_h = out_w = 1 is global average pooling.
struct AdaptivePool2dShape {
  int64_t batch = 0, channels = 0, in_h = 0, in_w = 0, out_h = 1, out_w = 1;
};

template <typename T>
void adaptive_avg_pool2d_forward(const CpuContext& ctx, const AdaptivePool2dShape& s, const T* x,
                                 T* y);
void adaptive_avg_pool2d_forward(const CudaContext& ctx, const AdaptivePool2dShape& s,
                                 const float* x, float* y);

template <typename T>
void adaptive_avg_pool2d_backward(const CpuContext& ctx, const AdaptivePool2dShape& s,
                                  const T* grad_y, T* grad_x);
void adaptive_avg_pool2d_backward(const CudaContext& ctx, const AdaptivePool2dShape& s,
                                  const float* grad_y, float* grad_x);

}  // namespace retort::kernels
