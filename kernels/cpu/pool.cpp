// CPU twins of the pooling family: max, average and adaptive average pooling, forward and backward.
#include "kernels/pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/parallel.h"

namespace retort::kernels {
namespace {

// Every kernel runs one (batch, channel) plane per iteration; backward passes zero their own
// grad_x plane and scatter into it in row-major output order, so there are no races and sums do
// not depend on the thread count.

// The input rows (or columns) [begin, end) covered by one window, and its PyTorch divisor
// with count_include_pad: the window clipped to the padded input (never the ceil_mode overhang).
struct Window {
  int64_t begin, end, padded_size;
};

inline Window window(int64_t out_index, int64_t in, int64_t k, int64_t stride, int64_t pad) {
  const int64_t start = out_index * stride - pad;
  const int64_t padded_end = std::min(start + k, in + pad);
  return {std::max<int64_t>(start, 0), std::min(padded_end, in), padded_end - start};
}

inline int64_t avg_divisor(const Window& wh, const Window& ww, bool count_include_pad) {
  return count_include_pad ? wh.padded_size * ww.padded_size
                           : (wh.end - wh.begin) * (ww.end - ww.begin);
}

// PyTorch's adaptive bins: [floor(i * in / out), ceil((i + 1) * in / out)).
inline int64_t adaptive_begin(int64_t i, int64_t in, int64_t out) {
  return (i * in) / out;
}
inline int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

}  // namespace

// An empty window (only possible with geometry PyTorch rejects, e.g. pad > kernel / 2) gives
// y = -inf and argmax = -1, which the backward skips. NaN propagates: the first NaN in a window
// wins, as in PyTorch where NaN compares as the maximum.
template <typename T>
void max_pool2d_forward(const CpuContext& ctx, const Pool2dShape& s, const T* x, T* y,
                        int32_t* argmax) {
  const int64_t planes = s.batch * s.channels;
  const int64_t out_h = s.out_h(), out_w = s.out_w();
  const int64_t in_plane = s.in_h * s.in_w, out_plane = out_h * out_w;
  const int threads = cpu_threads(ctx, planes * out_plane * s.kernel_h * s.kernel_w);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * in_plane;        // (in_h, in_w)
    T* yp = y + p * out_plane;             // (out_h, out_w)
    int32_t* ap = argmax + p * out_plane;  // (out_h, out_w)
    for (int64_t oh = 0; oh < out_h; ++oh) {
      const Window wh = window(oh, s.in_h, s.kernel_h, s.stride_h, s.pad_h);
      for (int64_t ow = 0; ow < out_w; ++ow) {
        const Window ww = window(ow, s.in_w, s.kernel_w, s.stride_w, s.pad_w);
        int64_t best_index = -1;
        T best = -std::numeric_limits<T>::infinity();
        for (int64_t h = wh.begin; h < wh.end; ++h) {
          for (int64_t w = ww.begin; w < ww.end; ++w) {
            const T v = xp[h * s.in_w + w];
            if (best_index < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              best_index = h * s.in_w + w;
            }
          }
        }
        yp[oh * out_w + ow] = best;
        ap[oh * out_w + ow] = static_cast<int32_t>(best_index);
      }
    }
  }
}

template <typename T>
void max_pool2d_backward(const CpuContext& ctx, const Pool2dShape& s, const T* grad_y,
                         const int32_t* argmax, T* grad_x) {
  const int64_t planes = s.batch * s.channels;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h() * s.out_w();
  const int threads = cpu_threads(ctx, planes * (in_plane + out_plane));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* gxp = grad_x + p * in_plane;              // (in_h, in_w)
    const T* gyp = grad_y + p * out_plane;       // (out_h, out_w)
    const int32_t* ap = argmax + p * out_plane;  // (out_h, out_w)
    std::fill(gxp, gxp + in_plane, T(0));
    for (int64_t o = 0; o < out_plane; ++o) {
      if (ap[o] >= 0) gxp[ap[o]] += gyp[o];
    }
  }
}

template <typename T>
void avg_pool2d_forward(const CpuContext& ctx, const Pool2dShape& s, bool count_include_pad,
                        const T* x, T* y) {
  const int64_t planes = s.batch * s.channels;
  const int64_t out_h = s.out_h(), out_w = s.out_w();
  const int64_t in_plane = s.in_h * s.in_w, out_plane = out_h * out_w;
  const int threads = cpu_threads(ctx, planes * out_plane * s.kernel_h * s.kernel_w);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * in_plane;  // (in_h, in_w)
    T* yp = y + p * out_plane;       // (out_h, out_w)
    for (int64_t oh = 0; oh < out_h; ++oh) {
      const Window wh = window(oh, s.in_h, s.kernel_h, s.stride_h, s.pad_h);
      for (int64_t ow = 0; ow < out_w; ++ow) {
        const Window ww = window(ow, s.in_w, s.kernel_w, s.stride_w, s.pad_w);
        double sum = 0.0;
        for (int64_t h = wh.begin; h < wh.end; ++h) {
          for (int64_t w = ww.begin; w < ww.end; ++w)
            sum += static_cast<double>(xp[h * s.in_w + w]);
        }
        const int64_t divisor = avg_divisor(wh, ww, count_include_pad);
        yp[oh * out_w + ow] =
            divisor > 0 ? static_cast<T>(sum / static_cast<double>(divisor)) : T(0);
      }
    }
  }
}

template <typename T>
void avg_pool2d_backward(const CpuContext& ctx, const Pool2dShape& s, bool count_include_pad,
                         const T* grad_y, T* grad_x) {
  const int64_t planes = s.batch * s.channels;
  const int64_t out_h = s.out_h(), out_w = s.out_w();
  const int64_t in_plane = s.in_h * s.in_w, out_plane = out_h * out_w;
  const int threads = cpu_threads(ctx, planes * out_plane * s.kernel_h * s.kernel_w);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* gxp = grad_x + p * in_plane;         // (in_h, in_w)
    const T* gyp = grad_y + p * out_plane;  // (out_h, out_w)
    std::fill(gxp, gxp + in_plane, T(0));
    for (int64_t oh = 0; oh < out_h; ++oh) {
      const Window wh = window(oh, s.in_h, s.kernel_h, s.stride_h, s.pad_h);
      for (int64_t ow = 0; ow < out_w; ++ow) {
        const Window ww = window(ow, s.in_w, s.kernel_w, s.stride_w, s.pad_w);
        const int64_t divisor = avg_divisor(wh, ww, count_include_pad);
        if (divisor <= 0) continue;
        const T g = static_cast<T>(static_cast<double>(gyp[oh * out_w + ow]) /
                                   static_cast<double>(divisor));
        for (int64_t h = wh.begin; h < wh.end; ++h) {
          for (int64_t w = ww.begin; w < ww.end; ++w) gxp[h * s.in_w + w] += g;
        }
      }
    }
  }
}

template <typename T>
void adaptive_avg_pool2d_forward(const CpuContext& ctx, const AdaptivePool2dShape& s, const T* x,
                                 T* y) {
  const int64_t planes = s.batch * s.channels;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  // Bins cover the input once when shrinking and overlap when growing: ~max(in, out) reads.
  const int threads = cpu_threads(ctx, planes * std::max(in_plane, out_plane));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * in_plane;  // (in_h, in_w)
    T* yp = y + p * out_plane;       // (out_h, out_w)
    for (int64_t oh = 0; oh < s.out_h; ++oh) {
      const int64_t h0 = adaptive_begin(oh, s.in_h, s.out_h);
      const int64_t h1 = adaptive_end(oh, s.in_h, s.out_h);
      for (int64_t ow = 0; ow < s.out_w; ++ow) {
        const int64_t w0 = adaptive_begin(ow, s.in_w, s.out_w);
        const int64_t w1 = adaptive_end(ow, s.in_w, s.out_w);
        double sum = 0.0;
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) sum += static_cast<double>(xp[h * s.in_w + w]);
        }
        yp[oh * s.out_w + ow] = static_cast<T>(sum / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
    }
  }
}

template <typename T>
void adaptive_avg_pool2d_backward(const CpuContext& ctx, const AdaptivePool2dShape& s,
                                  const T* grad_y, T* grad_x) {
  const int64_t planes = s.batch * s.channels;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int threads = cpu_threads(ctx, planes * std::max(in_plane, out_plane));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* gxp = grad_x + p * in_plane;         // (in_h, in_w)
    const T* gyp = grad_y + p * out_plane;  // (out_h, out_w)
    std::fill(gxp, gxp + in_plane, T(0));
    for (int64_t oh = 0; oh < s.out_h; ++oh) {
      const int64_t h0 = adaptive_begin(oh, s.in_h, s.out_h);
      const int64_t h1 = adaptive_end(oh, s.in_h, s.out_h);
      for (int64_t ow = 0; ow < s.out_w; ++ow) {
        const int64_t w0 = adaptive_begin(ow, s.in_w, s.out_w);
        const int64_t w1 = adaptive_end(ow, s.in_w, s.out_w);
        const T g = static_cast<T>(static_cast<double>(gyp[oh * s.out_w + ow]) /
                                   static_cast<double>((h1 - h0) * (w1 - w0)));
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) gxp[h * s.in_w + w] += g;
        }
      }
    }
  }
}

#define RETORT_POOL_INSTANTIATE(T)                                                                 \
  template void max_pool2d_forward<T>(const CpuContext&, const Pool2dShape&, const T*, T*,         \
                                      int32_t*);                                                   \
  template void max_pool2d_backward<T>(const CpuContext&, const Pool2dShape&, const T*,            \
                                       const int32_t*, T*);                                        \
  template void avg_pool2d_forward<T>(const CpuContext&, const Pool2dShape&, bool, const T*, T*);  \
  template void avg_pool2d_backward<T>(const CpuContext&, const Pool2dShape&, bool, const T*, T*); \
  template void adaptive_avg_pool2d_forward<T>(const CpuContext&, const AdaptivePool2dShape&,      \
                                               const T*, T*);                                      \
  template void adaptive_avg_pool2d_backward<T>(const CpuContext&, const AdaptivePool2dShape&,     \
                                                const T*, T*);

RETORT_POOL_INSTANTIATE(float)
RETORT_POOL_INSTANTIATE(double)

#undef RETORT_POOL_INSTANTIATE

}  // namespace retort::kernels
