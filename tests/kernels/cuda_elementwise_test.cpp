// CPU-vs-CUDA parity of the elementwise family: maps, broadcasting, fills, copies, conversion.
#include "kernels/elementwise.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/kernels/cuda_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::bitwise_equal;
using test::CudaParityTest;
using test::DeviceArray;
using test::kParityF32Abs;
using test::kParityF32Rel;
using test::poisoned_output;
using test::random_vector;

using CudaElementwiseTest = CudaParityTest;

// Sizes around the float4 body/tail split; offsets 0 (aligned, vectorised) and 1 (scalar path).
const int64_t kSizes[] = {1, 3, 4, 5, 1000, 4097};
const size_t kOffsets[] = {0, 1};
const UnaryOp kUnaryOps[] = {UnaryOp::neg, UnaryOp::exp, UnaryOp::log, UnaryOp::relu,
                             UnaryOp::relu6};

std::vector<float> unary_input(UnaryOp op, int64_t n, uint32_t seed) {
  // log needs positive inputs; relu6 wants values on both sides of 0 and 6.
  if (op == UnaryOp::log) return random_vector<float>(static_cast<size_t>(n), seed, 0.05f, 5.0f);
  return random_vector<float>(static_cast<size_t>(n), seed, -8.0f, 8.0f);
}

TEST_F(CudaElementwiseTest, UnaryForwardAndBackwardMatchCpu) {
  for (UnaryOp op : kUnaryOps) {
    for (int64_t n : kSizes) {
      for (size_t offset : kOffsets) {
        SCOPED_TRACE("op " + std::to_string(static_cast<int>(op)) + " n " + std::to_string(n) +
                     " offset " + std::to_string(offset));
        const std::vector<float> x = unary_input(op, n, 11);
        const std::vector<float> grad_y = random_vector<float>(x.size(), 12);
        std::vector<float> y(x.size()), grad_x(x.size());
        unary_forward(cpu, op, n, x.data(), y.data());
        unary_backward(cpu, op, n, x.data(), y.data(), grad_y.data(), grad_x.data());

        DeviceArray<float> d_x(x, offset), d_grad_y(grad_y, offset);
        DeviceArray<float> d_y = poisoned_output(x.size(), offset);
        DeviceArray<float> d_grad_x = poisoned_output(x.size(), offset);
        unary_forward(gpu(), op, n, d_x.data(), d_y.data());
        unary_backward(gpu(), op, n, d_x.data(), d_y.data(), d_grad_y.data(), d_grad_x.data());
        EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs));
        EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs));
      }
    }
  }
}

TEST_F(CudaElementwiseTest, UnaryForwardInPlace) {
  const std::vector<float> x = random_vector<float>(1027, 3, -3.0f, 3.0f);
  std::vector<float> y(x.size());
  unary_forward(cpu, UnaryOp::relu, static_cast<int64_t>(x.size()), x.data(), y.data());
  DeviceArray<float> d(x);
  unary_forward(gpu(), UnaryOp::relu, static_cast<int64_t>(x.size()), d.data(), d.data());
  EXPECT_TRUE(all_close(d.download(), y, 0.0, 0.0));
}

// Broadcast geometry for out = a (op) b from the shapes of a and b (same rank, numpy rules).
struct BroadcastCase {
  std::string name;
  std::vector<int64_t> a_shape, b_shape;
};

BroadcastShape make_broadcast(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  BroadcastShape s;
  s.ndim = static_cast<int>(a.size());
  int64_t stride_a = 1, stride_b = 1;
  for (int d = s.ndim - 1; d >= 0; --d) {
    s.shape[d] = a[d] > b[d] ? a[d] : b[d];
    s.stride_a[d] = a[d] == 1 ? 0 : stride_a;
    s.stride_b[d] = b[d] == 1 ? 0 : stride_b;
    stride_a *= a[d];
    stride_b *= b[d];
  }
  return s;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TEST_F(CudaElementwiseTest, BinaryBroadcastMatchesCpu) {
  const BroadcastCase cases[] = {
      {"same shape", {2, 3, 5}, {2, 3, 5}},
      {"same shape, vector", {4099}, {4099}},
      {"channel bias", {4, 3, 5, 7}, {1, 3, 1, 1}},
      {"scalar b", {3, 17}, {1, 1}},
      {"scalar a", {1, 1}, {3, 17}},
      {"outer product", {5, 1}, {1, 7}},
      {"row vector", {6, 9}, {1, 9}},
      {"column vector", {6, 9}, {6, 1}},
      {"batch of one", {1, 8, 3}, {1, 1, 3}},
      {"rank 1, single element", {1}, {1}},
  };
  const BinaryOp ops[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div};
  for (const BroadcastCase& c : cases) {
    for (BinaryOp op : ops) {
      SCOPED_TRACE(c.name + ", op " + std::to_string(static_cast<int>(op)));
      const BroadcastShape shape = make_broadcast(c.a_shape, c.b_shape);
      const std::vector<float> a = random_vector<float>(static_cast<size_t>(numel(c.a_shape)), 1);
      // Divisors kept away from zero.
      const std::vector<float> b =
          random_vector<float>(static_cast<size_t>(numel(c.b_shape)), 2, 0.5f, 2.0f);
      std::vector<float> out(static_cast<size_t>(shape.numel()));
      binary_forward(cpu, op, shape, a.data(), b.data(), out.data());
      DeviceArray<float> d_a(a), d_b(b);
      DeviceArray<float> d_out = poisoned_output(out.size());
      binary_forward(gpu(), op, shape, d_a.data(), d_b.data(), d_out.data());
      EXPECT_TRUE(all_close(d_out.download(), out, kParityF32Rel, kParityF32Abs));
    }
  }
}

TEST_F(CudaElementwiseTest, BinaryWithTransposedOperand) {
  // a is the transpose of a contiguous (4, 3) matrix: strides (1, 4) in the (3, 4) output.
  BroadcastShape s;
  s.ndim = 2;
  s.shape[0] = 3, s.shape[1] = 4;
  s.stride_a[0] = 1, s.stride_a[1] = 3;
  s.stride_b[0] = 4, s.stride_b[1] = 1;
  const std::vector<float> a = random_vector<float>(12, 5), b = random_vector<float>(12, 6);
  std::vector<float> out(12);
  binary_forward(cpu, BinaryOp::mul, s, a.data(), b.data(), out.data());
  DeviceArray<float> d_a(a), d_b(b);
  DeviceArray<float> d_out = poisoned_output(12);
  binary_forward(gpu(), BinaryOp::mul, s, d_a.data(), d_b.data(), d_out.data());
  EXPECT_TRUE(all_close(d_out.download(), out, kParityF32Rel, kParityF32Abs));
}

TEST_F(CudaElementwiseTest, AffineAccumulateAndFillMatchCpu) {
  for (int64_t n : kSizes) {
    for (size_t offset : kOffsets) {
      SCOPED_TRACE("n " + std::to_string(n) + " offset " + std::to_string(offset));
      const std::vector<float> x = random_vector<float>(static_cast<size_t>(n), 21);
      const std::vector<float> y0 = random_vector<float>(static_cast<size_t>(n), 22);

      std::vector<float> affine(x.size());
      affine_forward(cpu, n, 1.5f, -0.25f, x.data(), affine.data());
      DeviceArray<float> d_x(x, offset);
      DeviceArray<float> d_affine = poisoned_output(x.size(), offset);
      affine_forward(gpu(), n, 1.5f, -0.25f, d_x.data(), d_affine.data());
      EXPECT_TRUE(all_close(d_affine.download(), affine, kParityF32Rel, kParityF32Abs));

      std::vector<float> acc = y0;
      accumulate(cpu, n, x.data(), acc.data());
      DeviceArray<float> d_acc(y0, offset);
      accumulate(gpu(), n, d_x.data(), d_acc.data());
      EXPECT_TRUE(all_close(d_acc.download(), acc, kParityF32Rel, kParityF32Abs));

      DeviceArray<float> d_fill = poisoned_output(x.size(), offset);
      fill_value(gpu(), n, 0.75f, d_fill.data());
      EXPECT_TRUE(all_close(d_fill.download(), std::vector<float>(x.size(), 0.75f), 0.0, 0.0));
    }
  }
}

TEST_F(CudaElementwiseTest, ChannelBiasIsBitIdenticalToCpu) {
  // One add per element, so both twins give the same bits; batch 1, odd planes, one channel.
  const int64_t cases[][3] = {{1, 1, 1}, {2, 3, 5}, {3, 16, 49}, {1, 64, 1}, {4, 7, 1024}};
  for (const auto& c : cases) {
    const int64_t batch = c[0], channels = c[1], plane = c[2], n = batch * channels * plane;
    SCOPED_TRACE("batch " + std::to_string(batch) + " channels " + std::to_string(channels) +
                 " plane " + std::to_string(plane));
    const std::vector<float> bias = random_vector<float>(static_cast<size_t>(channels), 31);
    std::vector<float> y = random_vector<float>(static_cast<size_t>(n), 32);
    DeviceArray<float> d_bias(bias), d_y(y);
    add_channel_bias(cpu, batch, channels, plane, bias.data(), y.data());
    add_channel_bias(gpu(), batch, channels, plane, d_bias.data(), d_y.data());
    EXPECT_TRUE(bitwise_equal(d_y.download(), y));
  }
}

TEST_F(CudaElementwiseTest, StridedCopyMatchesCpu) {
  struct Case {
    std::string name;
    std::vector<int64_t> shape, stride;
    int64_t source_size;
  };
  const Case cases[] = {
      {"contiguous", {3, 4, 5}, {20, 5, 1}, 60},
      {"transpose (2, 0, 1)", {5, 3, 4}, {1, 20, 5}, 60},
      {"every other column", {4, 5}, {10, 2}, 40},
      {"stride 2 both dims, odd sizes", {3, 7}, {28, 2}, 84},
      {"expanded (stride 0)", {4, 6}, {0, 1}, 6},
      {"single element", {1, 1}, {7, 3}, 1},
      {"rank 0", {}, {}, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    StridedShape s;
    s.ndim = static_cast<int>(c.shape.size());
    for (int d = 0; d < s.ndim; ++d) s.shape[d] = c.shape[d], s.stride[d] = c.stride[d];
    const std::vector<float> x = random_vector<float>(static_cast<size_t>(c.source_size), 31);
    std::vector<float> y(static_cast<size_t>(s.numel()));
    strided_copy(cpu, s, x.data(), y.data());
    DeviceArray<float> d_x(x);
    DeviceArray<float> d_y = poisoned_output(y.size());
    strided_copy(gpu(), s, d_x.data(), d_y.data());
    EXPECT_TRUE(all_close(d_y.download(), y, 0.0, 0.0));
  }
}

TEST_F(CudaElementwiseTest, StridedScatterMatchesCpu) {
  struct Case {
    std::string name;
    std::vector<int64_t> shape, stride;
    int64_t destination_size;
  };
  // Views that never overlap themselves (strided_scatter's contract); destination elements
  // outside the view keep their old values on both devices.
  const Case cases[] = {
      {"contiguous", {3, 4, 5}, {20, 5, 1}, 60},
      {"transpose (2, 0, 1)", {5, 3, 4}, {1, 20, 5}, 60},
      {"every other column", {4, 5}, {10, 2}, 40},
      {"stride 2 both dims, odd sizes", {3, 7}, {28, 2}, 84},
      {"column block of a wider matrix", {6, 3}, {9, 1}, 54},
      {"size-1 dims with odd strides", {1, 5, 1}, {99, 3, 7}, 13},
      {"single element", {1, 1}, {7, 3}, 1},
      {"rank 0", {}, {}, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    StridedShape s;
    s.ndim = static_cast<int>(c.shape.size());
    for (int d = 0; d < s.ndim; ++d) s.shape[d] = c.shape[d], s.stride[d] = c.stride[d];
    const std::vector<float> x = random_vector<float>(static_cast<size_t>(s.numel()), 32);
    std::vector<float> y = random_vector<float>(static_cast<size_t>(c.destination_size), 33);
    DeviceArray<float> d_x(x), d_y(y);
    strided_scatter(cpu, s, x.data(), y.data());
    strided_scatter(gpu(), s, d_x.data(), d_y.data());
    EXPECT_TRUE(all_close(d_y.download(), y, 0.0, 0.0));
  }
}

TEST_F(CudaElementwiseTest, StridedScatterInvertsStridedCopy) {
  // Gather a transposed view, then scatter it back into a zeroed buffer: the view's elements
  // return to their places.
  StridedShape s;
  s.ndim = 2;
  s.shape[0] = 33, s.shape[1] = 17;
  s.stride[0] = 1, s.stride[1] = 33;
  const std::vector<float> x = random_vector<float>(33 * 17, 34);
  DeviceArray<float> d_x(x), d_gathered = poisoned_output(x.size());
  DeviceArray<float> d_back(std::vector<float>(x.size(), 0.0f));
  strided_copy(gpu(), s, d_x.data(), d_gathered.data());
  strided_scatter(gpu(), s, d_gathered.data(), d_back.data());
  EXPECT_TRUE(all_close(d_back.download(), x, 0.0, 0.0));
}

TEST_F(CudaElementwiseTest, ConvertIsBitIdenticalToCpu) {
  // int64 values that float holds exactly and ones that must round (to nearest even), both signs,
  // and the extremes.
  std::vector<int64_t> ints = {0,
                               1,
                               -1,
                               255,
                               16777216,
                               16777217,
                               -16777219,
                               (int64_t{1} << 53) + 1,
                               std::numeric_limits<int64_t>::max(),
                               std::numeric_limits<int64_t>::min()};
  std::mt19937_64 gen(35);
  for (int i = 0; i < 4087; ++i) ints.push_back(static_cast<int64_t>(gen()) >> (i % 64));
  std::vector<uint8_t> bytes(4099);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  for (int64_t n : kSizes) {
    for (size_t offset : kOffsets) {
      SCOPED_TRACE("n " + std::to_string(n) + " offset " + std::to_string(offset));
      const std::vector<int64_t> x_int(ints.begin(), ints.begin() + n);
      const std::vector<uint8_t> x_byte(bytes.begin(), bytes.begin() + n);
      std::vector<float> y_int(static_cast<size_t>(n)), y_byte(static_cast<size_t>(n));
      convert<int64_t, float>(cpu, n, x_int.data(), y_int.data());
      convert<uint8_t, float>(cpu, n, x_byte.data(), y_byte.data());

      DeviceArray<int64_t> d_int(x_int, offset);
      DeviceArray<uint8_t> d_byte(x_byte, offset);
      DeviceArray<float> d_y_int = poisoned_output(y_int.size(), offset);
      DeviceArray<float> d_y_byte = poisoned_output(y_byte.size(), offset);
      convert(gpu(), n, d_int.data(), d_y_int.data());
      convert(gpu(), n, d_byte.data(), d_y_byte.data());
      EXPECT_TRUE(bitwise_equal(d_y_int.download(), y_int));
      EXPECT_TRUE(bitwise_equal(d_y_byte.download(), y_byte));
    }
  }
}

TEST_F(CudaElementwiseTest, EmptyInputsAreNoOps) {
  DeviceArray<float> d = poisoned_output(4);
  unary_forward(gpu(), UnaryOp::exp, 0, d.data(), d.data());
  affine_forward(gpu(), 0, 2.0f, 1.0f, d.data(), d.data());
  fill_value(gpu(), 0, 1.0f, d.data());
  BroadcastShape empty;
  empty.ndim = 1;  // shape[0] = 0
  binary_forward(gpu(), BinaryOp::add, empty, d.data(), d.data(), d.data());
  StridedShape empty_view;
  empty_view.ndim = 2;  // shape (0, 0)
  strided_scatter(gpu(), empty_view, d.data(), d.data());
  convert(gpu(), 0, static_cast<const int64_t*>(nullptr), d.data());
  convert(gpu(), 0, static_cast<const uint8_t*>(nullptr), d.data());
  for (float v : d.download()) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaElementwiseTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
