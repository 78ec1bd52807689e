// CPU twins of the elementwise family: unary maps, broadcasting binary ops, fills and copies.
#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace retort::kernels {
namespace {

template <typename T, typename Fn>
void parallel_map(const CpuContext& ctx, int64_t n, Fn fn) {
#pragma omp parallel for num_threads(cpu_threads(ctx, n)) schedule(static)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// Walks the row-major index space of `ndim` dims, calling fn(linear_index, offset_a, offset_b)
// for each element; `begin`/`end` bound the linear range so threads can split the work.
template <typename Fn>
void walk_broadcast(const BroadcastShape& s, int64_t begin, int64_t end, Fn fn) {
  int64_t index[kMaxDims] = {};
  int64_t rest = begin;
  int64_t off_a = 0, off_b = 0;
  for (int d = s.ndim - 1; d >= 0; --d) {
    index[d] = rest % s.shape[d];
    rest /= s.shape[d];
    off_a += index[d] * s.stride_a[d];
    off_b += index[d] * s.stride_b[d];
  }
  for (int64_t i = begin; i < end; ++i) {
    fn(i, off_a, off_b);
    for (int d = s.ndim - 1; d >= 0; --d) {
      ++index[d];
      off_a += s.stride_a[d];
      off_b += s.stride_b[d];
      if (index[d] < s.shape[d]) break;
      off_a -= index[d] * s.stride_a[d];
      off_b -= index[d] * s.stride_b[d];
      index[d] = 0;
    }
  }
}

template <typename T, typename Op>
void binary_apply(const CpuContext& ctx, const BroadcastShape& s, const T* a, const T* b, T* out,
                  Op op) {
  const int64_t n = s.numel();
  const int threads = cpu_threads(ctx, n);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    walk_broadcast(s, begin, end,
                   [&](int64_t i, int64_t ia, int64_t ib) { out[i] = op(a[ia], b[ib]); });
  }
}

}  // namespace

template <typename T>
void unary_forward(const CpuContext& ctx, UnaryOp op, int64_t n, const T* x, T* y) {
  switch (op) {
    case UnaryOp::neg:
      parallel_map<T>(ctx, n, [&](int64_t i) { y[i] = -x[i]; });
      break;
    case UnaryOp::exp:
      parallel_map<T>(ctx, n, [&](int64_t i) { y[i] = std::exp(x[i]); });
      break;
    case UnaryOp::log:
      parallel_map<T>(ctx, n, [&](int64_t i) { y[i] = std::log(x[i]); });
      break;
    case UnaryOp::relu:
      parallel_map<T>(ctx, n, [&](int64_t i) { y[i] = x[i] < T(0) ? T(0) : x[i]; });  // NaN passes
      break;
    case UnaryOp::relu6:
      parallel_map<T>(ctx, n, [&](int64_t i) { y[i] = std::min(std::max(x[i], T(0)), T(6)); });
      break;
  }
}

template <typename T>
void unary_backward(const CpuContext& ctx, UnaryOp op, int64_t n, const T* x, const T* y,
                    const T* grad_y, T* grad_x) {
  switch (op) {
    case UnaryOp::neg:
      parallel_map<T>(ctx, n, [&](int64_t i) { grad_x[i] = -grad_y[i]; });
      break;
    case UnaryOp::exp:
      parallel_map<T>(ctx, n, [&](int64_t i) { grad_x[i] = grad_y[i] * y[i]; });
      break;
    case UnaryOp::log:
      parallel_map<T>(ctx, n, [&](int64_t i) { grad_x[i] = grad_y[i] / x[i]; });
      break;
    case UnaryOp::relu:
      parallel_map<T>(ctx, n, [&](int64_t i) { grad_x[i] = x[i] > T(0) ? grad_y[i] : T(0); });
      break;
    case UnaryOp::relu6:
      parallel_map<T>(
          ctx, n, [&](int64_t i) { grad_x[i] = (x[i] > T(0) && x[i] < T(6)) ? grad_y[i] : T(0); });
      break;
  }
}

template <typename T>
void binary_forward(const CpuContext& ctx, BinaryOp op, const BroadcastShape& s, const T* a,
                    const T* b, T* out) {
  switch (op) {
    case BinaryOp::add:
      binary_apply(ctx, s, a, b, out, [](T u, T v) { return u + v; });
      break;
    case BinaryOp::sub:
      binary_apply(ctx, s, a, b, out, [](T u, T v) { return u - v; });
      break;
    case BinaryOp::mul:
      binary_apply(ctx, s, a, b, out, [](T u, T v) { return u * v; });
      break;
    case BinaryOp::div:
      binary_apply(ctx, s, a, b, out, [](T u, T v) { return u / v; });
      break;
  }
}

template <typename T>
void affine_forward(const CpuContext& ctx, int64_t n, T alpha, T beta, const T* x, T* y) {
  parallel_map<T>(ctx, n, [&](int64_t i) { y[i] = alpha * x[i] + beta; });
}

template <typename T>
void accumulate(const CpuContext& ctx, int64_t n, const T* x, T* y) {
  parallel_map<T>(ctx, n, [&](int64_t i) { y[i] += x[i]; });
}

template <typename T>
void add_channel_bias(const CpuContext& ctx, int64_t batch, int64_t channels, int64_t plane,
                      const T* bias, T* y) {
  const int64_t planes = batch * channels;
  const int threads = cpu_threads(ctx, planes * plane);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t q = 0; q < planes; ++q) {
    const T b = bias[q % channels];
    T* row = y + q * plane;
    for (int64_t p = 0; p < plane; ++p) row[p] += b;
  }
}

template <typename T>
void fill_value(const CpuContext& ctx, int64_t n, T value, T* y) {
  parallel_map<T>(ctx, n, [&](int64_t i) { y[i] = value; });
}

template <typename T>
void strided_copy(const CpuContext& ctx, const StridedShape& src, const T* x, T* y) {
  BroadcastShape walk;
  walk.ndim = src.ndim;
  for (int d = 0; d < src.ndim; ++d) {
    walk.shape[d] = src.shape[d];
    walk.stride_a[d] = src.stride[d];
  }
  const int64_t n = src.numel();
  const int threads = cpu_threads(ctx, n);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    walk_broadcast(walk, n * t / nt, n * (t + 1) / nt,
                   [&](int64_t i, int64_t ix, int64_t) { y[i] = x[ix]; });
  }
}

template <typename T>
void strided_scatter(const CpuContext& ctx, const StridedShape& dst, const T* x, T* y) {
  BroadcastShape walk;
  walk.ndim = dst.ndim;
  for (int d = 0; d < dst.ndim; ++d) {
    walk.shape[d] = dst.shape[d];
    walk.stride_a[d] = dst.stride[d];
  }
  const int64_t n = dst.numel();
  const int threads = cpu_threads(ctx, n);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    walk_broadcast(walk, n * t / nt, n * (t + 1) / nt,
                   [&](int64_t i, int64_t iy, int64_t) { y[iy] = x[i]; });
  }
}

template <typename From, typename To>
void convert(const CpuContext& ctx, int64_t n, const From* x, To* y) {
  parallel_map<To>(ctx, n, [&](int64_t i) { y[i] = static_cast<To>(x[i]); });
}

#define RETORT_INSTANTIATE(T)                                                                   \
  template void unary_forward<T>(const CpuContext&, UnaryOp, int64_t, const T*, T*);            \
  template void unary_backward<T>(const CpuContext&, UnaryOp, int64_t, const T*, const T*,      \
                                  const T*, T*);                                                \
  template void binary_forward<T>(const CpuContext&, BinaryOp, const BroadcastShape&, const T*, \
                                  const T*, T*);                                                \
  template void affine_forward<T>(const CpuContext&, int64_t, T, T, const T*, T*);              \
  template void accumulate<T>(const CpuContext&, int64_t, const T*, T*);                        \
  template void add_channel_bias<T>(const CpuContext&, int64_t, int64_t, int64_t, const T*, T*); \
  template void fill_value<T>(const CpuContext&, int64_t, T, T*);                               \
  template void strided_copy<T>(const CpuContext&, const StridedShape&, const T*, T*);          \
  template void strided_scatter<T>(const CpuContext&, const StridedShape&, const T*, T*);
RETORT_INSTANTIATE(float)
RETORT_INSTANTIATE(double)
#undef RETORT_INSTANTIATE

template void fill_value<int64_t>(const CpuContext&, int64_t, int64_t, int64_t*);
template void fill_value<int32_t>(const CpuContext&, int64_t, int32_t, int32_t*);
template void strided_copy<int64_t>(const CpuContext&, const StridedShape&, const int64_t*,
                                    int64_t*);
template void strided_copy<int32_t>(const CpuContext&, const StridedShape&, const int32_t*,
                                    int32_t*);
template void strided_copy<uint8_t>(const CpuContext&, const StridedShape&, const uint8_t*,
                                    uint8_t*);
template void strided_scatter<int64_t>(const CpuContext&, const StridedShape&, const int64_t*,
                                       int64_t*);
template void convert<float, double>(const CpuContext&, int64_t, const float*, double*);
template void convert<double, float>(const CpuContext&, int64_t, const double*, float*);
template void convert<int64_t, float>(const CpuContext&, int64_t, const int64_t*, float*);
template void convert<int64_t, double>(const CpuContext&, int64_t, const int64_t*, double*);
template void convert<uint8_t, float>(const CpuContext&, int64_t, const uint8_t*, float*);
template void convert<uint8_t, double>(const CpuContext&, int64_t, const uint8_t*, double*);

}  // namespace retort::kernels
