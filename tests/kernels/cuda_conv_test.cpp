// CPU-vs-CUDA parity of cuDNN convolutions in all directions and of the fused forward epilogue,
// plus the algorithm cache modes.
#include "kernels/conv.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <cstdio>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/conv_algo_cache.h"
#include "kernels/elementwise.h"
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

using CudaConvTest = CudaParityTest;

Conv2dShape conv(int64_t batch, int64_t in_c, int64_t h, int64_t w, int64_t out_c, int64_t kh,
                 int64_t kw, int64_t stride, int64_t pad_h, int64_t pad_w, int64_t groups) {
  Conv2dShape s;
  s.batch = batch, s.in_channels = in_c, s.in_h = h, s.in_w = w;
  s.out_channels = out_c, s.kernel_h = kh, s.kernel_w = kw;
  s.stride_h = s.stride_w = stride;
  s.pad_h = pad_h, s.pad_w = pad_w;
  s.groups = groups;
  return s;
}

std::string describe(const Conv2dShape& s) {
  std::ostringstream out;
  out << "N" << s.batch << " C" << s.in_channels << " " << s.in_h << "x" << s.in_w << " -> K"
      << s.out_channels << " k" << s.kernel_h << "x" << s.kernel_w << " s" << s.stride_h << " p"
      << s.pad_h << "," << s.pad_w << " g" << s.groups;
  return out.str();
}

// The shapes of the CIFAR models (3x3 pad 1, stride-2 downsampling, 1x1 shortcuts, MobileNetV2's
// depthwise and grouped layers) at small sizes, plus odd and non-square geometry and batch 1.
const Conv2dShape kShapes[] = {
    conv(2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1),      // stem
    conv(2, 4, 9, 9, 6, 3, 3, 2, 1, 1, 1),      // stride 2, odd input
    conv(3, 8, 5, 5, 16, 1, 1, 1, 0, 0, 1),     // 1x1
    conv(2, 8, 8, 8, 16, 1, 1, 2, 0, 0, 1),     // 1x1 stride-2 shortcut
    conv(2, 8, 7, 7, 8, 3, 3, 1, 1, 1, 8),      // depthwise
    conv(2, 8, 9, 9, 8, 3, 3, 2, 1, 1, 8),      // depthwise stride 2
    conv(2, 4, 6, 6, 6, 3, 3, 1, 1, 1, 2),      // two groups
    conv(1, 3, 7, 5, 5, 3, 1, 1, 1, 0, 1),      // batch 1, non-square input and kernel
    conv(2, 2, 11, 13, 3, 5, 5, 1, 0, 0, 1),    // 5x5, no padding
    conv(4, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1),  // a mid-size CIFAR layer
};

struct ConvData {
  std::vector<float> x, w, grad_y;
};

size_t x_size(const Conv2dShape& s) {
  return static_cast<size_t>(s.batch * s.in_channels * s.in_h * s.in_w);
}
size_t w_size(const Conv2dShape& s) {
  return static_cast<size_t>(s.out_channels * (s.in_channels / s.groups) * s.kernel_h * s.kernel_w);
}
size_t y_size(const Conv2dShape& s) {
  return static_cast<size_t>(s.batch * s.out_channels * s.out_h() * s.out_w());
}

ConvData make_data(const Conv2dShape& s, uint32_t seed) {
  return {random_vector<float>(x_size(s), seed), random_vector<float>(w_size(s), seed + 1),
          random_vector<float>(y_size(s), seed + 2)};
}

// All three directions on the GPU, compared with the CPU twin. With filter_may_be_refused (no
// workspace), the filter gradient may instead be refused with conv.cu's clear error: conv.h
// promises a deterministic batch sum, and cuDNN need not offer a deterministic algorithm that
// runs without scratch memory for every shape.
void check_all_directions(const CudaContext& gpu, const CpuContext& cpu, const Conv2dShape& s,
                          bool filter_may_be_refused = false) {
  const ConvData d = make_data(s, 91);
  std::vector<float> y(y_size(s)), grad_x(x_size(s)), grad_w(w_size(s));
  conv2d_forward(cpu, s, d.x.data(), d.w.data(), y.data());
  conv2d_backward_data(cpu, s, d.grad_y.data(), d.w.data(), grad_x.data());
  conv2d_backward_filter(cpu, s, d.x.data(), d.grad_y.data(), grad_w.data());

  DeviceArray<float> d_x(d.x), d_w(d.w), d_grad_y(d.grad_y);
  DeviceArray<float> d_y = poisoned_output(y.size());
  DeviceArray<float> d_grad_x = poisoned_output(grad_x.size());
  DeviceArray<float> d_grad_w = poisoned_output(grad_w.size());
  conv2d_forward(gpu, s, d_x.data(), d_w.data(), d_y.data());
  conv2d_backward_data(gpu, s, d_grad_y.data(), d_w.data(), d_grad_x.data());
  EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs)) << "forward";
  EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs))
      << "backward data";
  try {
    conv2d_backward_filter(gpu, s, d_x.data(), d_grad_y.data(), d_grad_w.data());
  } catch (const std::runtime_error& e) {
    const bool refused = std::string(e.what()).find("no deterministic algorithm") !=
                         std::string::npos;
    if (filter_may_be_refused && refused) {
      std::printf("note: %s: filter gradient refused without workspace: %s\n",
                  describe(s).c_str(), e.what());
      return;
    }
    throw;
  }
  EXPECT_TRUE(all_close(d_grad_w.download(), grad_w, kParityF32Rel, kParityF32Abs))
      << "backward filter";
}

TEST_F(CudaConvTest, MatchesCpuWithMeasuredAlgorithms) {
  for (const Conv2dShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    check_all_directions(gpu(), cpu, s);
  }
  // One plan per shape and direction.
  EXPECT_EQ(owner().conv_algos().size(), 3 * std::size(kShapes));
}

TEST_F(CudaConvTest, MatchesCpuInDeterministicMode) {
  mutable_gpu().deterministic = true;
  for (const Conv2dShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    check_all_directions(gpu(), cpu, s);
  }
}

TEST_F(CudaConvTest, MatchesCpuWithHeuristicsOnly) {
  mutable_gpu().conv_algos = nullptr;
  for (const Conv2dShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    check_all_directions(gpu(), cpu, s);
  }
}

TEST_F(CudaConvTest, MatchesCpuWithoutWorkspace) {
  mutable_gpu().workspace = nullptr;
  for (const Conv2dShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    check_all_directions(gpu(), cpu, s, /*filter_may_be_refused=*/true);
  }
}

TEST_F(CudaConvTest, CachedPlanIsReusedAndFilterGradientIsReproducible) {
  const Conv2dShape s = kShapes[9];
  const ConvData d = make_data(s, 97);
  DeviceArray<float> d_x(d.x), d_grad_y(d.grad_y);
  DeviceArray<float> first = poisoned_output(w_size(s)), second = poisoned_output(w_size(s));
  conv2d_backward_filter(gpu(), s, d_x.data(), d_grad_y.data(), first.data());
  const size_t plans = owner().conv_algos().size();
  conv2d_backward_filter(gpu(), s, d_x.data(), d_grad_y.data(), second.data());
  EXPECT_EQ(owner().conv_algos().size(), plans);
  // kernels/conv.h promises a deterministic batch sum for the filter gradient in every mode.
  EXPECT_TRUE(bitwise_equal(first.download(), second.download()));

  ConvAlgoKey key;
  key.shape = s;
  key.direction = ConvDirection::backward_filter;
  // The fixture's mode (TF32 off, not deterministic): the key records the mode, and the filter
  // gradient's algorithm is deterministic in every mode (need_deterministic in conv.cu).
  key.allow_tf32 = gpu().allow_tf32;
  key.deterministic = gpu().deterministic;
  key.workspace_limit = gpu().conv_workspace_limit;
  const ConvPlan* plan = owner().conv_algos().find(key);
  ASSERT_NE(plan, nullptr);
  EXPECT_GE(plan->measured_ms, 0.0f);
  EXPECT_EQ(plan->math_type, CUDNN_FMA_MATH);
}

TEST_F(CudaConvTest, EmptyBatchZeroesFilterGradient) {
  Conv2dShape s = kShapes[0];
  s.batch = 0;
  DeviceArray<float> d_x(std::vector<float>(1)), d_grad_y(std::vector<float>(1));
  DeviceArray<float> d_grad_w = poisoned_output(w_size(s));
  conv2d_backward_filter(gpu(), s, d_x.data(), d_grad_y.data(), d_grad_w.data());
  EXPECT_TRUE(all_close(d_grad_w.download(), std::vector<float>(w_size(s), 0.0f), 0.0, 0.0));
}

// The fused epilogue (bias, residual, relu/relu6) on the device against the CPU's, over every
// combination; planes of a multiple of 4 (8x8, 6x6) take the float4 path, the others (5x5, 7x7,
// 7x5) the scalar path, and so does a residual one element off 16-byte alignment.
TEST_F(CudaConvTest, FusedEpilogueMatchesCpu) {
  const Conv2dShape shapes[] = {kShapes[0], kShapes[1], kShapes[2], kShapes[4], kShapes[6],
                                kShapes[7]};
  for (const Conv2dShape& s : shapes) {
    const ConvData d = make_data(s, 93);
    const std::vector<float> bias = random_vector<float>(static_cast<size_t>(s.out_channels), 94,
                                                         -3.0f, 7.0f);
    const std::vector<float> residual = random_vector<float>(y_size(s), 95, -3.0f, 3.0f);
    DeviceArray<float> d_x(d.x), d_w(d.w), d_bias(bias);
    for (const size_t residual_offset : {size_t{0}, size_t{1}}) {
      DeviceArray<float> d_residual(residual, residual_offset);
      for (const int mask : {0, 1, 2, 3}) {
        for (const ConvActivation act :
             {ConvActivation::none, ConvActivation::relu, ConvActivation::relu6}) {
          SCOPED_TRACE(::testing::Message() << describe(s) << " bias=" << (mask & 1)
                                            << " residual=" << (mask >> 1) << " activation="
                                            << static_cast<int>(act) << " residual offset "
                                            << residual_offset);
          ConvEpilogue<float> cpu_e, gpu_e;
          cpu_e.activation = gpu_e.activation = act;
          if (mask & 1) {
            cpu_e.bias = bias.data();
            gpu_e.bias = d_bias.data();
          }
          if (mask & 2) {
            cpu_e.residual = residual.data();
            gpu_e.residual = d_residual.data();
          }
          std::vector<float> y(y_size(s));
          conv2d_forward(cpu, s, d.x.data(), d.w.data(), y.data(), cpu_e);
          DeviceArray<float> d_y = poisoned_output(y.size());
          conv2d_forward(gpu(), s, d_x.data(), d_w.data(), d_y.data(), gpu_e);
          EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs));
        }
      }
    }
  }
}

// On the device the fused epilogue is bit for bit the separate passes it replaces.
TEST_F(CudaConvTest, FusedEpilogueIsBitIdenticalToSeparatePasses) {
  mutable_gpu().deterministic = true;  // the same cuDNN algorithm for both runs
  for (const Conv2dShape& s : {kShapes[0], kShapes[2], kShapes[4]}) {
    SCOPED_TRACE(describe(s));
    const ConvData d = make_data(s, 96);
    const std::vector<float> bias = random_vector<float>(static_cast<size_t>(s.out_channels), 97,
                                                         -3.0f, 7.0f);
    const std::vector<float> residual = random_vector<float>(y_size(s), 98, -3.0f, 3.0f);
    DeviceArray<float> d_x(d.x), d_w(d.w), d_bias(bias), d_residual(residual);
    const int64_t n = static_cast<int64_t>(y_size(s));
    for (const auto& [act, op] : {std::pair{ConvActivation::relu, UnaryOp::relu},
                                  std::pair{ConvActivation::relu6, UnaryOp::relu6}}) {
      DeviceArray<float> fused = poisoned_output(y_size(s)), separate = poisoned_output(y_size(s));
      ConvEpilogue<float> e;
      e.bias = d_bias.data();
      e.residual = d_residual.data();
      e.activation = act;
      conv2d_forward(gpu(), s, d_x.data(), d_w.data(), fused.data(), e);
      conv2d_forward(gpu(), s, d_x.data(), d_w.data(), separate.data());
      add_channel_bias(gpu(), s.batch, s.out_channels, s.out_h() * s.out_w(), d_bias.data(),
                       separate.data());
      BroadcastShape flat;
      flat.ndim = 1;
      flat.shape[0] = n;
      flat.stride_a[0] = flat.stride_b[0] = 1;
      DeviceArray<float> sum = poisoned_output(y_size(s));
      binary_forward(gpu(), BinaryOp::add, flat, separate.data(), d_residual.data(), sum.data());
      unary_forward(gpu(), op, n, sum.data(), sum.data());
      EXPECT_TRUE(bitwise_equal(fused.download(), sum.download())) << static_cast<int>(act);
    }
  }
}

TEST_F(CudaConvTest, InvalidShapeThrows) {
  Conv2dShape s = kShapes[0];
  s.groups = 2;  // 3 input channels are not divisible by 2
  DeviceArray<float> d(std::vector<float>(1));
  EXPECT_THROW(conv2d_forward(gpu(), s, d.data(), d.data(), d.data()), std::invalid_argument);
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaConvTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
