// Tests of the CPU pooling kernels: naive double references, finite differences and hand values.
#include "kernels/pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::random_vector;

// Tolerances of a kernel against a double reference fed the same inputs. The float64 absolute
// floor equals the relative tolerance: values are O(1), so it only matters near zero.
template <typename T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double rel = test::kReferenceF32Rel, abs = test::kReferenceF32Abs;
};
template <>
struct Tol<double> {
  static constexpr double rel = test::kReferenceF64Rel, abs = test::kReferenceF64Abs;
};

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

Pool2dShape pool_shape(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                       int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                       int64_t pad_h, int64_t pad_w, bool ceil_mode) {
  Pool2dShape s;
  s.batch = batch;
  s.channels = channels;
  s.in_h = in_h;
  s.in_w = in_w;
  s.kernel_h = kernel_h;
  s.kernel_w = kernel_w;
  s.stride_h = stride_h;
  s.stride_w = stride_w;
  s.pad_h = pad_h;
  s.pad_w = pad_w;
  s.ceil_mode = ceil_mode;
  return s;
}

int64_t in_numel(const Pool2dShape& s) {
  return s.batch * s.channels * s.in_h * s.in_w;
}
int64_t out_numel(const Pool2dShape& s) {
  return s.batch * s.channels * s.out_h() * s.out_w();
}

// The window sweep, each case run with ceil_mode off and on: odd sizes, batch 1, a 1x1 input,
// padding, strides, overlapping windows (kernel 3 stride 2), asymmetric kernels, a ceil_mode
// window that is dropped (5, k2, s2, p1) and one that hangs over the edge (5, k2, s2, p0).
std::vector<Pool2dShape> sweep() {
  std::vector<Pool2dShape> shapes;
  for (bool ceil : {false, true}) {
    shapes.push_back(pool_shape(2, 3, 7, 5, 3, 3, 2, 2, 1, 1, ceil));
    shapes.push_back(pool_shape(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, ceil));
    shapes.push_back(pool_shape(1, 2, 5, 5, 2, 2, 2, 2, 0, 0, ceil));
    shapes.push_back(pool_shape(2, 1, 6, 7, 3, 3, 2, 2, 0, 0, ceil));
    shapes.push_back(pool_shape(1, 3, 4, 4, 2, 2, 1, 1, 1, 1, ceil));
    shapes.push_back(pool_shape(3, 2, 9, 8, 3, 3, 3, 3, 1, 1, ceil));
    shapes.push_back(pool_shape(1, 1, 5, 7, 3, 2, 2, 1, 1, 0, ceil));
    shapes.push_back(pool_shape(2, 2, 7, 5, 4, 4, 3, 3, 2, 2, ceil));
    shapes.push_back(pool_shape(1, 1, 5, 5, 2, 2, 2, 2, 1, 1, ceil));
    shapes.push_back(pool_shape(1, 2, 3, 3, 3, 3, 1, 1, 1, 1, ceil));
    shapes.push_back(pool_shape(1, 1, 7, 5, 7, 5, 1, 1, 0, 0, ceil));
    shapes.push_back(pool_shape(1, 2, 8, 11, 3, 5, 2, 3, 1, 2, ceil));
  }
  return shapes;
}

::testing::Message describe(const Pool2dShape& s) {
  return ::testing::Message() << "N" << s.batch << " C" << s.channels << " in " << s.in_h << "x"
                              << s.in_w << " k " << s.kernel_h << "x" << s.kernel_w << " s "
                              << s.stride_h << "x" << s.stride_w << " p " << s.pad_h << "x"
                              << s.pad_w << " ceil " << s.ceil_mode << " out " << s.out_h() << "x"
                              << s.out_w();
}

// Calls fn(plane, oh, ow, h, w, inside) for every window position in padded coordinates,
// row-major; `inside` says whether (h, w) is a real input position.
template <typename Fn>
void for_each_window_position(const Pool2dShape& s, Fn fn) {
  for (int64_t p = 0; p < s.batch * s.channels; ++p) {
    for (int64_t oh = 0; oh < s.out_h(); ++oh) {
      for (int64_t ow = 0; ow < s.out_w(); ++ow) {
        for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
          for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
            const int64_t h = oh * s.stride_h - s.pad_h + kh;
            const int64_t w = ow * s.stride_w - s.pad_w + kw;
            const bool inside = h >= 0 && h < s.in_h && w >= 0 && w < s.in_w;
            fn(p, oh, ow, h, w, inside);
          }
        }
      }
    }
  }
}

int64_t out_index(const Pool2dShape& s, int64_t p, int64_t oh, int64_t ow) {
  return (p * s.out_h() + oh) * s.out_w() + ow;
}

struct MaxReference {
  std::vector<double> y;
  std::vector<int32_t> argmax;
};

MaxReference reference_max(const Pool2dShape& s, const std::vector<double>& x) {
  MaxReference r{std::vector<double>(out_numel(s), -std::numeric_limits<double>::infinity()),
                 std::vector<int32_t>(out_numel(s), -1)};
  for_each_window_position(
      s, [&](int64_t p, int64_t oh, int64_t ow, int64_t h, int64_t w, bool inside) {
        if (!inside) return;
        const int64_t o = out_index(s, p, oh, ow);
        const double v = x[(p * s.in_h + h) * s.in_w + w];
        if (r.argmax[o] < 0 || v > r.y[o]) {
          r.y[o] = v;
          r.argmax[o] = static_cast<int32_t>(h * s.in_w + w);
        }
      });
  return r;
}

std::vector<double> reference_max_backward(const Pool2dShape& s, const std::vector<double>& grad_y,
                                           const std::vector<int32_t>& argmax) {
  std::vector<double> grad_x(in_numel(s), 0.0);
  const int64_t out_plane = s.out_h() * s.out_w();
  for (int64_t o = 0; o < out_numel(s); ++o) {
    grad_x[(o / out_plane) * s.in_h * s.in_w + argmax[o]] += grad_y[o];
  }
  return grad_x;
}

// PyTorch's divisors: with count_include_pad every window position inside the padded input
// [-pad, in + pad) counts (never the ceil_mode overhang past it); otherwise real positions only.
std::vector<double> avg_divisors(const Pool2dShape& s, bool count_include_pad) {
  std::vector<double> divisor(out_numel(s), 0.0);
  for_each_window_position(
      s, [&](int64_t p, int64_t oh, int64_t ow, int64_t h, int64_t w, bool inside) {
        const bool in_padded = h < s.in_h + s.pad_h && w < s.in_w + s.pad_w;
        if (count_include_pad ? in_padded : inside) divisor[out_index(s, p, oh, ow)] += 1;
      });
  return divisor;
}

std::vector<double> reference_avg(const Pool2dShape& s, bool count_include_pad,
                                  const std::vector<double>& x) {
  const std::vector<double> divisor = avg_divisors(s, count_include_pad);
  std::vector<double> y(out_numel(s), 0.0);
  for_each_window_position(
      s, [&](int64_t p, int64_t oh, int64_t ow, int64_t h, int64_t w, bool inside) {
        const int64_t o = out_index(s, p, oh, ow);
        if (inside) y[o] += x[(p * s.in_h + h) * s.in_w + w] / divisor[o];
      });
  return y;
}

std::vector<double> reference_avg_backward(const Pool2dShape& s, bool count_include_pad,
                                           const std::vector<double>& grad_y) {
  const std::vector<double> divisor = avg_divisors(s, count_include_pad);
  std::vector<double> grad_x(in_numel(s), 0.0);
  for_each_window_position(
      s, [&](int64_t p, int64_t oh, int64_t ow, int64_t h, int64_t w, bool inside) {
        const int64_t o = out_index(s, p, oh, ow);
        if (inside) grad_x[(p * s.in_h + h) * s.in_w + w] += grad_y[o] / divisor[o];
      });
  return grad_x;
}

// Adaptive bins from floating-point floor/ceil, independent of the kernel's integer arithmetic.
struct Bin {
  int64_t begin, end;
};
Bin adaptive_bin(int64_t i, int64_t in, int64_t out) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  return {static_cast<int64_t>(std::floor(static_cast<double>(i) * scale)),
          static_cast<int64_t>(std::ceil(static_cast<double>(i + 1) * scale))};
}

// Calls fn(input_index, output_index, bin_size) for every input position of every bin.
template <typename Fn>
void for_each_adaptive_position(const AdaptivePool2dShape& s, Fn fn) {
  for (int64_t p = 0; p < s.batch * s.channels; ++p) {
    for (int64_t oh = 0; oh < s.out_h; ++oh) {
      const Bin bh = adaptive_bin(oh, s.in_h, s.out_h);
      for (int64_t ow = 0; ow < s.out_w; ++ow) {
        const Bin bw = adaptive_bin(ow, s.in_w, s.out_w);
        const double size = static_cast<double>((bh.end - bh.begin) * (bw.end - bw.begin));
        for (int64_t h = bh.begin; h < bh.end; ++h) {
          for (int64_t w = bw.begin; w < bw.end; ++w) {
            fn((p * s.in_h + h) * s.in_w + w, (p * s.out_h + oh) * s.out_w + ow, size);
          }
        }
      }
    }
  }
}

int64_t in_numel(const AdaptivePool2dShape& s) {
  return s.batch * s.channels * s.in_h * s.in_w;
}
int64_t out_numel(const AdaptivePool2dShape& s) {
  return s.batch * s.channels * s.out_h * s.out_w;
}

std::vector<double> reference_adaptive(const AdaptivePool2dShape& s, const std::vector<double>& x) {
  std::vector<double> y(out_numel(s), 0.0);
  for_each_adaptive_position(s, [&](int64_t i, int64_t o, double size) { y[o] += x[i] / size; });
  return y;
}

std::vector<double> reference_adaptive_backward(const AdaptivePool2dShape& s,
                                                const std::vector<double>& grad_y) {
  std::vector<double> grad_x(in_numel(s), 0.0);
  for_each_adaptive_position(
      s, [&](int64_t i, int64_t o, double size) { grad_x[i] += grad_y[o] / size; });
  return grad_x;
}

// Adaptive sweep: 7x5 down to 1x1 (global), 2x2, 3x3, to itself, to uneven bins, and up-sampling
// (overlapping bins), with batch and channel counts of 1 and more.
std::vector<AdaptivePool2dShape> adaptive_sweep() {
  return {{2, 3, 7, 5, 1, 1}, {2, 3, 7, 5, 2, 2}, {1, 2, 7, 5, 3, 3}, {1, 1, 7, 5, 7, 5},
          {2, 1, 7, 5, 4, 3}, {1, 2, 3, 2, 5, 4}, {1, 1, 1, 1, 2, 3}, {3, 2, 9, 6, 2, 4}};
}

// Central differences of L = sum(w * f(x)) with respect to each element of x, in double.
template <typename Forward>
std::vector<double> finite_difference(std::vector<double> x, const std::vector<double>& w,
                                      Forward forward) {
  auto loss = [&](const std::vector<double>& v) {
    const std::vector<double> y = forward(v);
    double sum = 0.0;
    for (size_t k = 0; k < y.size(); ++k) sum += w[k] * y[k];
    return sum;
  };
  std::vector<double> grad(x.size());
  for (size_t k = 0; k < x.size(); ++k) {
    const double saved = x[k];
    x[k] = saved + test::kGradcheckStep;
    const double plus = loss(x);
    x[k] = saved - test::kGradcheckStep;
    const double minus = loss(x);
    x[k] = saved;
    grad[k] = (plus - minus) / (2 * test::kGradcheckStep);
  }
  return grad;
}

template <typename T>
class PoolTest : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(PoolTest, Dtypes);

TEST(PoolShape, OutputSizesMatchPyTorch) {
  // (in, kernel, stride, pad) -> out without / with ceil_mode, as nn.MaxPool2d reports.
  struct Case {
    int64_t in, k, st, pad, floor_out, ceil_out;
  };
  for (const Case& c : std::vector<Case>{{7, 3, 2, 1, 4, 4},
                                         {5, 2, 2, 1, 3, 3},
                                         {6, 3, 2, 0, 2, 3},
                                         {5, 2, 2, 0, 2, 3},
                                         {1, 1, 1, 0, 1, 1},
                                         {7, 4, 3, 2, 3, 3},
                                         {8, 3, 3, 1, 3, 3}}) {
    SCOPED_TRACE(::testing::Message()
                 << "in " << c.in << " k " << c.k << " s " << c.st << " p " << c.pad);
    EXPECT_EQ(pool_shape(1, 1, c.in, 1, c.k, 1, c.st, 1, c.pad, 0, false).out_h(), c.floor_out);
    EXPECT_EQ(pool_shape(1, 1, c.in, 1, c.k, 1, c.st, 1, c.pad, 0, true).out_h(), c.ceil_out);
  }
}

TYPED_TEST(PoolTest, MaxForwardMatchesReference) {
  using T = TypeParam;
  uint32_t seed = 1;
  for (const Pool2dShape& s : sweep()) {
    SCOPED_TRACE(describe(s));
    const std::vector<T> x = random_vector<T>(in_numel(s), seed++);
    std::vector<T> y(out_numel(s));
    std::vector<int32_t> argmax(out_numel(s));
    max_pool2d_forward<T>(CpuContext{}, s, x.data(), y.data(), argmax.data());
    const MaxReference ref = reference_max(s, to_double(x));
    EXPECT_TRUE(all_close(y, ref.y, 0.0, 0.0));  // a max is exact
    EXPECT_EQ(argmax, ref.argmax);
  }
}

// Values from {0, 1, 2} make ties common: the first maximum in row-major order must win.
TYPED_TEST(PoolTest, MaxTiesPickFirstInRowMajorOrder) {
  using T = TypeParam;
  uint32_t seed = 100;
  for (const Pool2dShape& s : sweep()) {
    SCOPED_TRACE(describe(s));
    std::vector<T> x = random_vector<T>(in_numel(s), seed++, T(0), T(3));
    for (T& v : x) v = std::floor(v);
    std::vector<T> y(out_numel(s));
    std::vector<int32_t> argmax(out_numel(s));
    max_pool2d_forward<T>(CpuContext{}, s, x.data(), y.data(), argmax.data());
    const MaxReference ref = reference_max(s, to_double(x));
    EXPECT_TRUE(all_close(y, ref.y, 0.0, 0.0));
    EXPECT_EQ(argmax, ref.argmax);
  }
}

TEST(MaxPoolHandValues, PaddingNeverWinsAndNanPropagates) {
  // 2x2 input of negatives, k3 s1 p1: every window sees padding, yet the max is a real -1.
  const Pool2dShape s = pool_shape(1, 1, 2, 2, 3, 3, 1, 1, 1, 1, false);
  const std::vector<double> x = {-4, -3, -2, -1};
  std::vector<double> y(4);
  std::vector<int32_t> argmax(4);
  max_pool2d_forward<double>(CpuContext{}, s, x.data(), y.data(), argmax.data());
  EXPECT_EQ(y, std::vector<double>(4, -1.0));
  EXPECT_EQ(argmax, std::vector<int32_t>(4, 3));
  // All equal: index 0 wins; a NaN wins over numbers, as in PyTorch.
  const Pool2dShape t = pool_shape(1, 1, 2, 4, 2, 2, 2, 2, 0, 0, false);
  const std::vector<double> z = {5, 5, 1, std::nan(""), 5, 5, 7, 2};  // (2, 4)
  std::vector<double> yz(2);
  std::vector<int32_t> az(2);
  max_pool2d_forward<double>(CpuContext{}, t, z.data(), yz.data(), az.data());
  EXPECT_EQ(yz[0], 5.0);
  EXPECT_EQ(az[0], 0);
  EXPECT_TRUE(std::isnan(yz[1]));
  EXPECT_EQ(az[1], 3);
}

TYPED_TEST(PoolTest, MaxBackwardScattersToArgmax) {
  using T = TypeParam;
  uint32_t seed = 200;
  for (const Pool2dShape& s : sweep()) {
    SCOPED_TRACE(describe(s));
    const std::vector<T> x = random_vector<T>(in_numel(s), seed++);
    const std::vector<T> grad_y = random_vector<T>(out_numel(s), seed++);
    std::vector<T> y(out_numel(s));
    std::vector<int32_t> argmax(out_numel(s));
    max_pool2d_forward<T>(CpuContext{}, s, x.data(), y.data(), argmax.data());
    // grad_x starts as garbage: the kernel overwrites.
    std::vector<T> grad_x(in_numel(s), T(123));
    max_pool2d_backward<T>(CpuContext{}, s, grad_y.data(), argmax.data(), grad_x.data());
    const MaxReference ref = reference_max(s, to_double(x));
    EXPECT_TRUE(all_close(grad_x, reference_max_backward(s, to_double(grad_y), ref.argmax),
                          Tol<T>::rel, Tol<T>::abs));
  }
}

TYPED_TEST(PoolTest, AvgForwardMatchesReference) {
  using T = TypeParam;
  uint32_t seed = 300;
  for (const Pool2dShape& s : sweep()) {
    for (bool include_pad : {false, true}) {
      SCOPED_TRACE(describe(s) << " count_include_pad " << include_pad);
      const std::vector<T> x = random_vector<T>(in_numel(s), seed++);
      std::vector<T> y(out_numel(s));
      avg_pool2d_forward<T>(CpuContext{}, s, include_pad, x.data(), y.data());
      EXPECT_TRUE(
          all_close(y, reference_avg(s, include_pad, to_double(x)), Tol<T>::rel, Tol<T>::abs));
    }
  }
}

TYPED_TEST(PoolTest, AvgBackwardMatchesReference) {
  using T = TypeParam;
  uint32_t seed = 400;
  for (const Pool2dShape& s : sweep()) {
    for (bool include_pad : {false, true}) {
      SCOPED_TRACE(describe(s) << " count_include_pad " << include_pad);
      const std::vector<T> grad_y = random_vector<T>(out_numel(s), seed++);
      std::vector<T> grad_x(in_numel(s), T(123));
      avg_pool2d_backward<T>(CpuContext{}, s, include_pad, grad_y.data(), grad_x.data());
      EXPECT_TRUE(all_close(grad_x, reference_avg_backward(s, include_pad, to_double(grad_y)),
                            Tol<T>::rel, Tol<T>::abs));
    }
  }
}

TEST(AvgPoolHandValues, DivisorRules) {
  // Ones, k3 s1 p1 on 3x3: the corner window covers 4 real of 9 padded positions.
  const Pool2dShape s = pool_shape(1, 1, 3, 3, 3, 3, 1, 1, 1, 1, false);
  const std::vector<double> ones(9, 1.0);
  std::vector<double> y(9);
  avg_pool2d_forward<double>(CpuContext{}, s, true, ones.data(), y.data());
  EXPECT_DOUBLE_EQ(y[0], 4.0 / 9.0);
  EXPECT_DOUBLE_EQ(y[1], 6.0 / 9.0);
  EXPECT_DOUBLE_EQ(y[4], 1.0);
  avg_pool2d_forward<double>(CpuContext{}, s, false, ones.data(), y.data());
  EXPECT_EQ(y, std::vector<double>(9, 1.0));
  // Ones, k2 s2 p0 ceil on 5x5: the last windows hang over the edge, and the overhang is never
  // counted, so every output is 1 with or without count_include_pad.
  const Pool2dShape t = pool_shape(1, 1, 5, 5, 2, 2, 2, 2, 0, 0, true);
  ASSERT_EQ(t.out_h(), 3);
  const std::vector<double> ones25(25, 1.0);
  std::vector<double> yt(9);
  for (bool include_pad : {false, true}) {
    avg_pool2d_forward<double>(CpuContext{}, t, include_pad, ones25.data(), yt.data());
    EXPECT_EQ(yt, std::vector<double>(9, 1.0));
  }
  // Ones, 6x6, k3 s2 p1 ceil: windows start at -1, 1, 3, 5; the last one [5, 8) has one real row,
  // one padded row (inside [-1, 7)) and one overhang row that count_include_pad never counts.
  const Pool2dShape u = pool_shape(1, 1, 6, 6, 3, 3, 2, 2, 1, 1, true);
  ASSERT_EQ(u.out_h(), 4);
  const std::vector<double> ones36(36, 1.0);
  std::vector<double> yu(16);
  avg_pool2d_forward<double>(CpuContext{}, u, true, ones36.data(), yu.data());
  EXPECT_DOUBLE_EQ(yu[0], 4.0 / 9.0);
  EXPECT_DOUBLE_EQ(yu[13], 3.0 / 6.0);
  EXPECT_DOUBLE_EQ(yu[15], 1.0 / 4.0);
  avg_pool2d_forward<double>(CpuContext{}, u, false, ones36.data(), yu.data());
  EXPECT_EQ(yu, std::vector<double>(16, 1.0));
}

TEST(PoolGradcheck, AvgMatchesFiniteDifferences) {
  uint32_t seed = 500;
  for (const Pool2dShape& s : sweep()) {
    for (bool include_pad : {false, true}) {
      SCOPED_TRACE(describe(s) << " count_include_pad " << include_pad);
      const std::vector<double> x = random_vector<double>(in_numel(s), seed++);
      const std::vector<double> w = random_vector<double>(out_numel(s), seed++);
      std::vector<double> grad_x(in_numel(s));
      avg_pool2d_backward<double>(CpuContext{}, s, include_pad, w.data(), grad_x.data());
      const auto fd = finite_difference(x, w, [&](const std::vector<double>& v) {
        std::vector<double> y(out_numel(s));
        avg_pool2d_forward<double>(CpuContext{}, s, include_pad, v.data(), y.data());
        return y;
      });
      EXPECT_TRUE(all_close(grad_x, fd, test::kGradcheckRel, test::kGradcheckAbs));
    }
  }
}

TYPED_TEST(PoolTest, AdaptiveForwardMatchesReference) {
  using T = TypeParam;
  uint32_t seed = 600;
  for (const AdaptivePool2dShape& s : adaptive_sweep()) {
    SCOPED_TRACE(::testing::Message()
                 << s.in_h << "x" << s.in_w << " -> " << s.out_h << "x" << s.out_w);
    const std::vector<T> x = random_vector<T>(in_numel(s), seed++);
    std::vector<T> y(out_numel(s));
    adaptive_avg_pool2d_forward<T>(CpuContext{}, s, x.data(), y.data());
    EXPECT_TRUE(all_close(y, reference_adaptive(s, to_double(x)), Tol<T>::rel, Tol<T>::abs));
  }
}

TYPED_TEST(PoolTest, AdaptiveBackwardMatchesReference) {
  using T = TypeParam;
  uint32_t seed = 700;
  for (const AdaptivePool2dShape& s : adaptive_sweep()) {
    SCOPED_TRACE(::testing::Message()
                 << s.in_h << "x" << s.in_w << " -> " << s.out_h << "x" << s.out_w);
    const std::vector<T> grad_y = random_vector<T>(out_numel(s), seed++);
    std::vector<T> grad_x(in_numel(s), T(123));
    adaptive_avg_pool2d_backward<T>(CpuContext{}, s, grad_y.data(), grad_x.data());
    EXPECT_TRUE(all_close(grad_x, reference_adaptive_backward(s, to_double(grad_y)), Tol<T>::rel,
                          Tol<T>::abs));
  }
}

TEST(AdaptivePoolHandValues, PyTorchBins) {
  // A column 0..6 into 3 bins: [0, 3), [2, 5), [4, 7) with means 1, 3, 5 (bins overlap).
  const AdaptivePool2dShape s{1, 1, 7, 1, 3, 1};
  const std::vector<double> x = {0, 1, 2, 3, 4, 5, 6};
  std::vector<double> y(3);
  adaptive_avg_pool2d_forward<double>(CpuContext{}, s, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<double>{1, 3, 5}));
  // 1x1 output is the global mean.
  const AdaptivePool2dShape g{1, 1, 7, 1, 1, 1};
  std::vector<double> mean(1);
  adaptive_avg_pool2d_forward<double>(CpuContext{}, g, x.data(), mean.data());
  EXPECT_DOUBLE_EQ(mean[0], 3.0);
}

TEST(PoolGradcheck, AdaptiveMatchesFiniteDifferences) {
  uint32_t seed = 800;
  for (const AdaptivePool2dShape& s : adaptive_sweep()) {
    SCOPED_TRACE(::testing::Message()
                 << s.in_h << "x" << s.in_w << " -> " << s.out_h << "x" << s.out_w);
    const std::vector<double> x = random_vector<double>(in_numel(s), seed++);
    const std::vector<double> w = random_vector<double>(out_numel(s), seed++);
    std::vector<double> grad_x(in_numel(s));
    adaptive_avg_pool2d_backward<double>(CpuContext{}, s, w.data(), grad_x.data());
    const auto fd = finite_difference(x, w, [&](const std::vector<double>& v) {
      std::vector<double> y(out_numel(s));
      adaptive_avg_pool2d_forward<double>(CpuContext{}, s, v.data(), y.data());
      return y;
    });
    EXPECT_TRUE(all_close(grad_x, fd, test::kGradcheckRel, test::kGradcheckAbs));
  }
}

// Planes are independent and each is summed in a fixed order: any thread count gives the same bits.
TEST(PoolDeterminism, ThreadCountDoesNotChangeResults) {
  const Pool2dShape s = pool_shape(4, 16, 32, 32, 3, 3, 2, 2, 1, 1, true);
  const AdaptivePool2dShape a{4, 16, 64, 64, 3, 3};
  const std::vector<float> x = random_vector<float>(in_numel(s), 1);
  const std::vector<float> grad_y = random_vector<float>(out_numel(s), 2);
  const std::vector<float> xa = random_vector<float>(in_numel(a), 3);
  const std::vector<float> grad_ya = random_vector<float>(out_numel(a), 4);
  auto run = [&](int threads) {
    const CpuContext ctx{threads};
    std::vector<std::vector<float>> r;
    std::vector<float> y(out_numel(s)), grad_x(in_numel(s));
    std::vector<int32_t> argmax(out_numel(s));
    max_pool2d_forward<float>(ctx, s, x.data(), y.data(), argmax.data());
    max_pool2d_backward<float>(ctx, s, grad_y.data(), argmax.data(), grad_x.data());
    r.push_back(y);
    r.push_back(grad_x);
    avg_pool2d_forward<float>(ctx, s, true, x.data(), y.data());
    avg_pool2d_backward<float>(ctx, s, false, grad_y.data(), grad_x.data());
    r.push_back(y);
    r.push_back(grad_x);
    std::vector<float> ya(out_numel(a)), grad_xa(in_numel(a));
    adaptive_avg_pool2d_forward<float>(ctx, a, xa.data(), ya.data());
    adaptive_avg_pool2d_backward<float>(ctx, a, grad_ya.data(), grad_xa.data());
    r.push_back(ya);
    r.push_back(grad_xa);
    return r;
  };
  EXPECT_EQ(run(1), run(3));
}

}  // namespace
}  // namespace retort::kernels
