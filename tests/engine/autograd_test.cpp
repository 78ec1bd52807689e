// The autograd contract: accumulation, shared subgraphs, release of saved tensors, no-grad mode.
#include <gtest/gtest.h>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace retort {
namespace {

Tensor param(std::vector<double> values) {
  const int64_t n = static_cast<int64_t>(values.size());
  Tensor t = Tensor::from_vector(values, {n});
  t.set_requires_grad(true);
  return t;
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = param({1.0, 2.0, 3.0});
  sum(x * x).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2.0, 4.0, 6.0}));
  sum(x * 3.0).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5.0, 7.0, 9.0}));
  x.set_grad(Tensor());  // what an optimiser's zero_grad does
  sum(x).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1.0, 1.0, 1.0}));
}

TEST(Autograd, SharedSubexpressionsSumTheirGradients) {
  Tensor x = param({2.0});
  Tensor y = x * x;         // used twice below
  Tensor z = y * y + y;     // z = x^4 + x^2, dz/dx = 4x^3 + 2x = 36 at x = 2
  z.backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 36.0);
}

TEST(Autograd, LeafGradDoesNotAliasAnotherTensor) {
  Tensor x = param({1.0, 1.0});
  Tensor y = x + 0.0;
  Tensor g = Tensor::from_vector<double>({5.0, 6.0}, {2});
  y.backward(g);
  g.fill_(0.0);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5.0, 6.0}));
}

TEST(Autograd, SavedTensorsAreReleasedUnlessRetained) {
  Tensor x = param({1.0, 2.0});
  Tensor loss = sum(x * x);
  loss.backward(Tensor(), /*retain_graph=*/true);
  loss.backward();  // allowed: the first call retained the graph
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4.0, 8.0}));
  try {
    loss.backward();
    FAIL() << "a third backward through a released graph must throw";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

TEST(Autograd, BackwardWithoutGradIsAClearError) {
  Tensor x = Tensor::from_vector<double>({1.0}, {1});
  try {
    (x * 2.0).backward();
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("does not require grad"), std::string::npos);
  }
  Tensor p = param({1.0, 2.0});
  try {
    (p * 2.0).backward();
    FAIL() << "a non-scalar output needs an explicit gradient";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[2]"), std::string::npos) << e.what();
  }
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = param({1.0, 2.0});
  {
    NoGradGuard guard;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  Tensor z = x * 2.0;
  EXPECT_TRUE(z.requires_grad());
  ASSERT_NE(z.grad_fn(), nullptr);
  EXPECT_EQ(z.grad_fn()->name(), "affine");
}

TEST(Autograd, OnlyInputsThatNeedGradientsGetThem) {
  Tensor w = param({1.0, 2.0});
  Tensor x = Tensor::from_vector<double>({3.0, 4.0}, {2});
  sum(w * x).backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{3.0, 4.0}));
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NarrowedWeightsSendGradientToTheSharedParameter) {
  // Two "widths" of one weight used in one step: the full weight's gradient is the sum.
  Tensor w = param({1.0, 2.0, 3.0, 4.0});
  Tensor narrow_loss = sum(w.narrow(0, 0, 2) * 10.0);
  Tensor full_loss = sum(w);
  (narrow_loss + full_loss).backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{11.0, 11.0, 1.0, 1.0}));
}

TEST(Autograd, TeacherLogitsMustNotRequireGrad) {
  Tensor s = Tensor::zeros({2, 3}, DType::f64).set_requires_grad(true);
  Tensor t = Tensor::zeros({2, 3}, DType::f64).set_requires_grad(true);
  EXPECT_THROW(kd_loss(s, t, 4.0), std::invalid_argument);
  EXPECT_NO_THROW(kd_loss(s, t.detach(), 4.0));
}

}  // namespace
}  // namespace retort
