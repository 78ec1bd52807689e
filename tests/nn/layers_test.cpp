// Tests of the layers: shapes, init ranges, BatchNorm train/eval and its buffers, pooling.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/layers.h"
#include "tests/nn/nn_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::nn {
namespace {

TEST(Conv2d, ShapesBiasOptionAndDefaultInitBound) {
  Generator gen(11);
  Conv2d conv(4, 6, 3, gen, {.stride = 2, .padding = 1});
  EXPECT_EQ(conv.weight().shape(), (Shape{6, 4, 3, 3}));
  EXPECT_FALSE(conv.bias().defined());
  EXPECT_EQ(conv.state_dict().size(), 1u);
  EXPECT_EQ(conv(Tensor::zeros({2, 4, 9, 9})).shape(), (Shape{2, 6, 5, 5}));
  const double bound = 1.0 / std::sqrt(4.0 * 9.0);
  for (float w : conv.weight().to_vector<float>()) EXPECT_LE(std::abs(w), bound + 1e-7);

  Conv2d with_bias(4, 6, 1, gen, {.bias = true});
  EXPECT_EQ(with_bias.bias().shape(), (Shape{6}));
  EXPECT_EQ(with_bias.state_dict().back().first, "bias");
  Conv2d depthwise(8, 8, 3, gen, {.padding = 1, .groups = 8});
  EXPECT_EQ(depthwise.weight().shape(), (Shape{8, 1, 3, 3}));
  EXPECT_THROW(Conv2d(6, 4, 3, gen, {.groups = 4}), std::invalid_argument);
}

TEST(Conv2d, SameSeedSameWeights) {
  Generator a(7), b(7), c(8);
  Conv2d x(3, 4, 3, a), y(3, 4, 3, b), z(3, 4, 3, c);
  EXPECT_EQ(x.weight().to_vector<float>(), y.weight().to_vector<float>());
  EXPECT_NE(x.weight().to_vector<float>(), z.weight().to_vector<float>());
}

TEST(Linear, ShapesAndTorchDefaultInit) {
  Generator gen(12);
  Linear fc(16, 5, gen);
  EXPECT_EQ(fc.weight().shape(), (Shape{5, 16}));
  EXPECT_EQ(fc.bias().shape(), (Shape{5}));
  for (float w : fc.weight().to_vector<float>()) EXPECT_LE(std::abs(w), 0.25f);
  for (float b : fc.bias().to_vector<float>()) EXPECT_LE(std::abs(b), 0.25f);
  EXPECT_EQ(fc(Tensor::ones({3, 16})).shape(), (Shape{3, 5}));
  Linear no_bias(16, 5, gen, false);
  EXPECT_EQ(no_bias.parameters().size(), 1u);
}

// x (N=2, C=2, 1x2): channel 0 holds {1, 2, 3, 4}, channel 1 holds {0, 0, 0, 8}.
Tensor bn_input() {
  return Tensor::from_vector<float>({1, 2, 0, 0, 3, 4, 0, 8}, {2, 2, 1, 2});
}

TEST(BatchNorm2d, TrainingUsesBatchStatisticsAndUpdatesRunningOnes) {
  BatchNorm2d bn(2);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  const Tensor y = bn(bn_input());
  // Channel 0: mean 2.5, biased var 1.25 -> (x - 2.5) / sqrt(1.25 + 1e-5).
  const std::vector<float> out = y.to_vector<float>();
  const double s0 = std::sqrt(1.25 + 1e-5);
  EXPECT_NEAR(out[0], (1 - 2.5) / s0, 1e-6);
  EXPECT_NEAR(out[5], (4 - 2.5) / s0, 1e-6);
  // Running statistics move 10 % of the way, with the unbiased variance (PyTorch).
  EXPECT_TRUE(test::all_close(bn.running_mean().to_vector<float>(), std::vector<double>{0.25, 0.2},
                              1e-6, 1e-7));
  EXPECT_TRUE(test::all_close(bn.running_var().to_vector<float>(),
                              std::vector<double>{0.9 + 0.1 * 5.0 / 3.0, 0.9 + 0.1 * 16.0}, 1e-6,
                              1e-7));
  EXPECT_EQ(bn.num_batches_tracked(), 1);
  bn(bn_input());
  EXPECT_EQ(bn.num_batches_tracked(), 2);
}

TEST(BatchNorm2d, EvalUsesRunningStatisticsAndLeavesBuffersAlone) {
  BatchNorm2d bn(2);
  bn(bn_input());  // running_mean {0.25, 0.2}
  const std::vector<float> mean = bn.running_mean().to_vector<float>();
  const std::vector<float> var = bn.running_var().to_vector<float>();
  bn.eval();
  const std::vector<float> out = bn(bn_input()).to_vector<float>();
  EXPECT_NEAR(out[0], (1 - mean[0]) / std::sqrt(var[0] + 1e-5), 1e-6);
  EXPECT_NEAR(out[7], (8 - mean[1]) / std::sqrt(var[1] + 1e-5), 1e-6);
  EXPECT_EQ(bn.running_mean().to_vector<float>(), mean);
  EXPECT_EQ(bn.running_var().to_vector<float>(), var);
  EXPECT_EQ(bn.num_batches_tracked(), 1);
  // Train and eval outputs differ for the same input: the mode really switches the path.
  bn.train();
  EXPECT_NE(bn(bn_input()).to_vector<float>(), out);
}

TEST(BatchNorm2d, BuffersAndDefaults) {
  BatchNorm2d bn(3);
  EXPECT_EQ(bn.eps(), 1e-5);
  EXPECT_EQ(bn.momentum(), 0.1);
  EXPECT_EQ(bn.weight().to_vector<float>(), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(bn.bias().to_vector<float>(), (std::vector<float>{0, 0, 0}));
  const NamedTensors buffers = bn.named_buffers();
  ASSERT_EQ(buffers.size(), 3u);
  EXPECT_EQ(buffers[2].first, "num_batches_tracked");
  EXPECT_EQ(buffers[2].second.dtype(), DType::i64);
  EXPECT_EQ(buffers[2].second.dim(), 0);
  // A rejected input does not count as a batch.
  EXPECT_THROW(bn(Tensor::zeros({2, 4, 1, 1})), std::invalid_argument);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
}

TEST(BatchNorm2d, NoGradForwardStillTracksInTraining) {
  BatchNorm2d bn(2);
  NoGradGuard no_grad;
  bn(bn_input());
  EXPECT_EQ(bn.num_batches_tracked(), 1);
}

// forward_relu is relu(bn(x)) with the same bookkeeping: counter, state version, hooks.
TEST(BatchNorm2d, ForwardReluMatchesReluOfForward) {
  for (bool training : {true, false}) {
    BatchNorm2d plain(2), fused(2);
    plain.train(training);
    fused.train(training);
    int hook_calls = 0;
    fused.add_forward_hook([&](Module&, const Tensor&, const Tensor&) { ++hook_calls; });
    const uint64_t version = fused.state_version();
    const Tensor expected = relu(plain(bn_input()));
    const Tensor y = fused.forward_relu(bn_input());
    EXPECT_TRUE(test::all_close(y.to_vector<float>(), expected.to_vector<float>(),
                                test::kReferenceF32Rel, test::kReferenceF32Abs));
    EXPECT_EQ(fused.num_batches_tracked(), plain.num_batches_tracked());
    EXPECT_EQ(fused.running_mean().to_vector<float>(), plain.running_mean().to_vector<float>());
    EXPECT_EQ(fused.running_var().to_vector<float>(), plain.running_var().to_vector<float>());
    EXPECT_EQ(fused.state_version() != version, training);
    EXPECT_EQ(hook_calls, 1);
  }
}

TEST(Pooling, ModulesMatchTheirOps) {
  Generator gen(13);
  const Tensor x = Tensor::rand({2, 3, 6, 6}, gen);
  EXPECT_EQ(MaxPool2d(Pool2dOptions::make(2))(x).shape(), (Shape{2, 3, 3, 3}));
  EXPECT_EQ(AvgPool2d(Pool2dOptions::make(3, 2, 1))(x).shape(), (Shape{2, 3, 3, 3}));
  EXPECT_EQ(AdaptiveAvgPool2d(1, 1)(x).shape(), (Shape{2, 3, 1, 1}));
  const Tensor g = GlobalAvgPool2d()(x);
  EXPECT_EQ(g.shape(), (Shape{2, 3}));
  EXPECT_EQ(Flatten()(AdaptiveAvgPool2d(1, 1)(x)).to_vector<float>(), g.to_vector<float>());
  EXPECT_EQ(ReLU6()(Tensor::full({1}, 9.0)).item(), 6.0);
  EXPECT_EQ(ReLU()(Tensor::full({1}, -2.0)).item(), 0.0);
}

}  // namespace
}  // namespace retort::nn
