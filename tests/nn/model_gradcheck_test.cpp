// Finite-difference gradient checks (float64, CPU) of whole small models, on sampled elements.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "nn/models/registry.h"
#include "tests/nn/nn_test_util.h"
#include "tests/tolerances.h"

namespace retort::nn {
namespace {

// Compares d(sum(model(x) * R))/d(t) with central differences for `samples` elements of the
// input and of every `stride`-th parameter tensor. Full checks of every element would take
// 2 forwards per element (tens of thousands here); sampled elements cover every op type.
::testing::AssertionResult check_model(const std::string& name, const Shape& input_shape,
                                       int samples, size_t stride, bool training = true,
                                       double step = test::kGradcheckStep) {
  auto model = create_model(name, {.in_channels = input_shape[1], .num_classes = 5, .seed = 21});
  model->to(DType::f64);
  if (!training) {
    // Give the running statistics values of their own, then differentiate through them.
    NoGradGuard no_grad;
    Generator warm(24);
    (*model)(Tensor::randn({4, input_shape[1], input_shape[2], input_shape[3]}, warm, 0.5, 2.0,
                           DType::f64));
    model->eval();
  }
  Generator gen(22);
  Tensor x = Tensor::randn(input_shape, gen, 0.0, 1.0, DType::f64);
  x.set_requires_grad(true);
  Tensor projection;
  auto objective = [&](const Tensor& input) {
    const Tensor out = (*model)(input);
    if (!projection.defined()) projection = Tensor::rand(out.shape(), gen, -1.0, 1.0, DType::f64);
    return sum(mul(out, projection));
  };
  objective(x).backward();

  NamedTensors checked = {{"input", x}};
  const NamedTensors params = model->named_parameters();
  for (size_t i = 0; i < params.size(); i += stride) checked.push_back(params[i]);
  checked.push_back(params.back());  // the classifier bias

  Generator pick(23);
  for (const auto& [tname, t] : checked) {
    const Tensor analytic = t.grad();
    if (!analytic.defined()) return ::testing::AssertionFailure() << tname << " got no gradient";
    const std::vector<double> grad = analytic.to_vector<double>();
    const std::vector<double> u =
        Tensor::rand({samples}, pick, 0.0, 1.0, DType::f64).to_vector<double>();
    double* data = t.data<double>();
    for (int s = 0; s < samples; ++s) {
      const int64_t i = std::min<int64_t>(t.numel() - 1, static_cast<int64_t>(u[s] * t.numel()));
      const double saved = data[i];
      double plus = 0.0, minus = 0.0;
      {
        NoGradGuard no_grad;
        data[i] = saved + step;
        plus = objective(x).item();
        data[i] = saved - step;
        minus = objective(x).item();
      }
      data[i] = saved;
      const double numeric = (plus - minus) / (2.0 * step);
      if (!(std::abs(numeric - grad[i]) <=
            test::kGradcheckAbs + test::kGradcheckRel * std::abs(numeric))) {
        return ::testing::AssertionFailure() << tname << " element " << i << ": analytic "
                                             << grad[i] << " vs numeric " << numeric;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Training mode (batch statistics in every BN): 8x8 inputs keep 2x2 maps in the last stage.
TEST(ModelGradcheck, ResNet8) {
  EXPECT_TRUE(check_model("resnet8", {2, 3, 8, 8}, 4, 1));
}

TEST(ModelGradcheck, Wrn161) {
  EXPECT_TRUE(check_model("wrn_16_1", {2, 2, 8, 8}, 3, 1));
}

// Stride 2 in the stem and three stride-2 stages: 16x16 ends at 1x1 with a batch of 4. In training
// mode its 52 BNs normalise over few values each, which makes the loss strongly curved in the stem
// weights (gradients of order 1e3): central differences with the default step 1e-6 are off by up
// to 1 % there, while 1e-7 and 1e-8 agree with the analytic gradient to 1e-6 relative (checked by
// sweeping the step from 1e-3 to 1e-8). Hence the smaller step.
constexpr double kCurvedStep = 1e-7;
TEST(ModelGradcheck, MobileNetV2) {
  EXPECT_TRUE(check_model("MobileNetV2", {4, 1, 16, 16}, 2, 3, true, kCurvedStep));
}

TEST(ModelGradcheck, MobileNetV2InEvalMode) {
  EXPECT_TRUE(check_model("MobileNetV2", {2, 1, 16, 16}, 2, 7, /*training=*/false));
}

// Evaluation mode: BN uses the running statistics, so a batch of one works.
TEST(ModelGradcheck, ResNet8InEvalMode) {
  EXPECT_TRUE(check_model("resnet8", {1, 3, 8, 8}, 3, 2, /*training=*/false));
}

}  // namespace
}  // namespace retort::nn
