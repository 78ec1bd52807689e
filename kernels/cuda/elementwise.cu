// CUDA twins of kernels/elementwise.h: flat maps, broadcasting, strided copy/scatter, conversion.
#include "kernels/elementwise.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::aligned16;
using cuda_detail::blocks_for;
using cuda_detail::global_thread_index;
using cuda_detail::grid_stride;
using cuda_detail::kThreadsPerBlock;

// ---- Functors ---------------------------------------------------------------------------------

// relu/relu6 let NaN through (as PyTorch does): every comparison with NaN is false.
template <UnaryOp Op>
struct UnaryForwardFn {
  __device__ float operator()(float x) const {
    if constexpr (Op == UnaryOp::neg) return -x;
    if constexpr (Op == UnaryOp::exp) return expf(x);
    if constexpr (Op == UnaryOp::log) return logf(x);
    if constexpr (Op == UnaryOp::relu) return x <= 0.0f ? 0.0f : x;
    if constexpr (Op == UnaryOp::relu6) return x <= 0.0f ? 0.0f : (x >= 6.0f ? 6.0f : x);
  }
};

template <UnaryOp Op>
struct UnaryBackwardFn {
  __device__ float operator()(float x, float y, float grad_y) const {
    if constexpr (Op == UnaryOp::neg) return -grad_y;
    if constexpr (Op == UnaryOp::exp) return grad_y * y;
    if constexpr (Op == UnaryOp::log) return grad_y / x;
    if constexpr (Op == UnaryOp::relu) return x > 0.0f ? grad_y : 0.0f;
    if constexpr (Op == UnaryOp::relu6) return (x > 0.0f && x < 6.0f) ? grad_y : 0.0f;
  }
};

template <BinaryOp Op>
struct BinaryFn {
  __device__ float operator()(float a, float b) const {
    if constexpr (Op == BinaryOp::add) return a + b;
    if constexpr (Op == BinaryOp::sub) return a - b;
    if constexpr (Op == BinaryOp::mul) return a * b;
    if constexpr (Op == BinaryOp::div) return a / b;
  }
};

struct AffineFn {
  float alpha, beta;
  __device__ float operator()(float x) const { return fmaf(alpha, x, beta); }
};

struct AddFn {
  __device__ float operator()(float x, float y) const { return y + x; }
};

// ---- Flat maps --------------------------------------------------------------------------------
// With kVec4 every pointer is 16-byte aligned: the body moves float4s and a scalar tail finishes
// the last n % 4 elements. Inputs and output may alias (element i reads and writes index i only).

template <bool kVec4, typename F>
__global__ void map1_kernel(int64_t n, const float* x, float* y, F f) {
  int64_t begin = 0;
  if constexpr (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = global_thread_index(); i < n4; i += grid_stride()) {
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      reinterpret_cast<float4*>(y)[i] = make_float4(f(v.x), f(v.y), f(v.z), f(v.w));
    }
    begin = n4 * 4;
  }
  for (int64_t i = begin + global_thread_index(); i < n; i += grid_stride()) y[i] = f(x[i]);
}

template <bool kVec4, typename F>
__global__ void map2_kernel(int64_t n, const float* a, const float* b, float* y, F f) {
  int64_t begin = 0;
  if constexpr (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = global_thread_index(); i < n4; i += grid_stride()) {
      const float4 u = reinterpret_cast<const float4*>(a)[i];
      const float4 v = reinterpret_cast<const float4*>(b)[i];
      reinterpret_cast<float4*>(y)[i] =
          make_float4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
    }
    begin = n4 * 4;
  }
  for (int64_t i = begin + global_thread_index(); i < n; i += grid_stride()) {
    y[i] = f(a[i], b[i]);
  }
}

template <bool kVec4, typename F>
__global__ void map3_kernel(int64_t n, const float* a, const float* b, const float* c, float* y,
                            F f) {
  int64_t begin = 0;
  if constexpr (kVec4) {
    const int64_t n4 = n / 4;
    for (int64_t i = global_thread_index(); i < n4; i += grid_stride()) {
      const float4 u = reinterpret_cast<const float4*>(a)[i];
      const float4 v = reinterpret_cast<const float4*>(b)[i];
      const float4 w = reinterpret_cast<const float4*>(c)[i];
      reinterpret_cast<float4*>(y)[i] =
          make_float4(f(u.x, v.x, w.x), f(u.y, v.y, w.y), f(u.z, v.z, w.z), f(u.w, v.w, w.w));
    }
    begin = n4 * 4;
  }
  for (int64_t i = begin + global_thread_index(); i < n; i += grid_stride()) {
    y[i] = f(a[i], b[i], c[i]);
  }
}

template <bool kVec4>
__global__ void fill_kernel(int64_t n, float value, float* y) {
  int64_t begin = 0;
  if constexpr (kVec4) {
    const int64_t n4 = n / 4;
    const float4 v = make_float4(value, value, value, value);
    for (int64_t i = global_thread_index(); i < n4; i += grid_stride()) {
      reinterpret_cast<float4*>(y)[i] = v;
    }
    begin = n4 * 4;
  }
  for (int64_t i = begin + global_thread_index(); i < n; i += grid_stride()) y[i] = value;
}

// Work items for a flat map: float4 groups when vectorised (plus at most 3 tail elements that the
// same threads pick up), elements otherwise.
int64_t map_work(int64_t n, bool vec4) {
  return vec4 ? (n + 3) / 4 : n;
}

template <typename F>
void launch_map1(const CudaContext& ctx, int64_t n, const float* x, float* y, F f) {
  if (n <= 0) return;
  const bool vec4 = aligned16(x) && aligned16(y);
  const unsigned blocks = blocks_for(map_work(n, vec4));
  if (vec4) {
    map1_kernel<true><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, x, y, f);
  } else {
    map1_kernel<false><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, x, y, f);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

template <typename F>
void launch_map2(const CudaContext& ctx, int64_t n, const float* a, const float* b, float* y, F f) {
  if (n <= 0) return;
  const bool vec4 = aligned16(a) && aligned16(b) && aligned16(y);
  const unsigned blocks = blocks_for(map_work(n, vec4));
  if (vec4) {
    map2_kernel<true><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, a, b, y, f);
  } else {
    map2_kernel<false><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, a, b, y, f);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

template <typename F>
void launch_map3(const CudaContext& ctx, int64_t n, const float* a, const float* b, const float* c,
                 float* y, F f) {
  if (n <= 0) return;
  const bool vec4 = aligned16(a) && aligned16(b) && aligned16(c) && aligned16(y);
  const unsigned blocks = blocks_for(map_work(n, vec4));
  if (vec4) {
    map3_kernel<true><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, a, b, c, y, f);
  } else {
    map3_kernel<false><<<blocks, kThreadsPerBlock, 0, ctx.stream>>>(n, a, b, c, y, f);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

// ---- Broadcasting and strided gathers ----------------------------------------------------------

// Up to two strided operands over a row-major index space, with size-1 dimensions dropped and
// dimensions merged where both operands are contiguous across them (so (N, C, H, W) + (1, C, 1, 1)
// becomes three dimensions (N, C, H*W) and same-shape operands become one).
struct IndexSpace {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride_a[kMaxDims] = {};
  int64_t stride_b[kMaxDims] = {};
};

IndexSpace coalesce(int ndim, const int64_t* shape, const int64_t* stride_a,
                    const int64_t* stride_b) {
  if (ndim < 0 || ndim > kMaxDims) {
    throw std::invalid_argument("elementwise (CUDA): rank " + std::to_string(ndim) +
                                " outside [0, " + std::to_string(kMaxDims) + "]");
  }
  // Build innermost-first, then reverse into row-major order.
  IndexSpace inner_first;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    const int last = inner_first.ndim - 1;
    if (last >= 0 && stride_a[d] == inner_first.stride_a[last] * inner_first.shape[last] &&
        stride_b[d] == inner_first.stride_b[last] * inner_first.shape[last]) {
      inner_first.shape[last] *= shape[d];
      continue;
    }
    inner_first.shape[inner_first.ndim] = shape[d];
    inner_first.stride_a[inner_first.ndim] = stride_a[d];
    inner_first.stride_b[inner_first.ndim] = stride_b[d];
    ++inner_first.ndim;
  }
  IndexSpace out;
  out.ndim = inner_first.ndim;
  for (int d = 0; d < out.ndim; ++d) {
    const int src = out.ndim - 1 - d;
    out.shape[d] = inner_first.shape[src];
    out.stride_a[d] = inner_first.stride_a[src];
    out.stride_b[d] = inner_first.stride_b[src];
  }
  return out;
}

// Largest |offset| either operand reaches, to decide whether 32-bit index math is safe.
int64_t max_offset(const IndexSpace& s) {
  int64_t a = 0, b = 0;
  for (int d = 0; d < s.ndim; ++d) {
    a += (s.shape[d] - 1) * (s.stride_a[d] < 0 ? -s.stride_a[d] : s.stride_a[d]);
    b += (s.shape[d] - 1) * (s.stride_b[d] < 0 ? -s.stride_b[d] : s.stride_b[d]);
  }
  return a > b ? a : b;
}

// The same geometry in the index type the kernel computes with.
template <typename Index>
struct DeviceIndexSpace {
  int ndim;
  Index shape[kMaxDims];
  Index stride_a[kMaxDims];
  Index stride_b[kMaxDims];
};

template <typename Index>
DeviceIndexSpace<Index> to_device_space(const IndexSpace& s) {
  DeviceIndexSpace<Index> d{};
  d.ndim = s.ndim;
  for (int i = 0; i < s.ndim; ++i) {
    d.shape[i] = static_cast<Index>(s.shape[i]);
    d.stride_a[i] = static_cast<Index>(s.stride_a[i]);
    d.stride_b[i] = static_cast<Index>(s.stride_b[i]);
  }
  return d;
}

template <typename Index>
__device__ __forceinline__ void offsets_of(const DeviceIndexSpace<Index>& s, Index linear,
                                           Index& offset_a, Index& offset_b) {
  offset_a = 0;
  offset_b = 0;
  for (int d = s.ndim - 1; d >= 0; --d) {
    const Index coord = linear % s.shape[d];
    linear /= s.shape[d];
    offset_a += coord * s.stride_a[d];
    offset_b += coord * s.stride_b[d];
  }
}

template <typename Index, typename F>
__global__ void broadcast_kernel(Index n, DeviceIndexSpace<Index> s, const float* a, const float* b,
                                 float* out, F f) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    Index offset_a, offset_b;
    offsets_of(s, i, offset_a, offset_b);
    out[i] = f(a[offset_a], b[offset_b]);
  }
}

// One operand is a single value (read once per thread): x (op) scalar or scalar (op) x.
template <bool kScalarFirst, typename F>
__global__ void scalar_operand_kernel(int64_t n, const float* vector, const float* scalar,
                                      float* out, F f) {
  const float s = *scalar;
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    out[i] = kScalarFirst ? f(s, vector[i]) : f(vector[i], s);
  }
}

template <typename Index>
__global__ void gather_kernel(Index n, DeviceIndexSpace<Index> s, const float* x, float* y) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    Index offset, unused;
    offsets_of(s, i, offset, unused);
    y[i] = x[offset];
  }
}

// The inverse of gather_kernel: contiguous x into the strided view of y. Reads are coalesced; the
// writes are as scattered as the view.
template <typename Index>
__global__ void scatter_kernel(Index n, DeviceIndexSpace<Index> s, const float* x, float* y) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    Index offset, unused;
    offsets_of(s, i, offset, unused);
    y[offset] = x[i];
  }
}

// y[i] = float(x[i]). The conversion rounds to nearest even (int64 beyond 2^24 is inexact), as the
// CPU's static_cast does, so the twins agree bit for bit.
template <typename From>
__global__ void convert_to_float_kernel(int64_t n, const From* __restrict__ x,
                                        float* __restrict__ y) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    y[i] = static_cast<float>(x[i]);
  }
}

template <typename From>
void launch_convert_to_float(const CudaContext& ctx, int64_t n, const From* x, float* y) {
  if (n <= 0) return;
  convert_to_float_kernel<From><<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(n, x, y);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

// 32-bit index math is faster; it is safe when indices, offsets and the last grid-stride step
// (i + gridDim.x * blockDim.x) all stay below 2^31.
bool fits_int32(int64_t n, const IndexSpace& s) {
  constexpr int64_t kLimit = (int64_t{1} << 31) - cuda_detail::kMaxBlocks * kThreadsPerBlock;
  return n < kLimit && max_offset(s) < kLimit;
}

template <typename F>
void launch_binary(const CudaContext& ctx, const BroadcastShape& shape, const float* a,
                   const float* b, float* out, F f) {
  const int64_t n = shape.numel();
  if (n <= 0) return;
  const IndexSpace s = coalesce(shape.ndim, shape.shape, shape.stride_a, shape.stride_b);
  if (s.ndim == 0) {  // a single element
    launch_map2(ctx, 1, a, b, out, f);
    return;
  }
  if (s.ndim == 1) {
    if (s.stride_a[0] == 1 && s.stride_b[0] == 1) {
      launch_map2(ctx, n, a, b, out, f);
      return;
    }
    if (s.stride_a[0] == 1 && s.stride_b[0] == 0) {
      scalar_operand_kernel<false>
          <<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(n, a, b, out, f);
      RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
      return;
    }
    if (s.stride_a[0] == 0 && s.stride_b[0] == 1) {
      scalar_operand_kernel<true>
          <<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(n, b, a, out, f);
      RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
      return;
    }
  }
  if (fits_int32(n, s)) {
    broadcast_kernel<int32_t><<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(
        static_cast<int32_t>(n), to_device_space<int32_t>(s), a, b, out, f);
  } else {
    broadcast_kernel<int64_t><<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(
        n, to_device_space<int64_t>(s), a, b, out, f);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

}  // namespace

void unary_forward(const CudaContext& ctx, UnaryOp op, int64_t n, const float* x, float* y) {
  switch (op) {
    case UnaryOp::neg:
      return launch_map1(ctx, n, x, y, UnaryForwardFn<UnaryOp::neg>{});
    case UnaryOp::exp:
      return launch_map1(ctx, n, x, y, UnaryForwardFn<UnaryOp::exp>{});
    case UnaryOp::log:
      return launch_map1(ctx, n, x, y, UnaryForwardFn<UnaryOp::log>{});
    case UnaryOp::relu:
      return launch_map1(ctx, n, x, y, UnaryForwardFn<UnaryOp::relu>{});
    case UnaryOp::relu6:
      return launch_map1(ctx, n, x, y, UnaryForwardFn<UnaryOp::relu6>{});
  }
  throw std::invalid_argument("unary_forward (CUDA): unknown UnaryOp");
}

void unary_backward(const CudaContext& ctx, UnaryOp op, int64_t n, const float* x, const float* y,
                    const float* grad_y, float* grad_x) {
  switch (op) {
    case UnaryOp::neg:
      return launch_map3(ctx, n, x, y, grad_y, grad_x, UnaryBackwardFn<UnaryOp::neg>{});
    case UnaryOp::exp:
      return launch_map3(ctx, n, x, y, grad_y, grad_x, UnaryBackwardFn<UnaryOp::exp>{});
    case UnaryOp::log:
      return launch_map3(ctx, n, x, y, grad_y, grad_x, UnaryBackwardFn<UnaryOp::log>{});
    case UnaryOp::relu:
      return launch_map3(ctx, n, x, y, grad_y, grad_x, UnaryBackwardFn<UnaryOp::relu>{});
    case UnaryOp::relu6:
      return launch_map3(ctx, n, x, y, grad_y, grad_x, UnaryBackwardFn<UnaryOp::relu6>{});
  }
  throw std::invalid_argument("unary_backward (CUDA): unknown UnaryOp");
}

void binary_forward(const CudaContext& ctx, BinaryOp op, const BroadcastShape& shape,
                    const float* a, const float* b, float* out) {
  switch (op) {
    case BinaryOp::add:
      return launch_binary(ctx, shape, a, b, out, BinaryFn<BinaryOp::add>{});
    case BinaryOp::sub:
      return launch_binary(ctx, shape, a, b, out, BinaryFn<BinaryOp::sub>{});
    case BinaryOp::mul:
      return launch_binary(ctx, shape, a, b, out, BinaryFn<BinaryOp::mul>{});
    case BinaryOp::div:
      return launch_binary(ctx, shape, a, b, out, BinaryFn<BinaryOp::div>{});
  }
  throw std::invalid_argument("binary_forward (CUDA): unknown BinaryOp");
}

void affine_forward(const CudaContext& ctx, int64_t n, float alpha, float beta, const float* x,
                    float* y) {
  launch_map1(ctx, n, x, y, AffineFn{alpha, beta});
}

void accumulate(const CudaContext& ctx, int64_t n, const float* x, float* y) {
  launch_map2(ctx, n, x, y, y, AddFn{});
}

namespace {
__global__ void channel_bias_kernel(int64_t n, int64_t channels, int64_t plane,
                                    const float* bias, float* y) {
  for (int64_t i = global_thread_index(); i < n; i += grid_stride()) {
    y[i] += bias[(i / plane) % channels];
  }
}
}  // namespace

void add_channel_bias(const CudaContext& ctx, int64_t batch, int64_t channels, int64_t plane,
                      const float* bias, float* y) {
  const int64_t n = batch * channels * plane;
  if (n <= 0) return;
  channel_bias_kernel<<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(n, channels, plane,
                                                                          bias, y);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void fill_value(const CudaContext& ctx, int64_t n, float value, float* y) {
  if (n <= 0) return;
  const bool vec4 = aligned16(y);
  if (vec4) {
    fill_kernel<true>
        <<<blocks_for(map_work(n, true)), kThreadsPerBlock, 0, ctx.stream>>>(n, value, y);
  } else {
    fill_kernel<false><<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(n, value, y);
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

namespace {

// Moves the elements of a strided view between it and contiguous memory: a gather (view x ->
// contiguous y) or a scatter (contiguous x -> view y); a view that is contiguous after merging
// dimensions is one device copy.
template <bool kScatter>
void strided_move(const CudaContext& ctx, const StridedShape& view, const float* x, float* y) {
  const int64_t n = view.numel();
  if (n <= 0) return;
  // The second operand of the index space is unused; a zero stride never blocks a merge.
  const int64_t no_strides[kMaxDims] = {};
  const IndexSpace s = coalesce(view.ndim, view.shape, view.stride, no_strides);
  if (s.ndim == 0 || (s.ndim == 1 && s.stride_a[0] == 1)) {
    RETORT_CUDA_CHECK(cudaMemcpyAsync(y, x, static_cast<size_t>(n) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, ctx.stream));
    return;
  }
  auto launch = [&](auto index_tag) {
    using Index = decltype(index_tag);
    const auto space = to_device_space<Index>(s);
    if constexpr (kScatter) {
      scatter_kernel<Index><<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(
          static_cast<Index>(n), space, x, y);
    } else {
      gather_kernel<Index><<<blocks_for(n), kThreadsPerBlock, 0, ctx.stream>>>(
          static_cast<Index>(n), space, x, y);
    }
  };
  if (fits_int32(n, s)) {
    launch(int32_t{});
  } else {
    launch(int64_t{});
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

}  // namespace

void strided_copy(const CudaContext& ctx, const StridedShape& src, const float* x, float* y) {
  strided_move<false>(ctx, src, x, y);
}

void strided_scatter(const CudaContext& ctx, const StridedShape& dst, const float* x, float* y) {
  strided_move<true>(ctx, dst, x, y);
}

void convert(const CudaContext& ctx, int64_t n, const int64_t* x, float* y) {
  launch_convert_to_float(ctx, n, x, y);
}

void convert(const CudaContext& ctx, int64_t n, const uint8_t* x, float* y) {
  launch_convert_to_float(ctx, n, x, y);
}

}  // namespace retort::kernels
