// Tests of the CPU conv2d kernels (all three directions) against naive float64 loops, and of the
// fused forward epilogue against the separate passes it replaces.
#include "kernels/conv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/conv_epilogue.h"
#include "kernels/elementwise.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::random_vector;

template <typename T>
struct Tolerance;
// The outputs are O(1) sums, so an absolute floor equal to the relative tolerance only matters
// where a sum cancels to near zero and the relative bound would demand more than rounding allows.
template <>
struct Tolerance<double> {
  static constexpr double rel = test::kReferenceF64Rel;
  static constexpr double abs = test::kReferenceF64Abs;
};
template <>
struct Tolerance<float> {
  static constexpr double rel = test::kReferenceF32Rel;
  static constexpr double abs = test::kReferenceF32Abs;
};

Conv2dShape make_shape(int64_t batch, int64_t in_channels, int64_t in_h, int64_t in_w,
                       int64_t out_channels, int64_t kernel_h, int64_t kernel_w, int64_t stride,
                       int64_t pad, int64_t groups) {
  Conv2dShape s;
  s.batch = batch;
  s.in_channels = in_channels;
  s.in_h = in_h;
  s.in_w = in_w;
  s.out_channels = out_channels;
  s.kernel_h = kernel_h;
  s.kernel_w = kernel_w;
  s.stride_h = s.stride_w = stride;
  s.pad_h = s.pad_w = pad;
  s.groups = groups;
  return s;
}

std::string describe(const Conv2dShape& s) {
  std::ostringstream os;
  os << "x(" << s.batch << "," << s.in_channels << "," << s.in_h << "," << s.in_w << ") w("
     << s.out_channels << "," << s.in_channels / s.groups << "," << s.kernel_h << "," << s.kernel_w
     << ") stride(" << s.stride_h << "," << s.stride_w << ") pad(" << s.pad_h << "," << s.pad_w
     << ") groups " << s.groups;
  return os.str();
}

int64_t x_elems(const Conv2dShape& s) {
  return s.batch * s.in_channels * s.in_h * s.in_w;
}
int64_t w_elems(const Conv2dShape& s) {
  return s.out_channels * (s.in_channels / s.groups) * s.kernel_h * s.kernel_w;
}
int64_t y_elems(const Conv2dShape& s) {
  return s.batch * s.out_channels * s.out_h() * s.out_w();
}

// Calls visit(x_index, w_index, y_index) for every multiply of the convolution, so the three
// references below share one definition of the sliding window.
template <typename Visit>
void for_each_tap(const Conv2dShape& s, Visit visit) {
  const int64_t in_g = s.in_channels / s.groups, out_g = s.out_channels / s.groups;
  const int64_t out_h = s.out_h(), out_w = s.out_w();
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t co = 0; co < s.out_channels; ++co) {
      const int64_t g = co / out_g;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        for (int64_t ow = 0; ow < out_w; ++ow) {
          const int64_t y_index = ((n * s.out_channels + co) * out_h + oh) * out_w + ow;
          for (int64_t ci = 0; ci < in_g; ++ci) {
            for (int64_t i = 0; i < s.kernel_h; ++i) {
              const int64_t ih = oh * s.stride_h - s.pad_h + i;
              if (ih < 0 || ih >= s.in_h) continue;
              for (int64_t j = 0; j < s.kernel_w; ++j) {
                const int64_t iw = ow * s.stride_w - s.pad_w + j;
                if (iw < 0 || iw >= s.in_w) continue;
                const int64_t x_index =
                    ((n * s.in_channels + g * in_g + ci) * s.in_h + ih) * s.in_w + iw;
                const int64_t w_index = ((co * in_g + ci) * s.kernel_h + i) * s.kernel_w + j;
                visit(x_index, w_index, y_index);
              }
            }
          }
        }
      }
    }
  }
}

template <typename T>
std::vector<double> reference_forward(const Conv2dShape& s, const std::vector<T>& x,
                                      const std::vector<T>& w) {
  std::vector<double> y(y_elems(s), 0.0);
  for_each_tap(s, [&](int64_t xi, int64_t wi, int64_t yi) {
    y[yi] += static_cast<double>(x[xi]) * static_cast<double>(w[wi]);
  });
  return y;
}

template <typename T>
std::vector<double> reference_backward_data(const Conv2dShape& s, const std::vector<T>& grad_y,
                                            const std::vector<T>& w) {
  std::vector<double> grad_x(x_elems(s), 0.0);
  for_each_tap(s, [&](int64_t xi, int64_t wi, int64_t yi) {
    grad_x[xi] += static_cast<double>(grad_y[yi]) * static_cast<double>(w[wi]);
  });
  return grad_x;
}

template <typename T>
std::vector<double> reference_backward_filter(const Conv2dShape& s, const std::vector<T>& x,
                                              const std::vector<T>& grad_y) {
  std::vector<double> grad_w(w_elems(s), 0.0);
  for_each_tap(s, [&](int64_t xi, int64_t wi, int64_t yi) {
    grad_w[wi] += static_cast<double>(grad_y[yi]) * static_cast<double>(x[xi]);
  });
  return grad_w;
}

// The sweep: odd sizes, strides, paddings 0/1/2, 1x1 and 3x3 and non-square kernels, groups
// 1/2/depthwise, batch 1, and planes large enough to split into several im2col row tiles.
std::vector<Conv2dShape> conv_cases() {
  return {
      // (batch, cin, h, w, cout, kh, kw, stride, pad, groups)
      make_shape(2, 3, 7, 5, 4, 3, 3, 1, 1, 1),
      make_shape(1, 3, 7, 5, 4, 3, 3, 1, 0, 1),
      make_shape(3, 4, 7, 5, 6, 3, 3, 2, 1, 1),
      make_shape(2, 4, 9, 8, 6, 3, 3, 2, 0, 1),
      make_shape(2, 3, 6, 7, 5, 5, 5, 1, 2, 1),
      make_shape(2, 3, 3, 3, 2, 5, 5, 1, 2, 1),  // kernel larger than the unpadded input
      make_shape(2, 5, 7, 6, 3, 1, 1, 1, 0, 1),  // pointwise fast path
      make_shape(1, 8, 8, 8, 16, 1, 1, 1, 0, 1),
      make_shape(3, 6, 9, 7, 4, 1, 1, 2, 0, 1),  // strided 1x1 projection
      make_shape(2, 3, 5, 5, 4, 1, 1, 1, 1, 1),  // 1x1 with padding: not the fast path
      make_shape(2, 3, 8, 7, 4, 2, 3, 1, 1, 1),  // non-square kernels
      make_shape(2, 3, 7, 8, 4, 3, 1, 1, 0, 1),
      make_shape(2, 3, 7, 8, 4, 1, 3, 2, 1, 1),
      make_shape(2, 4, 10, 9, 5, 3, 3, 3, 2, 1),  // stride 3
      make_shape(2, 4, 7, 5, 6, 3, 3, 1, 1, 2),   // groups 2
      make_shape(3, 6, 9, 8, 4, 3, 3, 2, 1, 2),
      make_shape(2, 4, 6, 6, 8, 1, 1, 1, 0, 2),  // grouped pointwise
      make_shape(2, 4, 7, 5, 8, 3, 3, 1, 1, 4),  // one input channel per group, two outputs each
      make_shape(2, 5, 7, 5, 5, 3, 3, 1, 1, 5),  // depthwise
      make_shape(1, 4, 9, 8, 4, 3, 3, 2, 1, 4),
      make_shape(3, 3, 8, 9, 3, 3, 3, 2, 0, 3),
      make_shape(2, 3, 7, 6, 3, 2, 3, 1, 2, 3),
      make_shape(2, 1, 6, 5, 1, 3, 3, 1, 1, 1),      // single channel: depthwise path with groups 1
      make_shape(2, 4, 9, 7, 4, 5, 5, 1, 2, 4),      // depthwise, general kernel size
      make_shape(2, 3, 10, 9, 3, 3, 3, 3, 1, 3),     // depthwise, stride 3
      make_shape(2, 3, 5, 4, 3, 1, 1, 1, 0, 3),      // depthwise pointwise
      make_shape(2, 3, 5, 5, 3, 1, 1, 1, 1, 3),      // depthwise, padding as large as the kernel
      make_shape(1, 2, 4, 4, 3, 3, 3, 1, 3, 1),      // padding past the kernel: no adjoint shortcut
      make_shape(2, 16, 32, 32, 16, 3, 3, 1, 1, 1),  // resnet56 stage 1: several row tiles
      make_shape(2, 32, 33, 31, 8, 3, 3, 1, 1, 1),   // ragged last tile
      make_shape(1, 16, 32, 32, 32, 3, 3, 2, 1, 1),  // resnet56 downsampling conv
  };
}

template <typename T>
class ConvTest : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ConvTest, Dtypes);

template <typename T>
void check_all_directions(const Conv2dShape& s, int num_threads) {
  SCOPED_TRACE(::testing::Message() << describe(s) << " threads=" << num_threads);
  const CpuContext ctx{num_threads};
  const auto x = random_vector<T>(x_elems(s), 11);
  const auto w = random_vector<T>(w_elems(s), 12);
  const auto grad_y = random_vector<T>(y_elems(s), 13);
  const T nan = std::numeric_limits<T>::quiet_NaN();

  // Outputs start as NaN: every kernel must overwrite its whole output.
  std::vector<T> y(y_elems(s), nan);
  conv2d_forward<T>(ctx, s, x.data(), w.data(), y.data());
  EXPECT_TRUE(all_close(y, reference_forward(s, x, w), Tolerance<T>::rel, Tolerance<T>::abs))
      << "forward";

  std::vector<T> grad_x(x_elems(s), nan);
  conv2d_backward_data<T>(ctx, s, grad_y.data(), w.data(), grad_x.data());
  EXPECT_TRUE(all_close(grad_x, reference_backward_data(s, grad_y, w), Tolerance<T>::rel,
                        Tolerance<T>::abs))
      << "backward_data";

  std::vector<T> grad_w(w_elems(s), nan);
  conv2d_backward_filter<T>(ctx, s, x.data(), grad_y.data(), grad_w.data());
  EXPECT_TRUE(all_close(grad_w, reference_backward_filter(s, x, grad_y), Tolerance<T>::rel,
                        Tolerance<T>::abs))
      << "backward_filter";
}

TYPED_TEST(ConvTest, MatchesReferenceSerial) {
  for (const auto& s : conv_cases()) check_all_directions<TypeParam>(s, 1);
}

TYPED_TEST(ConvTest, MatchesReferenceMultithreaded) {
  for (const auto& s : conv_cases()) {
    check_all_directions<TypeParam>(s, 2);
    check_all_directions<TypeParam>(s, 3);  // more threads than some batches have samples
  }
}

TYPED_TEST(ConvTest, MatchesReferenceAllCores) {
  for (const auto& s : conv_cases()) check_all_directions<TypeParam>(s, 0);
}

TYPED_TEST(ConvTest, AsymmetricStrideAndPadding) {
  Conv2dShape s = make_shape(2, 4, 9, 11, 6, 3, 2, 1, 0, 2);
  s.stride_h = 2;
  s.stride_w = 1;
  s.pad_h = 0;
  s.pad_w = 1;
  check_all_directions<TypeParam>(s, 2);
  Conv2dShape depthwise = make_shape(2, 3, 8, 10, 3, 2, 3, 1, 0, 3);
  depthwise.stride_w = 2;
  depthwise.pad_h = 1;
  check_all_directions<TypeParam>(depthwise, 2);
  // Stride 1 with out_w == in_w but no vertical padding: the band path with pad_h = 0.
  Conv2dShape band = make_shape(2, 3, 8, 9, 4, 3, 5, 1, 0, 1);
  band.pad_w = 2;
  check_all_directions<TypeParam>(band, 2);
}

TYPED_TEST(ConvTest, EmptyBatchZeroesFilterGradient) {
  using T = TypeParam;
  const Conv2dShape s = make_shape(0, 3, 5, 5, 4, 3, 3, 1, 1, 1);
  std::vector<T> grad_w(w_elems(s), std::numeric_limits<T>::quiet_NaN());
  conv2d_backward_filter<T>(CpuContext{2}, s, nullptr, nullptr, grad_w.data());
  EXPECT_EQ(grad_w, std::vector<T>(w_elems(s), T(0)));
}

TEST(ConvShapeTest, RejectsInvalidShapes) {
  std::vector<float> buffer(1024);
  const Conv2dShape bad_groups = make_shape(1, 3, 5, 5, 4, 3, 3, 1, 1, 2);
  EXPECT_THROW(
      conv2d_forward<float>(CpuContext{1}, bad_groups, buffer.data(), buffer.data(), buffer.data()),
      std::invalid_argument);
  const Conv2dShape too_small = make_shape(1, 2, 2, 2, 2, 5, 5, 1, 0, 1);
  EXPECT_THROW(conv2d_backward_data<float>(CpuContext{1}, too_small, buffer.data(), buffer.data(),
                                           buffer.data()),
               std::invalid_argument);
}

// The batch sum of backward_filter is deterministic: bit-identical across runs with a thread
// count, and equal up to summation order across thread counts.
TYPED_TEST(ConvTest, BackwardFilterIsDeterministic) {
  using T = TypeParam;
  const Conv2dShape shapes[] = {
      make_shape(8, 16, 12, 12, 16, 3, 3, 1, 1, 1),  // band path (stride 1, same width)
      make_shape(8, 16, 12, 12, 16, 3, 3, 2, 1, 1),  // im2col path
      make_shape(8, 16, 12, 12, 32, 1, 1, 1, 0, 1),  // pointwise path
      make_shape(8, 8, 12, 12, 8, 3, 3, 1, 1, 8),    // depthwise path
  };
  for (const auto& s : shapes) {
    SCOPED_TRACE(::testing::Message() << describe(s));
    const auto x = random_vector<T>(x_elems(s), 21);
    const auto grad_y = random_vector<T>(y_elems(s), 22);
    for (const int threads : {1, 2, 3}) {
      std::vector<T> first(w_elems(s)), second(w_elems(s));
      conv2d_backward_filter<T>(CpuContext{threads}, s, x.data(), grad_y.data(), first.data());
      conv2d_backward_filter<T>(CpuContext{threads}, s, x.data(), grad_y.data(), second.data());
      EXPECT_EQ(first, second) << "threads=" << threads;
    }
    std::vector<T> serial(w_elems(s)), parallel(w_elems(s));
    conv2d_backward_filter<T>(CpuContext{1}, s, x.data(), grad_y.data(), serial.data());
    conv2d_backward_filter<T>(CpuContext{2}, s, x.data(), grad_y.data(), parallel.data());
    // Thread counts differ only in how the batch sum is split: two summation orders.
    EXPECT_TRUE(all_close(parallel, serial, Tolerance<T>::rel, Tolerance<T>::abs));
  }
}


// ---- The fused epilogue: bit-identical to conv, add_channel_bias, add, relu/relu6 in turn. ----

template <typename T>
::testing::AssertionResult same_bits(const std::vector<T>& actual, const std::vector<T>& expected) {
  if (actual.size() != expected.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::memcmp(&actual[i], &expected[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure()
             << "[" << i << "] " << actual[i] << " vs " << expected[i] << " (bits differ)";
    }
  }
  return ::testing::AssertionSuccess();
}

const char* activation_name(ConvActivation a) {
  switch (a) {
    case ConvActivation::none:
      return "none";
    case ConvActivation::relu:
      return "relu";
    case ConvActivation::relu6:
      return "relu6";
  }
  return "?";
}

// The unfused composition through the separate kernels, each its own pass over y.
template <typename T>
std::vector<T> unfused_forward(const CpuContext& ctx, const Conv2dShape& s,
                               const std::vector<T>& x, const std::vector<T>& w,
                               const ConvEpilogue<T>& e) {
  const int64_t n = y_elems(s);
  std::vector<T> y(n), sum(n);
  conv2d_forward<T>(ctx, s, x.data(), w.data(), y.data());
  if (e.bias != nullptr) {
    add_channel_bias<T>(ctx, s.batch, s.out_channels, s.out_h() * s.out_w(), e.bias, y.data());
  }
  if (e.residual != nullptr) {
    BroadcastShape flat;
    flat.ndim = 1;
    flat.shape[0] = n;
    flat.stride_a[0] = flat.stride_b[0] = 1;
    binary_forward<T>(ctx, BinaryOp::add, flat, y.data(), e.residual, sum.data());
    y.swap(sum);
  }
  if (e.activation == ConvActivation::relu) {
    unary_forward<T>(ctx, UnaryOp::relu, n, y.data(), y.data());
  } else if (e.activation == ConvActivation::relu6) {
    unary_forward<T>(ctx, UnaryOp::relu6, n, y.data(), y.data());
  }
  return y;
}

// The shapes of the fused sweep: one per forward path and the geometry around it.
std::vector<Conv2dShape> epilogue_cases() {
  return {
      // (batch, cin, h, w, cout, kh, kw, stride, pad, groups)
      make_shape(2, 5, 7, 5, 6, 1, 1, 1, 0, 1),     // 1x1 pointwise
      make_shape(2, 8, 6, 6, 8, 1, 1, 1, 0, 2),     // grouped pointwise
      make_shape(2, 4, 9, 7, 6, 3, 3, 1, 1, 1),     // 3x3 stride 1 pad 1: the band path
      make_shape(1, 16, 33, 31, 8, 3, 3, 1, 1, 1),  // band path, batch 1, two ragged row tiles
      make_shape(2, 4, 9, 7, 6, 3, 3, 2, 1, 1),     // 3x3 stride 2: the im2col path
      make_shape(2, 4, 7, 5, 6, 3, 3, 1, 1, 2),     // groups 2, band path
      make_shape(3, 6, 9, 8, 4, 3, 3, 2, 1, 2),     // groups 2, im2col path
      make_shape(2, 5, 7, 5, 5, 3, 3, 1, 1, 5),     // depthwise 3x3 stride 1
      make_shape(1, 4, 9, 8, 4, 3, 3, 2, 1, 4),     // depthwise stride 2, batch 1
      make_shape(2, 3, 7, 6, 3, 2, 3, 1, 2, 3),     // depthwise, general kernel
      make_shape(1, 3, 7, 5, 5, 3, 3, 1, 1, 1),     // batch 1, odd spatial size
  };
}

template <typename T>
void check_epilogue_sweep(const Conv2dShape& s, int threads) {
  SCOPED_TRACE(::testing::Message() << describe(s) << " threads=" << threads);
  const CpuContext ctx{threads};
  const auto x = random_vector<T>(x_elems(s), 31, T(-2), T(2));
  const auto w = random_vector<T>(w_elems(s), 32);
  // Biases up to 7 put whole channels above relu6's ceiling and others below zero.
  const auto bias = random_vector<T>(s.out_channels, 33, T(-3), T(7));
  for (const bool with_bias : {false, true}) {
    // The residual lands some outputs exactly on 0 (residual = -pre), on or near 6 and well above
    // it, and one on NaN; the rest are random.
    ConvEpilogue<T> plain;
    plain.bias = with_bias ? bias.data() : nullptr;
    const std::vector<T> pre = unfused_forward<T>(ctx, s, x, w, plain);
    auto residual = random_vector<T>(pre.size(), 34);
    for (size_t i = 0; i < residual.size(); ++i) {
      if (i % 7 == 0) residual[i] = -pre[i];
      if (i % 7 == 3) residual[i] = T(6) - pre[i];
      if (i % 7 == 5) residual[i] = T(7) - pre[i] + std::abs(residual[i]);
    }
    residual[1] = std::numeric_limits<T>::quiet_NaN();
    for (const bool with_residual : {false, true}) {
      for (const ConvActivation act :
           {ConvActivation::none, ConvActivation::relu, ConvActivation::relu6}) {
        SCOPED_TRACE(::testing::Message() << "bias=" << with_bias << " residual=" << with_residual
                                          << " activation=" << activation_name(act));
        ConvEpilogue<T> e;
        e.bias = with_bias ? bias.data() : nullptr;
        e.residual = with_residual ? residual.data() : nullptr;
        e.activation = act;
        const std::vector<T> expected = unfused_forward<T>(ctx, s, x, w, e);
        std::vector<T> y(y_elems(s), std::numeric_limits<T>::quiet_NaN());
        conv2d_forward<T>(ctx, s, x.data(), w.data(), y.data(), e);
        EXPECT_TRUE(same_bits(y, expected));
      }
    }
  }
}

TYPED_TEST(ConvTest, FusedEpilogueIsBitIdenticalToSeparatePasses) {
  for (const auto& s : epilogue_cases()) {
    check_epilogue_sweep<TypeParam>(s, 1);
    check_epilogue_sweep<TypeParam>(s, 2);
  }
}

// The special values: relu keeps -0 and NaN as the unary op does, relu6 too; infinities clip.
TYPED_TEST(ConvTest, EpilogueActivationsMatchUnaryOps) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> values = {T(-0.0), T(0), nan, -nan, T(-1), T(3), T(6), T(7), -inf, inf,
                                 std::numeric_limits<T>::denorm_min(), T(6) + T(1e-3)};
  const CpuContext ctx{1};
  const int64_t n = static_cast<int64_t>(values.size());
  for (const auto& [act, op] : {std::pair{ConvActivation::relu, UnaryOp::relu},
                                std::pair{ConvActivation::relu6, UnaryOp::relu6}}) {
    ConvEpilogue<T> e;
    e.activation = act;
    std::vector<T> fused = values, expected(values.size());
    cpu_detail::ConvEpilogueApplier<T>(e).apply(0, 0, n, fused.data());
    unary_forward<T>(ctx, op, n, values.data(), expected.data());
    EXPECT_TRUE(same_bits(fused, expected)) << activation_name(act);
  }
  // A missing bias or residual is skipped, not added as zero: -0 stays -0.
  std::vector<T> minus_zero = {T(-0.0)};
  cpu_detail::ConvEpilogueApplier<T>(ConvEpilogue<T>{}).apply(0, 0, 1, minus_zero.data());
  EXPECT_TRUE(std::signbit(minus_zero[0]));
}

TYPED_TEST(ConvTest, EmptyEpilogueLeavesConvolutionAlone) {
  using T = TypeParam;
  const Conv2dShape s = make_shape(2, 4, 9, 7, 6, 3, 3, 1, 1, 1);
  const auto x = random_vector<T>(x_elems(s), 41);
  const auto w = random_vector<T>(w_elems(s), 42);
  std::vector<T> plain(y_elems(s)), with_empty(y_elems(s));
  conv2d_forward<T>(CpuContext{2}, s, x.data(), w.data(), plain.data());
  conv2d_forward<T>(CpuContext{2}, s, x.data(), w.data(), with_empty.data(), ConvEpilogue<T>{});
  EXPECT_TRUE(same_bits(with_empty, plain));
}

}  // namespace
}  // namespace retort::kernels
