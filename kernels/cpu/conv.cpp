// CPU twin of kernels/conv.h: im2col + Eigen GEMM over row tiles; direct loops for depthwise; the
// epilogue applied to each tile or plane as soon as it is computed.
#include "kernels/conv.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/conv_epilogue.h"
#include "kernels/cpu/parallel.h"
#include "kernels/gemm.h"

namespace retort::kernels {
namespace {

// Bytes of im2col columns one tile may hold: small enough to stay in a core's L2 while the GEMM
// packs it. A tile still spans at least kMinTilePixels output pixels (or the whole plane), so that
// each GEMM is wide enough to amortise packing the weights.
constexpr int64_t kColumnTileBytes = 384 * 1024;
constexpr int64_t kMinTilePixels = 256;

// GEMMs issued inside an OpenMP team run on the calling thread only.
constexpr CpuContext kSerial{1};

// Threads for a pass of `items` work items: the context's budget, capped by the item count and
// by the multiply-adds (small convolutions run on the calling thread rather than fork a team).
int thread_count(const CpuContext& ctx, const Conv2dShape& s, int64_t items) {
  const int64_t macs = s.batch * s.out_channels * s.out_h() * s.out_w() *
                       (s.in_channels / s.groups) * s.kernel_h * s.kernel_w;
  return static_cast<int>(std::clamp<int64_t>(items, 1, cpu_threads(ctx, macs, 16384)));
}

void check_shape(const Conv2dShape& s, const char* op) {
  auto fail = [op](const std::string& why) {
    throw std::invalid_argument(std::string(op) + " (cpu): " + why);
  };
  if (s.batch < 0 || s.in_channels <= 0 || s.out_channels <= 0 || s.in_h <= 0 || s.in_w <= 0) {
    fail("batch must be >= 0 and channels and spatial sizes > 0");
  }
  if (s.kernel_h <= 0 || s.kernel_w <= 0 || s.stride_h <= 0 || s.stride_w <= 0) {
    fail("kernel and stride must be > 0");
  }
  if (s.pad_h < 0 || s.pad_w < 0) fail("padding must be >= 0");
  if (s.groups <= 0 || s.in_channels % s.groups != 0 || s.out_channels % s.groups != 0) {
    fail("groups must divide both in_channels and out_channels");
  }
  if (s.in_h + 2 * s.pad_h < s.kernel_h || s.in_w + 2 * s.pad_w < s.kernel_w) {
    fail("kernel larger than the padded input");
  }
}

// Derived sizes shared by the three directions; "pix" counts spatial positions of one plane.
struct Geometry {
  int64_t in_per_group, out_per_group;
  int64_t k_per_group;  // rows of the im2col matrix: in_per_group * kernel_h * kernel_w
  int64_t out_h, out_w, out_pix, in_pix;
  int64_t tile_rows, tiles;  // output rows per im2col tile, and tiles per plane
  bool pointwise;            // 1x1, stride 1, no padding: x itself is the im2col matrix
  bool depthwise;            // one input and one output channel per group
  bool same_width;           // stride 1 and out_w == in_w: a tap's rows are contiguous in x
  int64_t kernel_h;

  Geometry(const Conv2dShape& s, size_t elem_bytes) {
    in_per_group = s.in_channels / s.groups;
    out_per_group = s.out_channels / s.groups;
    k_per_group = in_per_group * s.kernel_h * s.kernel_w;
    out_h = s.out_h();
    out_w = s.out_w();
    out_pix = out_h * out_w;
    in_pix = s.in_h * s.in_w;
    const int64_t row_bytes = k_per_group * out_w * static_cast<int64_t>(elem_bytes);
    const int64_t min_rows = (kMinTilePixels + out_w - 1) / out_w;
    tile_rows = std::min(std::max(kColumnTileBytes / row_bytes, min_rows), out_h);
    tiles = (out_h + tile_rows - 1) / tile_rows;
    pointwise = s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 &&
                s.pad_h == 0 && s.pad_w == 0;
    depthwise = in_per_group == 1 && out_per_group == 1;
    same_width = s.stride_h == 1 && s.stride_w == 1 && out_w == s.in_w;
    kernel_h = s.kernel_h;
  }
  int64_t rows_in_tile(int64_t tile) const { return std::min(tile_rows, out_h - tile * tile_rows); }
  // Enough for an im2col tile or an im2col_band tile: kh * rows >= rows + kh - 1.
  int64_t column_elems() const { return k_per_group * tile_rows * out_w; }
  int64_t band_length(int64_t rows) const { return (rows + kernel_h - 1) * out_w; }
};

// Output columns o in [lo, hi) read input column o * stride + offset inside [0, in_size).
struct Span {
  int64_t lo, hi;
};
Span valid_span(int64_t offset, int64_t stride, int64_t in_size, int64_t out_size) {
  const int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last = in_size - 1 - offset;
  const int64_t hi = last < 0 ? 0 : last / stride + 1;
  const int64_t clamped_lo = std::min(lo, out_size);
  return {clamped_lo, std::clamp(hi, clamped_lo, out_size)};
}

// dst[o] = src[o * stride] for o < count. Stride 2 (the downsampling convolutions) gets a
// compile-time stride so that the compiler can vectorise the de-interleave.
template <typename T>
void gather_strided(const T* __restrict src, int64_t stride, T* __restrict dst, int64_t count) {
  if (stride == 2) {
    for (int64_t o = 0; o < count; ++o) dst[o] = src[2 * o];
  } else {
    for (int64_t o = 0; o < count; ++o) dst[o] = src[o * stride];
  }
}

// dst[o * stride] += src[o] for o < count; the adjoint of gather_strided.
template <typename T>
void scatter_add_strided(const T* __restrict src, T* __restrict dst, int64_t stride,
                         int64_t count) {
  if (stride == 2) {
    for (int64_t o = 0; o < count; ++o) dst[2 * o] += src[o];
  } else {
    for (int64_t o = 0; o < count; ++o) dst[o * stride] += src[o];
  }
}

// col (channels * kernel_h * kernel_w, rows * out_w) = the receptive fields of output rows
// [row0, row0 + rows) over x (channels, in_h, in_w); padding reads as zero.
template <typename T>
void im2col(const Conv2dShape& s, const Geometry& geo, int64_t channels, const T* x, int64_t row0,
            int64_t rows, T* col) {
  const int64_t out_w = geo.out_w, pix = rows * out_w;
  for (int64_t c = 0; c < channels; ++c) {
    const T* plane = x + c * geo.in_pix;
    for (int64_t i = 0; i < s.kernel_h; ++i) {
      for (int64_t j = 0; j < s.kernel_w; ++j) {
        T* dst = col + ((c * s.kernel_h + i) * s.kernel_w + j) * pix;
        const int64_t offset = j - s.pad_w;
        const Span span = valid_span(offset, s.stride_w, s.in_w, out_w);
        if (geo.same_width) {
          // Output pixel p of the tile reads plane[base + p] wherever that tap is inside the
          // input: one contiguous copy, then zero what fell outside the plane or wrapped around
          // a row edge (the first span.lo and last out_w - span.hi columns of each row).
          const int64_t base = (row0 - s.pad_h + i) * s.in_w + offset;
          const int64_t lo = std::clamp<int64_t>(-base, 0, pix);
          const int64_t hi = std::clamp<int64_t>(geo.in_pix - base, lo, pix);
          std::fill(dst, dst + lo, T(0));
          std::copy(plane + base + lo, plane + base + hi, dst + lo);
          std::fill(dst + hi, dst + pix, T(0));
          for (int64_t r = 0; r < rows; ++r) {
            T* dst_row = dst + r * out_w;
            for (int64_t o = 0; o < span.lo; ++o) dst_row[o] = T(0);
            for (int64_t o = span.hi; o < out_w; ++o) dst_row[o] = T(0);
          }
          continue;
        }
        for (int64_t r = row0; r < row0 + rows; ++r, dst += out_w) {
          const int64_t ih = r * s.stride_h - s.pad_h + i;
          if (ih < 0 || ih >= s.in_h) {
            std::fill(dst, dst + out_w, T(0));
            continue;
          }
          const T* src = plane + ih * s.in_w;
          std::fill(dst, dst + span.lo, T(0));
          if (s.stride_w == 1) {
            std::copy(src + span.lo + offset, src + span.hi + offset, dst + span.lo);
          } else {
            gather_strided(src + span.lo * s.stride_w + offset, s.stride_w, dst + span.lo,
                           span.hi - span.lo);
          }
          std::fill(dst + span.hi, dst + out_w, T(0));
        }
      }
    }
  }
}

// For same_width convolutions: band (channels * kernel_w, (rows + kernel_h - 1) * out_w) holds,
// for each channel and kernel column j, the input rows that output rows [row0, row0 + rows) touch,
// shifted by j - pad_w with out-of-plane and row-wrapped entries zeroed. The im2col row of tap
// (c, i, j) is then row (c, j) of the band from offset i * out_w on, so the kernel_h taps of a
// column share one copy: the band costs a third of im2col's writes for 3x3 filters.
template <typename T>
void im2col_band(const Conv2dShape& s, const Geometry& geo, int64_t channels, const T* x,
                 int64_t row0, int64_t rows, T* band) {
  const int64_t out_w = geo.out_w, len = geo.band_length(rows);
  for (int64_t c = 0; c < channels; ++c) {
    const T* plane = x + c * geo.in_pix;
    for (int64_t j = 0; j < s.kernel_w; ++j) {
      T* dst = band + (c * s.kernel_w + j) * len;
      const int64_t offset = j - s.pad_w;
      const Span span = valid_span(offset, 1, s.in_w, out_w);
      const int64_t base = (row0 - s.pad_h) * s.in_w + offset;
      const int64_t lo = std::clamp<int64_t>(-base, 0, len);
      const int64_t hi = std::clamp<int64_t>(geo.in_pix - base, lo, len);
      std::fill(dst, dst + lo, T(0));
      std::copy(plane + base + lo, plane + base + hi, dst + lo);
      std::fill(dst + hi, dst + len, T(0));
      for (int64_t r = 0; r < rows + s.kernel_h - 1; ++r) {
        T* dst_row = dst + r * out_w;
        for (int64_t o = 0; o < span.lo; ++o) dst_row[o] = T(0);
        for (int64_t o = span.hi; o < out_w; ++o) dst_row[o] = T(0);
      }
    }
  }
}

// Where element e of a filter tensor (out_channels, in_per_group, kernel_h, kernel_w) sits in
// the band order below.
inline int64_t band_order_index(const Conv2dShape& s, const Geometry& geo, int64_t e) {
  const int64_t j = e % s.kernel_w, i = e / s.kernel_w % s.kernel_h;
  const int64_t ci = e / (s.kernel_w * s.kernel_h) % geo.in_per_group;
  const int64_t co = e / geo.k_per_group % geo.out_per_group,
                g = e / geo.k_per_group / geo.out_per_group;
  return ((g * s.kernel_h + i) * geo.out_per_group + co) * geo.in_per_group * s.kernel_w +
         ci * s.kernel_w + j;
}

// w (out_channels, in_per_group, kernel_h, kernel_w) -> (groups, kernel_h, out_per_group,
// in_per_group, kernel_w): the filters as kernel_h matrices that multiply an im2col_band.
template <typename T>
void filters_to_band_order(const Conv2dShape& s, const Geometry& geo, const T* w, T* banded) {
  const int64_t kh = s.kernel_h, kw = s.kernel_w;
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int64_t co = 0; co < geo.out_per_group; ++co) {
      for (int64_t ci = 0; ci < geo.in_per_group; ++ci) {
        for (int64_t i = 0; i < kh; ++i) {
          const T* src = w + (((g * geo.out_per_group + co) * geo.in_per_group + ci) * kh + i) * kw;
          T* dst =
              banded + ((g * kh + i) * geo.out_per_group + co) * geo.in_per_group * kw + ci * kw;
          std::copy(src, src + kw, dst);
        }
      }
    }
  }
}

// The adjoint of im2col: adds each column entry back onto the input position it was read from.
template <typename T>
void col2im_add(const Conv2dShape& s, const Geometry& geo, int64_t channels, const T* col,
                int64_t row0, int64_t rows, T* grad_x) {
  const int64_t out_w = geo.out_w, pix = rows * out_w;
  for (int64_t c = 0; c < channels; ++c) {
    T* plane = grad_x + c * geo.in_pix;
    for (int64_t i = 0; i < s.kernel_h; ++i) {
      for (int64_t j = 0; j < s.kernel_w; ++j) {
        const T* src = col + ((c * s.kernel_h + i) * s.kernel_w + j) * pix;
        const int64_t offset = j - s.pad_w;
        const Span span = valid_span(offset, s.stride_w, s.in_w, out_w);
        for (int64_t r = row0; r < row0 + rows; ++r, src += out_w) {
          const int64_t ih = r * s.stride_h - s.pad_h + i;
          if (ih < 0 || ih >= s.in_h) continue;
          T* dst = plane + ih * s.in_w;
          if (s.stride_w == 1) {
            for (int64_t o = span.lo; o < span.hi; ++o) dst[o + offset] += src[o];
          } else {
            scatter_add_strided(src + span.lo, dst + span.lo * s.stride_w + offset, s.stride_w,
                                span.hi - span.lo);
          }
        }
      }
    }
  }
}

// ---- Depthwise: one (kernel_h, kernel_w) filter per channel, direct loops over each plane. ----
// Each plane is first copied into a zero-bordered buffer of (in_h + 2 pad_h, in_w + 2 pad_w), so
// that every tap reads a plain (or, for stride 2, de-interleaved) run without bounds checks.

int64_t padded_plane_elems(const Conv2dShape& s) {
  return (s.in_h + 2 * s.pad_h) * (s.in_w + 2 * s.pad_w);
}

// padded (in_h + 2 pad_h, in_w + 2 pad_w) = plane (in_h, in_w) inside a zero border.
template <typename T>
void pad_plane(const Conv2dShape& s, const T* plane, T* padded) {
  const int64_t width = s.in_w + 2 * s.pad_w;
  std::fill(padded, padded + padded_plane_elems(s), T(0));
  for (int64_t h = 0; h < s.in_h; ++h) {
    std::copy(plane + h * s.in_w, plane + (h + 1) * s.in_w,
              padded + (h + s.pad_h) * width + s.pad_w);
  }
}

// row[o] += weight * src[o * stride] for o < count.
template <typename T>
void axpy_strided(T weight, const T* __restrict src, int64_t stride, T* __restrict row,
                  int64_t count) {
  if (stride == 1) {
    for (int64_t o = 0; o < count; ++o) row[o] += weight * src[o];
  } else if (stride == 2) {
    for (int64_t o = 0; o < count; ++o) row[o] += weight * src[2 * o];
  } else {
    for (int64_t o = 0; o < count; ++o) row[o] += weight * src[o * stride];
  }
}

// dst[o * stride] += weight * src[o] for o < count; the adjoint of axpy_strided.
template <typename T>
void scatter_add_scaled(T weight, const T* __restrict src, T* __restrict dst, int64_t stride,
                        int64_t count) {
  if (stride == 1) {
    for (int64_t o = 0; o < count; ++o) dst[o] += weight * src[o];
  } else {
    for (int64_t o = 0; o < count; ++o) dst[o * stride] += weight * src[o];
  }
}

// lanes[o] += a[o] * b[o * stride] for o < count.
template <typename T>
void multiply_add_strided(const T* __restrict a, const T* __restrict b, int64_t stride,
                          T* __restrict lanes, int64_t count) {
  if (stride == 1) {
    for (int64_t o = 0; o < count; ++o) lanes[o] += a[o] * b[o];
  } else if (stride == 2) {
    for (int64_t o = 0; o < count; ++o) lanes[o] += a[o] * b[2 * o];
  } else {
    for (int64_t o = 0; o < count; ++o) lanes[o] += a[o] * b[o * stride];
  }
}

// y plane (out_h, out_w) = x plane correlated with one filter w (kernel_h, kernel_w).
template <typename T>
void depthwise_plane_forward(const Conv2dShape& s, const Geometry& geo, const T* x, const T* w,
                             T* y, T* padded) {
  pad_plane(s, x, padded);
  const int64_t width = s.in_w + 2 * s.pad_w;
  if (s.kernel_h == 3 && s.kernel_w == 3 && s.stride_h == 1 && s.stride_w == 1) {
    // The common 3x3 stride-1 filter: each output written once, all nine taps in registers.
    const T w00 = w[0], w01 = w[1], w02 = w[2], w10 = w[3], w11 = w[4], w12 = w[5];
    const T w20 = w[6], w21 = w[7], w22 = w[8];
    for (int64_t r = 0; r < geo.out_h; ++r) {
      T* __restrict y_row = y + r * geo.out_w;
      const T* __restrict x0 = padded + r * width;
      const T* __restrict x1 = x0 + width;
      const T* __restrict x2 = x1 + width;
      for (int64_t o = 0; o < geo.out_w; ++o) {
        y_row[o] = w00 * x0[o] + w01 * x0[o + 1] + w02 * x0[o + 2] + w10 * x1[o] + w11 * x1[o + 1] +
                   w12 * x1[o + 2] + w20 * x2[o] + w21 * x2[o + 1] + w22 * x2[o + 2];
      }
    }
    return;
  }
  for (int64_t r = 0; r < geo.out_h; ++r) {
    T* y_row = y + r * geo.out_w;
    std::fill(y_row, y_row + geo.out_w, T(0));
    for (int64_t i = 0; i < s.kernel_h; ++i) {
      const T* x_row = padded + (r * s.stride_h + i) * width;
      for (int64_t j = 0; j < s.kernel_w; ++j) {
        axpy_strided(w[i * s.kernel_w + j], x_row + j, s.stride_w, y_row, geo.out_w);
      }
    }
  }
}

// grad_x plane (in_h, in_w) of one channel; accumulates in the padded buffer, then crops.
template <typename T>
void depthwise_plane_backward_data(const Conv2dShape& s, const Geometry& geo, const T* grad_y,
                                   const T* w, T* grad_x, T* padded) {
  const int64_t width = s.in_w + 2 * s.pad_w;
  std::fill(padded, padded + padded_plane_elems(s), T(0));
  for (int64_t r = 0; r < geo.out_h; ++r) {
    const T* gy_row = grad_y + r * geo.out_w;
    for (int64_t i = 0; i < s.kernel_h; ++i) {
      T* gx_row = padded + (r * s.stride_h + i) * width;
      for (int64_t j = 0; j < s.kernel_w; ++j) {
        scatter_add_scaled(w[i * s.kernel_w + j], gy_row, gx_row + j, s.stride_w, geo.out_w);
      }
    }
  }
  for (int64_t h = 0; h < s.in_h; ++h) {
    const T* src = padded + (h + s.pad_h) * width + s.pad_w;
    std::copy(src, src + s.in_w, grad_x + h * s.in_w);
  }
}

// Dot products accumulate into kDotLanes interleaved partial sums, so that the loop vectorises
// without reassociation; the caller adds the lanes up in a fixed order at the end.
constexpr int64_t kDotLanes = 32;

// partial[t % kDotLanes] += a[t] * b[t] for t < count.
template <typename T>
void dot_accumulate(const T* __restrict a, const T* __restrict b, int64_t count,
                    T* __restrict partial) {
  int64_t t = 0;
  for (; t + kDotLanes <= count; t += kDotLanes) {
    for (int64_t l = 0; l < kDotLanes; ++l) partial[l] += a[t + l] * b[t + l];
  }
  for (int64_t l = 0; t + l < count; ++l) partial[l] += a[t + l] * b[t + l];
}

// Scratch a depthwise backward_filter thread needs: a padded plane with kernel_w elements of
// zero slack past its end, and room for (kernel_h * kernel_w, out_w) lanes or for an
// (out_h, padded width) grid and (kernel_h * kernel_w, kDotLanes) partial sums.
int64_t depthwise_filter_scratch(const Conv2dShape& s, const Geometry& geo) {
  const int64_t lanes = s.kernel_h * s.kernel_w * geo.out_w;
  const int64_t grid = geo.out_h * (s.in_w + 2 * s.pad_w) + s.kernel_h * s.kernel_w * kDotLanes;
  return padded_plane_elems(s) + s.kernel_w + std::max(lanes, grid);
}

// grad_w (kernel_h, kernel_w) of channel c, summed over the batch in sample order.
template <typename T>
void depthwise_channel_backward_filter(const Conv2dShape& s, const Geometry& geo, int64_t c,
                                       const T* x, const T* grad_y, T* grad_w, T* scratch) {
  const int64_t width = s.in_w + 2 * s.pad_w, taps = s.kernel_h * s.kernel_w;
  T* padded = scratch;
  T* lanes = scratch + padded_plane_elems(s) + s.kernel_w;
  std::fill(padded + padded_plane_elems(s), lanes, T(0));
  if (s.stride_h == 1 && s.stride_w == 1) {
    // grad_y on an (out_h, width) grid whose extra columns are zero: tap (i, j) is then one dot
    // product of the grid with the padded plane from offset i * width + j, the zero columns
    // cancelling the products that wrap around a row (or reach into the slack).
    T* grid = lanes;
    T* partial = grid + geo.out_h * width;  // (taps, kDotLanes)
    std::fill(partial, partial + taps * kDotLanes, T(0));
    for (int64_t n = 0; n < s.batch; ++n) {
      pad_plane(s, x + (n * s.in_channels + c) * geo.in_pix, padded);
      const T* gy_plane = grad_y + (n * s.out_channels + c) * geo.out_pix;
      for (int64_t r = 0; r < geo.out_h; ++r) {
        std::copy(gy_plane + r * geo.out_w, gy_plane + (r + 1) * geo.out_w, grid + r * width);
        std::fill(grid + r * width + geo.out_w, grid + (r + 1) * width, T(0));
      }
      for (int64_t i = 0; i < s.kernel_h; ++i) {
        for (int64_t j = 0; j < s.kernel_w; ++j) {
          dot_accumulate(grid, padded + i * width + j, geo.out_h * width,
                         partial + (i * s.kernel_w + j) * kDotLanes);
        }
      }
    }
    for (int64_t t = 0; t < taps; ++t) {
      T sum = T(0);
      for (int64_t l = 0; l < kDotLanes; ++l) sum += partial[t * kDotLanes + l];
      grad_w[t] = sum;
    }
    return;
  }
  // Strided: each tap keeps one running sum per output column, reduced in order at the end.
  std::fill(lanes, lanes + taps * geo.out_w, T(0));
  for (int64_t n = 0; n < s.batch; ++n) {
    pad_plane(s, x + (n * s.in_channels + c) * geo.in_pix, padded);
    const T* gy_plane = grad_y + (n * s.out_channels + c) * geo.out_pix;
    for (int64_t r = 0; r < geo.out_h; ++r) {
      const T* gy_row = gy_plane + r * geo.out_w;
      for (int64_t i = 0; i < s.kernel_h; ++i) {
        const T* x_row = padded + (r * s.stride_h + i) * width;
        for (int64_t j = 0; j < s.kernel_w; ++j) {
          multiply_add_strided(gy_row, x_row + j, s.stride_w,
                               lanes + (i * s.kernel_w + j) * geo.out_w, geo.out_w);
        }
      }
    }
  }
  for (int64_t t = 0; t < taps; ++t) {
    T sum = T(0);
    for (int64_t o = 0; o < geo.out_w; ++o) sum += lanes[t * geo.out_w + o];
    grad_w[t] = sum;
  }
}

}  // namespace

// Work items are (sample, tile of output rows): independent, so batch 1 still spreads over threads.
// The epilogue runs on each item's outputs right after its GEMMs (or each depthwise plane), while
// they are still in cache, rather than as another pass over y.
template <typename T>
void conv2d_forward(const CpuContext& ctx, const Conv2dShape& s, const T* x, const T* w, T* y,
                    const ConvEpilogue<T>& epilogue) {
  check_shape(s, "conv2d_forward");
  const Geometry geo(s, sizeof(T));
  const cpu_detail::ConvEpilogueApplier<T> finish(epilogue);
  if (geo.depthwise) {
    const int64_t planes = s.batch * s.in_channels;
    const int threads = thread_count(ctx, s, planes);
    // (threads, in_h + 2 pad_h, in_w + 2 pad_w): one padded plane per thread.
    std::vector<T> padded(threads * padded_plane_elems(s));
#pragma omp parallel num_threads(threads)
    {
      T* buffer = padded.data() + omp_get_thread_num() * padded_plane_elems(s);
#pragma omp for schedule(static)
      for (int64_t p = 0; p < planes; ++p) {
        const int64_t c = p % s.in_channels;
        depthwise_plane_forward(s, geo, x + p * geo.in_pix, w + c * s.kernel_h * s.kernel_w,
                                y + p * geo.out_pix, buffer);
        if (!finish.empty()) finish.apply(c, p * geo.out_pix, geo.out_pix, y);
      }
    }
    return;
  }
  const int64_t items = s.batch * geo.tiles;
  const int threads = thread_count(ctx, s, items);
  // (threads, k_per_group, tile_rows * out_w): one im2col tile per thread.
  std::vector<T> columns(geo.pointwise ? 0 : threads * geo.column_elems());
  // (groups, kernel_h, out_per_group, in_per_group * kernel_w) for the band path.
  std::vector<T> banded(geo.same_width && !geo.pointwise ? s.out_channels * geo.k_per_group : 0);
  if (!banded.empty()) filters_to_band_order(s, geo, w, banded.data());
#pragma omp parallel num_threads(threads)
  {
    T* col = columns.data() + (geo.pointwise ? 0 : omp_get_thread_num() * geo.column_elems());
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / geo.tiles, tile = item % geo.tiles;
      const int64_t row0 = tile * geo.tile_rows, pix = geo.rows_in_tile(tile) * geo.out_w;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* x_g = x + (n * s.in_channels + g * geo.in_per_group) * geo.in_pix;
        const T* w_g = w + g * geo.out_per_group * geo.k_per_group;
        T* y_g = y + (n * s.out_channels + g * geo.out_per_group) * geo.out_pix + row0 * geo.out_w;
        if (geo.pointwise) {
          gemm(kSerial, false, false, geo.out_per_group, pix, geo.k_per_group, T(1), w_g,
               geo.k_per_group, x_g + row0 * geo.out_w, geo.in_pix, T(0), y_g, geo.out_pix);
        } else if (geo.same_width) {
          // y_g tile = sum over kernel rows i of banded_w (g, i) * band rows from i * out_w.
          const int64_t rows = pix / geo.out_w, len = geo.band_length(rows);
          const int64_t depth = geo.in_per_group * s.kernel_w;
          im2col_band(s, geo, geo.in_per_group, x_g, row0, rows, col);
          for (int64_t i = 0; i < s.kernel_h; ++i) {
            gemm(kSerial, false, false, geo.out_per_group, pix, depth, T(1),
                 banded.data() + (g * s.kernel_h + i) * geo.out_per_group * depth, depth,
                 col + i * geo.out_w, len, i == 0 ? T(0) : T(1), y_g, geo.out_pix);
          }
        } else {
          im2col(s, geo, geo.in_per_group, x_g, row0, pix / geo.out_w, col);
          gemm(kSerial, false, false, geo.out_per_group, pix, geo.k_per_group, T(1), w_g,
               geo.k_per_group, col, pix, T(0), y_g, geo.out_pix);
        }
        if (finish.empty()) continue;
        for (int64_t co = 0; co < geo.out_per_group; ++co) {
          const int64_t channel = g * geo.out_per_group + co;
          finish.apply(channel, (n * s.out_channels + channel) * geo.out_pix + row0 * geo.out_w,
                       pix, y);
        }
      }
    }
  }
}

// Stride 1 runs as a forward convolution (see below). Otherwise work items are samples: col2im of
// neighbouring row tiles overlaps, so a sample stays on one thread (pointwise convolutions have
// no overlap and split by tile as well).
template <typename T>
void conv2d_backward_data(const CpuContext& ctx, const Conv2dShape& s, const T* grad_y, const T* w,
                          T* grad_x) {
  check_shape(s, "conv2d_backward_data");
  const Geometry geo(s, sizeof(T));
  if (s.stride_h == 1 && s.stride_w == 1 && s.pad_h < s.kernel_h && s.pad_w < s.kernel_w &&
      !geo.pointwise) {
    // With stride 1 the adjoint is itself a convolution: grad_y correlated with the filters
    // flipped in space and with their channel roles swapped, padded by kernel - 1 - pad. Taking
    // the forward path keeps the GEMM depth at out_per_group * kernel_h * kernel_w and needs no
    // col2im scatter.
    Conv2dShape adjoint = s;
    adjoint.in_channels = s.out_channels;
    adjoint.out_channels = s.in_channels;
    adjoint.in_h = geo.out_h;
    adjoint.in_w = geo.out_w;
    adjoint.pad_h = s.kernel_h - 1 - s.pad_h;
    adjoint.pad_w = s.kernel_w - 1 - s.pad_w;
    const int64_t taps = s.kernel_h * s.kernel_w;
    // (in_channels, out_per_group, kernel_h, kernel_w): the flipped, transposed filters.
    std::vector<T> flipped(s.out_channels * geo.k_per_group);
    for (int64_t g = 0; g < s.groups; ++g) {
      for (int64_t co = 0; co < geo.out_per_group; ++co) {
        for (int64_t ci = 0; ci < geo.in_per_group; ++ci) {
          const T* src = w + ((g * geo.out_per_group + co) * geo.in_per_group + ci) * taps;
          T* dst = flipped.data() + ((g * geo.in_per_group + ci) * geo.out_per_group + co) * taps;
          for (int64_t t = 0; t < taps; ++t) dst[taps - 1 - t] = src[t];
        }
      }
    }
    conv2d_forward(ctx, adjoint, grad_y, flipped.data(), grad_x);
    return;
  }
  if (geo.depthwise) {
    const int64_t planes = s.batch * s.in_channels;
    const int threads = thread_count(ctx, s, planes);
    // (threads, in_h + 2 pad_h, in_w + 2 pad_w): one padded gradient plane per thread.
    std::vector<T> padded(threads * padded_plane_elems(s));
#pragma omp parallel num_threads(threads)
    {
      T* buffer = padded.data() + omp_get_thread_num() * padded_plane_elems(s);
#pragma omp for schedule(static)
      for (int64_t p = 0; p < planes; ++p) {
        const int64_t c = p % s.in_channels;
        depthwise_plane_backward_data(s, geo, grad_y + p * geo.out_pix,
                                      w + c * s.kernel_h * s.kernel_w, grad_x + p * geo.in_pix,
                                      buffer);
      }
    }
    return;
  }
  if (geo.pointwise) {
    // grad_x_g (in_per_group, pix) = w_g^T (in_per_group, out_per_group) * grad_y_g tile.
    const int64_t items = s.batch * geo.tiles;
    const int threads = thread_count(ctx, s, items);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / geo.tiles, tile = item % geo.tiles;
      const int64_t offset = tile * geo.tile_rows * geo.out_w;
      const int64_t pix = geo.rows_in_tile(tile) * geo.out_w;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* gy_g = grad_y + (n * s.out_channels + g * geo.out_per_group) * geo.out_pix;
        T* gx_g = grad_x + (n * s.in_channels + g * geo.in_per_group) * geo.in_pix;
        gemm(kSerial, true, false, geo.in_per_group, pix, geo.out_per_group, T(1),
             w + g * geo.out_per_group * geo.k_per_group, geo.k_per_group, gy_g + offset,
             geo.out_pix, T(0), gx_g + offset, geo.in_pix);
      }
    }
    return;
  }
  const int threads = thread_count(ctx, s, s.batch);
  // (threads, k_per_group, tile_rows * out_w): one column tile per thread.
  std::vector<T> columns(threads * geo.column_elems());
#pragma omp parallel num_threads(threads)
  {
    T* col = columns.data() + omp_get_thread_num() * geo.column_elems();
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.batch; ++n) {
      T* gx_n = grad_x + n * s.in_channels * geo.in_pix;
      std::fill(gx_n, gx_n + s.in_channels * geo.in_pix, T(0));
      for (int64_t tile = 0; tile < geo.tiles; ++tile) {
        const int64_t row0 = tile * geo.tile_rows, rows = geo.rows_in_tile(tile);
        const int64_t pix = rows * geo.out_w;
        for (int64_t g = 0; g < s.groups; ++g) {
          const T* gy_g = grad_y + (n * s.out_channels + g * geo.out_per_group) * geo.out_pix;
          // col (k_per_group, pix) = w_g^T (k_per_group, out_per_group) * grad_y_g tile.
          gemm(kSerial, true, false, geo.k_per_group, pix, geo.out_per_group, T(1),
               w + g * geo.out_per_group * geo.k_per_group, geo.k_per_group,
               gy_g + row0 * geo.out_w, geo.out_pix, T(0), col, pix);
          col2im_add(s, geo, geo.in_per_group, col, row0, rows,
                     gx_n + g * geo.in_per_group * geo.in_pix);
        }
      }
    }
  }
}

// Deterministic batch sum: a static schedule hands each thread a fixed, ordered run of
// (sample, tile) items; each thread accumulates into its own partial grad_w, and the partials are
// added in thread order. The result is reproducible bit for bit for a given thread count.
// Depthwise filters are instead split by channel, each summing its whole batch in order.
template <typename T>
void conv2d_backward_filter(const CpuContext& ctx, const Conv2dShape& s, const T* x,
                            const T* grad_y, T* grad_w) {
  check_shape(s, "conv2d_backward_filter");
  const Geometry geo(s, sizeof(T));
  const int64_t w_elems = s.out_channels * geo.k_per_group;
  if (geo.depthwise) {
    const int threads = thread_count(ctx, s, s.in_channels);
    const int64_t taps = s.kernel_h * s.kernel_w, per_thread = depthwise_filter_scratch(s, geo);
    std::vector<T> scratch(threads * per_thread);
#pragma omp parallel num_threads(threads)
    {
      T* own = scratch.data() + omp_get_thread_num() * per_thread;
#pragma omp for schedule(static)
      for (int64_t c = 0; c < s.in_channels; ++c) {
        depthwise_channel_backward_filter(s, geo, c, x, grad_y, grad_w + c * taps, own);
      }
    }
    return;
  }
  const int64_t items = s.batch * geo.tiles;
  const int threads = thread_count(ctx, s, items);
  // (threads, out_channels, k_per_group) partial sums, zeroed here, in the layout of grad_w or,
  // on the band path, of filters_to_band_order; then per-thread im2col tiles.
  const bool banded = geo.same_width && !geo.pointwise;
  std::vector<T> partials(threads * w_elems, T(0));
  std::vector<T> columns(geo.pointwise ? 0 : threads * geo.column_elems());
#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num();
    T* partial = partials.data() + thread * w_elems;
    T* col = columns.data() + (geo.pointwise ? 0 : thread * geo.column_elems());
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / geo.tiles, tile = item % geo.tiles;
      const int64_t row0 = tile * geo.tile_rows, pix = geo.rows_in_tile(tile) * geo.out_w;
      for (int64_t g = 0; g < s.groups; ++g) {
        const T* x_g = x + (n * s.in_channels + g * geo.in_per_group) * geo.in_pix;
        const T* gy_g =
            grad_y + (n * s.out_channels + g * geo.out_per_group) * geo.out_pix + row0 * geo.out_w;
        T* partial_g = partial + g * geo.out_per_group * geo.k_per_group;
        if (banded) {
          // partial_g (kernel_h, out_per_group, in_per_group * kernel_w): kernel row i
          // += grad_y_g tile * (band rows from i * out_w)^T.
          const int64_t rows = pix / geo.out_w, len = geo.band_length(rows);
          const int64_t depth = geo.in_per_group * s.kernel_w;
          im2col_band(s, geo, geo.in_per_group, x_g, row0, rows, col);
          for (int64_t i = 0; i < s.kernel_h; ++i) {
            gemm(kSerial, false, true, geo.out_per_group, depth, pix, T(1), gy_g, geo.out_pix,
                 col + i * geo.out_w, len, T(1), partial_g + i * geo.out_per_group * depth, depth);
          }
          continue;
        }
        // partial_g (out_per_group, k_per_group) += grad_y_g tile * col^T.
        const T* cols = x_g + row0 * geo.out_w;
        int64_t ld_cols = geo.in_pix;
        if (!geo.pointwise) {
          im2col(s, geo, geo.in_per_group, x_g, row0, pix / geo.out_w, col);
          cols = col;
          ld_cols = pix;
        }
        gemm(kSerial, false, true, geo.out_per_group, geo.k_per_group, pix, T(1), gy_g, geo.out_pix,
             cols, ld_cols, T(1), partial_g, geo.k_per_group);
      }
    }
    // Implicit barrier above; every element then sums the partials in thread order.
#pragma omp for schedule(static)
    for (int64_t e = 0; e < w_elems; ++e) {
      const int64_t p = banded ? band_order_index(s, geo, e) : e;
      T sum = partials[p];
      for (int t = 1; t < threads; ++t) sum += partials[t * w_elems + p];
      grad_w[e] = sum;
    }
  }
}

template void conv2d_forward<float>(const CpuContext&, const Conv2dShape&, const float*,
                                    const float*, float*, const ConvEpilogue<float>&);
template void conv2d_forward<double>(const CpuContext&, const Conv2dShape&, const double*,
                                     const double*, double*, const ConvEpilogue<double>&);
template void conv2d_backward_data<float>(const CpuContext&, const Conv2dShape&, const float*,
                                          const float*, float*);
template void conv2d_backward_data<double>(const CpuContext&, const Conv2dShape&, const double*,
                                           const double*, double*);
template void conv2d_backward_filter<float>(const CpuContext&, const Conv2dShape&, const float*,
                                            const float*, float*);
template void conv2d_backward_filter<double>(const CpuContext&, const Conv2dShape&, const double*,
                                             const double*, double*);

}  // namespace retort::kernels
