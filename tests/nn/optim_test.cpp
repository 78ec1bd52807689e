// Tests of SGD against PyTorch's rule computed by hand, option checks, and exact resume from state.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops.h"
#include "engine/rng.h"
#include "nn/models/registry.h"
#include "nn/optim.h"
#include "tests/nn/nn_test_util.h"

namespace retort::nn {
namespace {

// torch.optim.SGD's single-tensor step, written out in double for one element.
struct ReferenceSgd {
  SgdOptions o;
  bool has_buf = false;
  double buf = 0.0;
  void step(double& p, double g) {
    double d = g;
    if (o.weight_decay != 0.0) d += o.weight_decay * p;
    if (o.momentum != 0.0) {
      buf = has_buf ? o.momentum * buf + (1.0 - o.dampening) * d : d;
      has_buf = true;
      d = o.nesterov ? d + o.momentum * buf : buf;
    }
    p -= o.lr * d;
  }
};

// Three steps of SGD on an f64 parameter with a different gradient each step.
std::vector<double> run_sgd(const SgdOptions& o, const std::vector<double>& p0,
                            const std::vector<std::vector<double>>& grads) {
  Tensor p = Tensor::from_vector<double>(p0, {static_cast<int64_t>(p0.size())});
  p.set_requires_grad(true);
  SGD sgd({{"p", p}}, o);
  for (const auto& g : grads) {
    sgd.zero_grad();
    p.set_grad(Tensor::from_vector<double>(g, p.shape()));
    sgd.step();
  }
  EXPECT_EQ(sgd.step_count(), static_cast<int64_t>(grads.size()));
  return p.to_vector<double>();
}

const std::vector<double> kP0 = {1.0, -2.0, 0.5};
const std::vector<std::vector<double>> kGrads = {
    {0.1, 0.2, -0.3}, {0.4, -0.5, 0.6}, {-0.7, 0.8, 0.9}};

TEST(SGD, PlainMomentumByHand) {
  // p = 1, g = 1 every step, lr 0.1, momentum 0.9: buf 1, 1.9, 2.71 -> p 0.9, 0.71, 0.439.
  SgdOptions o{.lr = 0.1, .momentum = 0.9};
  EXPECT_NEAR(run_sgd(o, {1.0}, {{1.0}, {1.0}, {1.0}})[0], 0.439, 1e-15);
  // Nesterov: d = g + 0.9 * buf = 1.9, 2.71, 3.439 -> p 0.81, 0.539, 0.1951.
  o.nesterov = true;
  EXPECT_NEAR(run_sgd(o, {1.0}, {{1.0}, {1.0}, {1.0}})[0], 0.1951, 1e-15);
  // Weight decay 0.5, no momentum: p *= (1 - 0.1 * 0.5) per step with g = 0 -> 0.95^3.
  EXPECT_NEAR(run_sgd({.lr = 0.1, .weight_decay = 0.5}, {1.0}, {{0.0}, {0.0}, {0.0}})[0], 0.857375,
              1e-15);
}

TEST(SGD, MatchesThePyTorchRuleOverThreeSteps) {
  const SgdOptions cases[] = {
      {.lr = 0.05},
      {.lr = 0.05, .momentum = 0.9},
      {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4},
      {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true},
      {.lr = 0.1, .momentum = 0.8, .dampening = 0.3, .weight_decay = 1e-2},
      {.lr = 0.2, .weight_decay = 0.1},
  };
  for (const SgdOptions& o : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "lr " << o.lr << " momentum " << o.momentum << " dampening " << o.dampening
                 << " wd " << o.weight_decay << " nesterov " << o.nesterov);
    const std::vector<double> got = run_sgd(o, kP0, kGrads);
    for (size_t i = 0; i < kP0.size(); ++i) {
      ReferenceSgd ref{o};
      double p = kP0[i];
      for (const auto& g : kGrads) ref.step(p, g[i]);
      EXPECT_NEAR(got[i], p, 1e-15 * std::max(1.0, std::abs(p))) << "element " << i;
    }
  }
}

// With the learning rate kept in a tensor (what a CUDA-graph step reads), a schedule set through
// set_lr gives the same bits as the learning rate passed by value, in both dtypes; the tensor
// holds the rate set last.
TEST(SGD, LearningRateInATensorFollowsSetLr) {
  for (DType dtype : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto run = [dtype](bool in_tensor) {
      Tensor p = Tensor::from_vector<double>(kP0, {3}).to(dtype);
      p.set_requires_grad(true);
      SGD sgd({{"p", p}}, {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
      sgd.set_lr_in_tensor(in_tensor);
      EXPECT_EQ(sgd.lr_in_tensor(), in_tensor);
      const double lrs[] = {0.05, 0.3, 0.011};
      for (size_t i = 0; i < kGrads.size(); ++i) {
        sgd.set_lr(lrs[i]);
        p.set_grad(Tensor::from_vector<double>(kGrads[i], {3}).to(dtype));
        sgd.step();
      }
      return p.to(DType::f64).to_vector<double>();
    };
    const std::vector<double> by_value = run(false), in_tensor = run(true);
    EXPECT_EQ(by_value, in_tensor);
    EXPECT_NE(by_value, kP0);
  }
}

// The step reads the tensor when it runs: a value written there directly (as a graph replay
// would see it) is the rate used, whatever options().lr says.
TEST(SGD, StepReadsTheLearningRateTensor) {
  Tensor p = Tensor::from_vector<double>({1.0}, {1});
  p.set_requires_grad(true);
  SGD sgd({{"p", p}}, {.lr = 0.1});
  sgd.set_lr_in_tensor(true);
  p.set_grad(Tensor::from_vector<double>({1.0}, {1}));
  sgd.step();
  EXPECT_DOUBLE_EQ(p.to_vector<double>()[0], 0.9);
  sgd.set_lr(0.25);
  sgd.step();
  EXPECT_DOUBLE_EQ(p.to_vector<double>()[0], 0.65);
  sgd.set_lr_in_tensor(false);
  sgd.step();  // by value again: 0.25
  EXPECT_DOUBLE_EQ(p.to_vector<double>()[0], 0.4);
}

TEST(SGD, SkipsParametersWithoutGradientAndRejectsBadOptions) {
  Tensor a = Tensor::ones({2}), b = Tensor::ones({2});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  SGD sgd({{"a", a}, {"b", b}}, {.lr = 0.5, .momentum = 0.9});
  a.set_grad(Tensor::ones({2}));
  sgd.step();
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{0.5f, 0.5f}));
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{1.0f, 1.0f}));
  ASSERT_EQ(sgd.state().momentum_buffers.size(), 1u);
  EXPECT_EQ(sgd.state().momentum_buffers[0].first, "a");
  sgd.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  sgd.set_lr(0.01);
  EXPECT_EQ(sgd.lr(), 0.01);
  EXPECT_THROW(sgd.set_lr(-1.0), std::invalid_argument);
  EXPECT_THROW(SGD({{"a", a}}, {.lr = 0.1, .nesterov = true}), std::invalid_argument);
  EXPECT_THROW(SGD({{"a", a}}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
               std::invalid_argument);
  EXPECT_THROW(SGD({{"a", a}, {"a", b}}, {}), std::invalid_argument);
}

// A few training steps of resnet8 with fixed data; returns the final weights.
void train_steps(Module& model, SGD& sgd, int from, int to) {
  for (int step = from; step < to; ++step) {
    Generator gen(100 + step);
    const Tensor x = Tensor::randn({4, 3, 8, 8}, gen);
    const Tensor y = Tensor::from_vector<int64_t>({1, 3, 5, 7}, {4});
    sgd.zero_grad();
    cross_entropy(model(x), y).backward();
    sgd.step();
  }
}

TEST(SGD, ExportedStateResumesBitExactly) {
  const SgdOptions o{.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true};
  auto straight = create_model("resnet8", {.num_classes = 10, .seed = 3});
  SGD sgd_straight(straight->named_parameters(), o);
  train_steps(*straight, sgd_straight, 0, 5);

  auto first = create_model("resnet8", {.num_classes = 10, .seed = 3});
  SGD sgd_first(first->named_parameters(), o);
  train_steps(*first, sgd_first, 0, 3);
  // The checkpoint: weights + optimiser state as named tensors (cloned: training goes on).
  NamedTensors weights;
  for (const auto& [n, t] : first->state_dict()) weights.emplace_back(n, t.clone());
  NamedTensors optim;
  for (const auto& [n, t] : sgd_first.state().to_named_tensors()) optim.emplace_back(n, t.clone());
  EXPECT_EQ(optim[0].first, "optimizer.step");
  EXPECT_EQ(optim[1].first, "optimizer.momentum_buffer.conv1.weight");

  auto resumed = create_model("resnet8", {.num_classes = 10, .seed = 77});
  resumed->load_state_dict(weights);
  SGD sgd_resumed(resumed->named_parameters(), o);
  sgd_resumed.load_state(SgdState::from_named_tensors(optim));
  EXPECT_EQ(sgd_resumed.step_count(), 3);
  train_steps(*resumed, sgd_resumed, 3, 5);

  const NamedTensors a = straight->state_dict(), b = resumed->state_dict();
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].second.dtype() == DType::f32) {
      EXPECT_EQ(a[i].second.to_vector<float>(), b[i].second.to_vector<float>()) << a[i].first;
    } else {
      EXPECT_EQ(a[i].second.item(), b[i].second.item()) << a[i].first;
    }
  }
}

TEST(SGD, LoadStateRejectsUnknownNamesAndShapes) {
  Tensor a = Tensor::ones({2});
  a.set_requires_grad(true);
  SGD sgd({{"a", a}}, {.lr = 0.1, .momentum = 0.9});
  EXPECT_THROW(sgd.load_state({1, {{"b", Tensor::zeros({2})}}}), std::invalid_argument);
  EXPECT_THROW(sgd.load_state({1, {{"a", Tensor::zeros({3})}}}), std::invalid_argument);
  EXPECT_THROW(SgdState::from_named_tensors({}), std::invalid_argument);
  sgd.load_state({4, {{"a", Tensor::full({2}, 2.0)}}});
  a.set_grad(Tensor::zeros({2}));
  sgd.step();  // buf = 0.9 * 2 + 0 = 1.8 -> a = 1 - 0.18
  EXPECT_NEAR(a.to_vector<float>()[0], 0.82f, 1e-6f);
  EXPECT_EQ(sgd.step_count(), 5);
}

}  // namespace
}  // namespace retort::nn
