// CPU-vs-CUDA parity of max (with argmax), average and adaptive pooling, fwd and bwd.
#include "kernels/pool.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "tests/kernels/cuda_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::CudaParityTest;
using test::DeviceArray;
using test::kParityF32Abs;
using test::kParityF32Rel;
using test::poisoned_output;
using test::random_vector;

using CudaPoolTest = CudaParityTest;

Pool2dShape pool(int64_t batch, int64_t channels, int64_t h, int64_t w, int64_t kh, int64_t kw,
                 int64_t stride, int64_t pad, bool ceil_mode) {
  Pool2dShape s;
  s.batch = batch, s.channels = channels, s.in_h = h, s.in_w = w;
  s.kernel_h = kh, s.kernel_w = kw, s.stride_h = s.stride_w = stride;
  s.pad_h = s.pad_w = pad;
  s.ceil_mode = ceil_mode;
  return s;
}

std::string describe(const Pool2dShape& s) {
  std::ostringstream out;
  out << "N" << s.batch << " C" << s.channels << " " << s.in_h << "x" << s.in_w << " k"
      << s.kernel_h << "x" << s.kernel_w << " s" << s.stride_h << " p" << s.pad_h
      << (s.ceil_mode ? " ceil" : "");
  return out.str();
}

// Non-overlapping and overlapping windows, padding, ceil mode, odd sizes, batch 1.
const Pool2dShape kShapes[] = {
    pool(2, 3, 8, 8, 2, 2, 2, 0, false),    // ResNet-style 2x2
    pool(2, 3, 9, 9, 3, 3, 2, 1, false),    // 3x3 stride 2 pad 1 (ImageNet stem)
    pool(1, 4, 10, 10, 3, 3, 2, 0, true),   // ceil mode with an overhanging last window
    pool(2, 2, 7, 7, 3, 3, 1, 1, false),    // overlapping stride 1
    pool(1, 2, 5, 11, 2, 3, 2, 1, true),    // non-square kernel, odd sizes, ceil + padding
    pool(3, 5, 32, 32, 4, 4, 4, 0, false),  // larger planes
};

size_t in_size(const Pool2dShape& s) {
  return static_cast<size_t>(s.batch * s.channels * s.in_h * s.in_w);
}
size_t out_size(const Pool2dShape& s) {
  return static_cast<size_t>(s.batch * s.channels * s.out_h() * s.out_w());
}

TEST_F(CudaPoolTest, MaxPoolMatchesCpu) {
  for (const Pool2dShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    const std::vector<float> x = random_vector<float>(in_size(s), 131);
    const std::vector<float> grad_y = random_vector<float>(out_size(s), 132);
    std::vector<float> y(out_size(s)), grad_x(in_size(s));
    std::vector<int32_t> argmax(out_size(s));
    max_pool2d_forward(cpu, s, x.data(), y.data(), argmax.data());
    max_pool2d_backward(cpu, s, grad_y.data(), argmax.data(), grad_x.data());

    DeviceArray<float> d_x(x), d_grad_y(grad_y);
    DeviceArray<float> d_y = poisoned_output(y.size()), d_grad_x = poisoned_output(x.size());
    DeviceArray<int32_t> d_argmax(std::vector<int32_t>(argmax.size(), -7));
    max_pool2d_forward(gpu(), s, d_x.data(), d_y.data(), d_argmax.data());
    max_pool2d_backward(gpu(), s, d_grad_y.data(), d_argmax.data(), d_grad_x.data());
    EXPECT_TRUE(all_close(d_y.download(), y, 0.0, 0.0)) << "y (a maximum is exact)";
    EXPECT_TRUE(all_close(d_argmax.download(), argmax, 0.0, 0.0)) << "argmax";
    EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs)) << "grad_x";
  }
}

TEST_F(CudaPoolTest, MaxPoolTiesPickTheFirstInRowMajorOrder) {
  const Pool2dShape s = pool(1, 1, 4, 4, 2, 2, 2, 0, false);
  const std::vector<float> x(16, 1.0f);  // every window is a four-way tie
  DeviceArray<float> d_x(x), d_y = poisoned_output(4);
  DeviceArray<int32_t> d_argmax(std::vector<int32_t>(4, -7));
  max_pool2d_forward(gpu(), s, d_x.data(), d_y.data(), d_argmax.data());
  EXPECT_EQ(d_argmax.download(), (std::vector<int32_t>{0, 2, 8, 10}));
}

TEST_F(CudaPoolTest, AvgPoolMatchesCpu) {
  for (const Pool2dShape& s : kShapes) {
    for (bool count_include_pad : {true, false}) {
      SCOPED_TRACE(describe(s) + (count_include_pad ? " include pad" : " exclude pad"));
      const std::vector<float> x = random_vector<float>(in_size(s), 141);
      const std::vector<float> grad_y = random_vector<float>(out_size(s), 142);
      std::vector<float> y(out_size(s)), grad_x(in_size(s));
      avg_pool2d_forward(cpu, s, count_include_pad, x.data(), y.data());
      avg_pool2d_backward(cpu, s, count_include_pad, grad_y.data(), grad_x.data());

      DeviceArray<float> d_x(x), d_grad_y(grad_y);
      DeviceArray<float> d_y = poisoned_output(y.size()), d_grad_x = poisoned_output(x.size());
      avg_pool2d_forward(gpu(), s, count_include_pad, d_x.data(), d_y.data());
      avg_pool2d_backward(gpu(), s, count_include_pad, d_grad_y.data(), d_grad_x.data());
      EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs)) << "y";
      EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs)) << "grad_x";
    }
  }
}

TEST_F(CudaPoolTest, AdaptiveAvgPoolMatchesCpu) {
  const AdaptivePool2dShape shapes[] = {
      {2, 3, 8, 8, 1, 1},     // global pooling of a CIFAR final map
      {4, 16, 32, 32, 1, 1},  // large bins: one warp per output
      {1, 2, 7, 5, 3, 2},     // uneven, overlapping bins
      {2, 2, 5, 5, 7, 7},     // growing: every input feeds several outputs
      {1, 3, 6, 6, 6, 6},     // identity
      {2, 2, 9, 4, 2, 4},     // mixed: shrink one axis, keep the other
  };
  for (const AdaptivePool2dShape& s : shapes) {
    SCOPED_TRACE("in " + std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + " out " +
                 std::to_string(s.out_h) + "x" + std::to_string(s.out_w));
    const size_t in = static_cast<size_t>(s.batch * s.channels * s.in_h * s.in_w);
    const size_t out = static_cast<size_t>(s.batch * s.channels * s.out_h * s.out_w);
    const std::vector<float> x = random_vector<float>(in, 151);
    const std::vector<float> grad_y = random_vector<float>(out, 152);
    std::vector<float> y(out), grad_x(in);
    adaptive_avg_pool2d_forward(cpu, s, x.data(), y.data());
    adaptive_avg_pool2d_backward(cpu, s, grad_y.data(), grad_x.data());

    DeviceArray<float> d_x(x), d_grad_y(grad_y);
    DeviceArray<float> d_y = poisoned_output(out), d_grad_x = poisoned_output(in);
    adaptive_avg_pool2d_forward(gpu(), s, d_x.data(), d_y.data());
    adaptive_avg_pool2d_backward(gpu(), s, d_grad_y.data(), d_grad_x.data());
    EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs)) << "y";
    EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs)) << "grad_x";
  }
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaPoolTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
