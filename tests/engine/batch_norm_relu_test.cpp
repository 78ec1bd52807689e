// Path equivalence of the fused ops on the CPU: batch_norm_relu against relu(batch_norm(...)) and
// batch_norm_add_relu against relu(batch_norm(...) + residual).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::test {
namespace {

struct Result {
  std::vector<double> y, grad_x, grad_weight, grad_bias, grad_residual, running_mean, running_var;
};

template <typename T>
std::vector<double> values(const Tensor& t) {
  const std::vector<T> v = t.to_vector<T>();
  return std::vector<double>(v.begin(), v.end());
}

// Runs relu(batch_norm(...) [+ residual]) (fused = false) or batch_norm_relu(...) /
// batch_norm_add_relu(...) on fresh copies of one set of inputs, backpropagating sum(y * g) for a
// fixed random g.
Result run(bool fused, const Shape& shape, DType dtype, bool training, bool affine,
           bool with_residual = false) {
  const int64_t c = shape[1];
  Generator gen(2024);
  Tensor x = Tensor::rand(shape, gen, -2.0, 2.0, dtype);
  Tensor weight = Tensor::rand({c}, gen, 0.5, 1.5, dtype);
  Tensor bias = Tensor::rand({c}, gen, -0.5, 0.5, dtype);
  Tensor running_mean = Tensor::rand({c}, gen, -0.5, 0.5, dtype);
  Tensor running_var = Tensor::rand({c}, gen, 0.5, 1.5, dtype);
  const Tensor g = Tensor::rand(shape, gen, -1.0, 1.0, dtype);
  Tensor residual = Tensor::rand(shape, gen, -1.0, 1.0, dtype);
  x.set_requires_grad(true);
  residual.set_requires_grad(true);
  if (!affine) weight = bias = Tensor();
  if (affine) {
    weight.set_requires_grad(true);
    bias.set_requires_grad(true);
  }
  Tensor y;
  if (with_residual) {
    y = fused ? batch_norm_add_relu(x, residual, weight, bias, running_mean, running_var, training,
                                    0.2, 1e-4)
              : relu(add(batch_norm(x, weight, bias, running_mean, running_var, training, 0.2,
                                    1e-4),
                         residual));
  } else {
    y = fused ? batch_norm_relu(x, weight, bias, running_mean, running_var, training, 0.2, 1e-4)
              : relu(batch_norm(x, weight, bias, running_mean, running_var, training, 0.2, 1e-4));
  }
  sum(mul(y, g)).backward();
  auto read = [dtype](const Tensor& t) {
    return dtype == DType::f64 ? values<double>(t) : values<float>(t);
  };
  Result r{read(y), read(x.grad()), {}, {}, {}, read(running_mean), read(running_var)};
  if (affine) {
    r.grad_weight = read(weight.grad());
    r.grad_bias = read(bias.grad());
  }
  if (with_residual) r.grad_residual = read(residual.grad());
  return r;
}

class BatchNormRelu : public ::testing::TestWithParam<DType> {};

// The fused op against the plain ops over shapes, modes and affine or not. The CPU forward is
// bit-identical (the residual is added after BN's output is rounded, as the unfused ops do), and
// so is the residual's gradient, the masked gradient that relu's backward passes on; x's and the
// affine gradients within the tolerance of a changed summation order.
void expect_fused_matches_plain(DType dtype, bool with_residual) {
  const bool f64 = dtype == DType::f64;
  const double rel = f64 ? kReferenceF64Rel : kReferenceF32Rel;
  const double abs = f64 ? kReferenceF64Abs : kReferenceF32Abs;
  const Shape shapes[] = {{4, 3, 5, 7}, {6, 5}, {2, 4, 1, 3}, {8, 16, 4, 4}};
  for (const Shape& shape : shapes) {
    for (bool training : {true, false}) {
      for (bool affine : {true, false}) {
        SCOPED_TRACE(shape_str(shape) + (training ? " train" : " eval") +
                     (affine ? " affine" : " plain"));
        const Result fused = run(true, shape, dtype, training, affine, with_residual);
        const Result plain = run(false, shape, dtype, training, affine, with_residual);
        EXPECT_EQ(fused.y, plain.y);
        EXPECT_EQ(fused.grad_residual, plain.grad_residual);
        EXPECT_TRUE(all_close(fused.grad_x, plain.grad_x, rel, abs)) << "grad_x";
        EXPECT_TRUE(all_close(fused.grad_weight, plain.grad_weight, rel, abs)) << "grad_weight";
        EXPECT_TRUE(all_close(fused.grad_bias, plain.grad_bias, rel, abs)) << "grad_bias";
        // The same running-statistics update (and none in evaluation).
        EXPECT_EQ(fused.running_mean, plain.running_mean);
        EXPECT_EQ(fused.running_var, plain.running_var);
      }
    }
  }
}

TEST_P(BatchNormRelu, EqualsReluOfBatchNorm) { expect_fused_matches_plain(GetParam(), false); }

TEST_P(BatchNormRelu, AddReluEqualsReluOfBatchNormPlusResidual) {
  expect_fused_matches_plain(GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, BatchNormRelu, ::testing::Values(DType::f32, DType::f64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(BatchNormReluNode, IsNamedAfterTheOp) {
  Generator gen(3);
  Tensor x = Tensor::rand({3, 2, 2, 2}, gen, -1.0, 1.0);
  x.set_requires_grad(true);
  const Tensor y = batch_norm_relu(x, Tensor(), Tensor(), Tensor(), Tensor(), true);
  ASSERT_TRUE(y.grad_fn() != nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "batch_norm_relu");
}

TEST(BatchNormReluNode, AddReluHasFourInputs) {
  Generator gen(5);
  Tensor x = Tensor::rand({3, 2, 2, 2}, gen, -1.0, 1.0);
  Tensor residual = Tensor::rand({3, 2, 2, 2}, gen, -1.0, 1.0);
  residual.set_requires_grad(true);
  const Tensor y = batch_norm_add_relu(x, residual, Tensor(), Tensor(), Tensor(), Tensor(), true);
  ASSERT_TRUE(y.grad_fn() != nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "batch_norm_add_relu");
  sum(y).backward();
  ASSERT_TRUE(residual.grad().defined());
  EXPECT_FALSE(x.grad().defined());  // x did not require grad
  // d sum(relu(v)) / d residual is 1 where the output is positive, 0 elsewhere.
  const std::vector<float> out = y.to_vector<float>(), grad = residual.grad().to_vector<float>();
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(grad[i], out[i] > 0.0f ? 1.0f : 0.0f) << i;
}

TEST(BatchNormReluChecks, AddReluRejectsAMismatchedResidual) {
  Generator gen(6);
  const Tensor x = Tensor::rand({2, 3, 2, 2}, gen, -1.0, 1.0);
  for (const Tensor& residual : {Tensor::rand({2, 3, 2, 1}, gen, -1.0, 1.0),
                                 Tensor::rand({2, 3, 2, 2}, gen, -1.0, 1.0, DType::f64),
                                 Tensor()}) {
    try {
      batch_norm_add_relu(x, residual, Tensor(), Tensor(), Tensor(), Tensor(), true);
      FAIL() << "accepted residual " << (residual.defined() ? shape_str(residual.shape()) : "none");
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).rfind("batch_norm_add_relu:", 0), 0u) << e.what();
    }
  }
}

TEST(BatchNormReluChecks, ErrorsNameTheOp) {
  Generator gen(4);
  const Tensor x = Tensor::rand({1, 3}, gen, -1.0, 1.0);
  try {
    batch_norm_relu(x, Tensor(), Tensor(), Tensor(), Tensor(), true);
    FAIL() << "one value per channel was accepted in training";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).rfind("batch_norm_relu:", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace retort::test
