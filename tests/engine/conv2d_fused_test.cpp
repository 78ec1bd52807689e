// Path equivalence of conv2d_fused on the CPU against act(conv2d(...) + residual), forward and
// backward, and its argument checks.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace retort::test {
namespace {

struct Geometry {
  const char* name;
  Shape x, w;
  Conv2dOptions o;
};

// One per forward path of the CPU kernel, with odd sizes and batch 1.
const Geometry kGeometries[] = {
    {"1x1 pointwise", {2, 5, 7, 5}, {6, 5, 1, 1}, Conv2dOptions::make(1, 0)},
    {"3x3 pad 1 (band)", {2, 4, 9, 7}, {6, 4, 3, 3}, Conv2dOptions::make(1, 1)},
    {"3x3 stride 2", {2, 4, 9, 7}, {6, 4, 3, 3}, Conv2dOptions::make(2, 1)},
    {"grouped", {2, 4, 7, 5}, {6, 2, 3, 3}, Conv2dOptions::make(1, 1, 2)},
    {"depthwise", {2, 5, 7, 5}, {5, 1, 3, 3}, Conv2dOptions::make(1, 1, 5)},
    {"batch 1 odd", {1, 3, 7, 5}, {5, 3, 3, 3}, Conv2dOptions::make(2, 1)},
};

const char* activation_name(Activation a) {
  return a == Activation::relu ? "relu" : a == Activation::relu6 ? "relu6" : "none";
}

struct Result {
  std::vector<double> y, grad_x, grad_weight, grad_bias, grad_residual;
};

template <typename T>
std::vector<double> values(const Tensor& t) {
  const std::vector<T> v = t.to_vector<T>();
  return std::vector<double>(v.begin(), v.end());
}

// Every element has the same bits (the f32 -> f64 widening keeps them distinct, -0 included).
::testing::AssertionResult same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes " << a.size() << " and " << b.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0) {
      return ::testing::AssertionFailure() << "[" << i << "] " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// act(conv2d(x, w, b) + residual) through conv2d_fused (fused = true) or the separate ops, on fresh
// copies of one set of inputs, backpropagating sum(y * g) for a fixed random g.
Result run(bool fused, const Geometry& geo, DType dtype, bool with_bias, bool with_residual,
           Activation act) {
  Generator gen(2025);
  Tensor x = Tensor::rand(geo.x, gen, -2.0, 2.0, dtype);
  Tensor w = Tensor::rand(geo.w, gen, -1.0, 1.0, dtype);
  // Biases up to 7 and residuals in (-3, 3) put outputs below 0, inside (0, 6) and above 6.
  Tensor b = Tensor::rand({geo.w[0]}, gen, -3.0, 7.0, dtype);
  const Shape y_shape = conv2d(x, w, Tensor(), geo.o).shape();
  Tensor residual = Tensor::rand(y_shape, gen, -3.0, 3.0, dtype);
  const Tensor g = Tensor::rand(y_shape, gen, -1.0, 1.0, dtype);
  if (!with_bias) b = Tensor();
  if (!with_residual) residual = Tensor();
  for (Tensor* t : {&x, &w, &b, &residual}) {
    if (t->defined()) t->set_requires_grad(true);
  }
  Tensor y;
  if (fused) {
    y = conv2d_fused(x, w, b, residual, act, geo.o);
  } else {
    y = conv2d(x, w, b, geo.o);
    if (with_residual) y = add(y, residual);
    if (act == Activation::relu) y = relu(y);
    if (act == Activation::relu6) y = relu6(y);
  }
  sum(mul(y, g)).backward();
  auto read = [dtype](const Tensor& t) {
    return dtype == DType::f64 ? values<double>(t) : values<float>(t);
  };
  Result r{read(y), read(x.grad()), read(w.grad()), {}, {}};
  if (with_bias) r.grad_bias = read(b.grad());
  if (with_residual) r.grad_residual = read(residual.grad());
  return r;
}

class Conv2dFused : public ::testing::TestWithParam<DType> {};

// Same kernels in the same order on both sides (the epilogue rounds each step as the separate ops
// do; the mask read from y equals relu's from its input): everything is bit for bit.
TEST_P(Conv2dFused, EqualsActivationOfConvPlusResidual) {
  const DType dtype = GetParam();
  for (const Geometry& geo : kGeometries) {
    for (const bool with_bias : {false, true}) {
      for (const bool with_residual : {false, true}) {
        for (const Activation act : {Activation::none, Activation::relu, Activation::relu6}) {
          SCOPED_TRACE(std::string(geo.name) + (with_bias ? " bias" : "") +
                       (with_residual ? " residual " : " ") + activation_name(act));
          const Result fused = run(true, geo, dtype, with_bias, with_residual, act);
          const Result plain = run(false, geo, dtype, with_bias, with_residual, act);
          EXPECT_TRUE(same_bits(fused.y, plain.y)) << "y";
          EXPECT_TRUE(same_bits(fused.grad_x, plain.grad_x)) << "grad_x";
          EXPECT_TRUE(same_bits(fused.grad_weight, plain.grad_weight)) << "grad_weight";
          EXPECT_TRUE(same_bits(fused.grad_bias, plain.grad_bias)) << "grad_bias";
          EXPECT_TRUE(same_bits(fused.grad_residual, plain.grad_residual)) << "grad_residual";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Conv2dFused, ::testing::Values(DType::f32, DType::f64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// A residual view that is not contiguous is read in its logical order.
TEST(Conv2dFusedOp, NonContiguousResidual) {
  Generator gen(7);
  const Tensor x = Tensor::rand({2, 3, 6, 6}, gen, -1.0, 1.0, DType::f64);
  const Tensor w = Tensor::rand({4, 3, 3, 3}, gen, -1.0, 1.0, DType::f64);
  const Tensor residual = Tensor::rand({2, 4, 6, 6}, gen, -1.0, 1.0, DType::f64).transpose(2, 3);
  ASSERT_FALSE(residual.is_contiguous());
  const Conv2dOptions o = Conv2dOptions::make(1, 1);
  const Tensor fused = conv2d_fused(x, w, Tensor(), residual, Activation::relu, o);
  const Tensor plain = relu(add(conv2d(x, w, Tensor(), o), residual));
  EXPECT_TRUE(same_bits(values<double>(fused), values<double>(plain)));
}

// Only what backward needs is saved, and nothing without grad mode: no node at all.
TEST(Conv2dFusedOp, RecordsANodeOnlyWhenAGradientIsNeeded) {
  Generator gen(8);
  const Tensor x = Tensor::rand({1, 2, 5, 5}, gen, -1.0, 1.0, DType::f64);
  const Tensor w = Tensor::rand({3, 2, 3, 3}, gen, -1.0, 1.0, DType::f64);
  const Tensor y = conv2d_fused(x, w, Tensor(), Tensor(), Activation::relu);
  EXPECT_FALSE(y.requires_grad());
  Tensor residual = Tensor::rand({1, 3, 3, 3}, gen, -1.0, 1.0, DType::f64);
  residual.set_requires_grad(true);
  const Tensor z = conv2d_fused(x, w, Tensor(), residual, Activation::relu6);
  ASSERT_TRUE(z.requires_grad());
  EXPECT_EQ(z.grad_fn()->name(), "conv2d_fused");
  sum(z).backward();
  // Only the residual asked: its gradient is relu6's mask of ones.
  const std::vector<double> zv = z.to_vector<double>(), gr = residual.grad().to_vector<double>();
  for (size_t i = 0; i < zv.size(); ++i) EXPECT_EQ(gr[i], (zv[i] > 0 && zv[i] < 6) ? 1.0 : 0.0);
}

void expect_error(const std::function<void()>& call, const std::string& fragment) {
  try {
    call();
    ADD_FAILURE() << "no exception; expected one mentioning '" << fragment << "'";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("conv2d_fused:", 0), 0u) << what;
    EXPECT_NE(what.find(fragment), std::string::npos) << what;
  }
}

TEST(Conv2dFusedOp, RejectsBadArguments) {
  const Tensor x = Tensor::zeros({2, 4, 6, 6}, DType::f32);
  const Tensor w = Tensor::zeros({8, 4, 3, 3}, DType::f32);
  const Tensor b = Tensor::zeros({8}, DType::f32);
  const Tensor r = Tensor::zeros({2, 8, 6, 6}, DType::f32);
  const Conv2dOptions o = Conv2dOptions::make(1, 1);
  expect_error(
      [&] {
        conv2d_fused(x, w, b, Tensor::zeros({2, 8, 6, 5}, DType::f32), Activation::relu, o);
      },
      "residual [2, 8, 6, 5]");
  expect_error(
      [&] {
        conv2d_fused(x, w, b, Tensor::zeros({2, 8, 3, 3}, DType::f32), Activation::relu,
                     Conv2dOptions::make(1, 1));
      },
      "does not match the output");
  expect_error(
      [&] {
        conv2d_fused(x, w, b, Tensor::zeros({2, 8, 6, 6}, DType::f64), Activation::relu, o);
      },
      "different dtypes");
  expect_error(
      [&] {
        conv2d_fused(x, w, b, Tensor::zeros({2, 8, 6, 6}, DType::i64), Activation::relu, o);
      },
      "residual");
  expect_error([&] { conv2d_fused(x, w, Tensor::zeros({4}, DType::f32), r, Activation::none, o); },
               "bias");
  expect_error(
      [&] {
        conv2d_fused(x, Tensor::zeros({8, 3, 3, 3}, DType::f32), b, r, Activation::relu, o);
      },
      "do not match with groups");
  expect_error(
      [&] {
        conv2d_fused(Tensor::zeros({4, 6, 6}, DType::f32), w, b, r, Activation::relu, o);
      },
      "rank 4");
  expect_error([&] { conv2d_fused(x, w, b, r, Activation::relu, {0, 1, 1, 1, 1}); }, "stride");
  expect_error([&] { conv2d_fused(x, w, b, r, Activation::relu, Conv2dOptions::make(1, 1, 3)); },
               "groups");
  expect_error([&] { conv2d_fused(x, w, b, r, static_cast<Activation>(7), o); }, "activation");
}

}  // namespace
}  // namespace retort::test
