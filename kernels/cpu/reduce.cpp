// CPU twin of the reduce family: sums over any set of dimensions in a fixed order.
#include "kernels/reduce.h"

#include "kernels/cpu/parallel.h"

namespace retort::kernels {

template <typename T>
void reduce_sum(const CpuContext& ctx, const ReduceShape& s, T scale, const T* x, T* y) {
  // Split the input dims into kept (output) and reduced ones, each with its input stride.
  int64_t in_stride[kMaxDims];
  int64_t stride = 1;
  for (int d = s.ndim - 1; d >= 0; --d) {
    in_stride[d] = stride;
    stride *= s.shape[d];
  }
  int n_keep = 0, n_red = 0;
  int64_t keep_shape[kMaxDims], keep_stride[kMaxDims], red_shape[kMaxDims], red_stride[kMaxDims];
  int64_t out_numel = 1, red_numel = 1;
  for (int d = 0; d < s.ndim; ++d) {
    if (s.reduce[d]) {
      red_shape[n_red] = s.shape[d];
      red_stride[n_red++] = in_stride[d];
      red_numel *= s.shape[d];
    } else {
      keep_shape[n_keep] = s.shape[d];
      keep_stride[n_keep++] = in_stride[d];
      out_numel *= s.shape[d];
    }
  }
  // Each output element sums its inputs in row-major order, accumulating in T; the loop over
  // outputs is the parallel one, so the result does not depend on the thread count.
#pragma omp parallel for num_threads(cpu_threads(ctx, out_numel* red_numel)) schedule(static)
  for (int64_t o = 0; o < out_numel; ++o) {
    int64_t base = 0, rest = o;
    for (int d = n_keep - 1; d >= 0; --d) {
      base += (rest % keep_shape[d]) * keep_stride[d];
      rest /= keep_shape[d];
    }
    if (n_red == 1) {
      T acc = T(0);
      const T* p = x + base;
      for (int64_t r = 0; r < red_numel; ++r) acc += p[r * red_stride[0]];
      y[o] = scale * acc;
      continue;
    }
    int64_t index[kMaxDims] = {};
    int64_t off = 0;
    T acc = T(0);
    for (int64_t r = 0; r < red_numel; ++r) {
      acc += x[base + off];
      for (int d = n_red - 1; d >= 0; --d) {
        ++index[d];
        off += red_stride[d];
        if (index[d] < red_shape[d]) break;
        off -= index[d] * red_stride[d];
        index[d] = 0;
      }
    }
    y[o] = scale * acc;
  }
}

template void reduce_sum<float>(const CpuContext&, const ReduceShape&, float, const float*, float*);
template void reduce_sum<double>(const CpuContext&, const ReduceShape&, double, const double*,
                                 double*);

}  // namespace retort::kernels
