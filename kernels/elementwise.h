// Elementwise kernels: unary maps, broadcasting binary ops, scalar affine maps, fills and strided copies.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

enum class UnaryOp { neg, exp, log, relu, relu6 };
enum class BinaryOp { add, sub, mul, div };

// Broadcast geometry for out = a (op) b. `shape` is the output shape; stride_a / stride_b are the
// element strides of a and b in that output index space (0 along a broadcast dimension).
struct BroadcastShape {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride_a[kMaxDims] = {};
  int64_t stride_b[kMaxDims] = {};
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
};

// A strided view: element (i0..ik) lives at offset sum(i_d * stride[d]) from the base pointer.
struct StridedShape {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
};

// y[i] = op(x[i]) for i < n. x and y may alias.
template <typename T>
void unary_forward(const CpuContext& ctx, UnaryOp op, int64_t n, const T* x, T* y);
void unary_forward(const CudaContext& ctx, UnaryOp op, int64_t n, const float* x, float* y);

// grad_x[i] = grad_y[i] * op'(x[i]); y = op(x) is passed too because exp's derivative is y.
// relu/relu6 pass the gradient where 0 < x (< 6), matching PyTorch (zero at the kinks).
template <typename T>
void unary_backward(const CpuContext& ctx, UnaryOp op, int64_t n, const T* x, const T* y,
                    const T* grad_y, T* grad_x);
void unary_backward(const CudaContext& ctx, UnaryOp op, int64_t n, const float* x,
                    const float* y, const float* grad_y, float* grad_x);

// out = a (op) b with broadcasting; out is contiguous in shape.shape.
template <typename T>
void binary_forward(const CpuContext& ctx, BinaryOp op, const BroadcastShape& shape, const T* a,
                    const T* b, T* out);
void binary_forward(const CudaContext& ctx, BinaryOp op, const BroadcastShape& shape,
                    const float* a, const float* b, float* out);

// y[i] = alpha * x[i] + beta. x and y may alias.
template <typename T>
void affine_forward(const CpuContext& ctx, int64_t n, T alpha, T beta, const T* x, T* y);
void affine_forward(const CudaContext& ctx, int64_t n, float alpha, float beta, const float* x,
                    float* y);

// y[i] += x[i]: the gradient-accumulation primitive.
template <typename T>
void accumulate(const CpuContext& ctx, int64_t n, const T* x, T* y);
void accumulate(const CudaContext& ctx, int64_t n, const float* x, float* y);

// y[(b * channels + c) * plane + p] += bias[c] for b < batch, c < channels, p < plane: a conv's
// bias on its (batch, channels, H * W) output, in one pass over y.
template <typename T>
void add_channel_bias(const CpuContext& ctx, int64_t batch, int64_t channels, int64_t plane,
                      const T* bias, T* y);
void add_channel_bias(const CudaContext& ctx, int64_t batch, int64_t channels, int64_t plane,
                      const float* bias, float* y);

// y[i] = value.
template <typename T>
void fill_value(const CpuContext& ctx, int64_t n, T value, T* y);
void fill_value(const CudaContext& ctx, int64_t n, float value, float* y);

// Gathers the strided view `src` (relative to x) into contiguous y, in row-major order.
template <typename T>
void strided_copy(const CpuContext& ctx, const StridedShape& src, const T* x, T* y);
void strided_copy(const CudaContext& ctx, const StridedShape& src, const float* x, float* y);

// Scatters contiguous x into the strided view `dst` (relative to y): the inverse of strided_copy.
// Elements of y outside the view are left as they are. The view must not overlap itself (no
// stride-0 dimension of size > 1): which of several writes to one element wins is unspecified.
template <typename T>
void strided_scatter(const CpuContext& ctx, const StridedShape& dst, const T* x, T* y);
void strided_scatter(const CudaContext& ctx, const StridedShape& dst, const float* x, float* y);

// y[i] = static_cast<To>(x[i]) (dtype conversion). The CPU twin has f32 <-> f64 and int64 or
// uint8 -> f32 or f64; the CUDA twins have the pairs with f32 output that the device needs, with
// the same round-to-nearest-even as the CPU (bit-identical results).
template <typename From, typename To>
void convert(const CpuContext& ctx, int64_t n, const From* x, To* y);
void convert(const CudaContext& ctx, int64_t n, const int64_t* x, float* y);
void convert(const CudaContext& ctx, int64_t n, const uint8_t* x, float* y);

}  // namespace retort::kernels
