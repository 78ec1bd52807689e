// Finite-difference gradient check in float64 on the CPU, used by the op and model tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/tolerances.h"

namespace retort::test {

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Checks d(sum(f(inputs) * R))/d(input) for a fixed random R against central differences, for
// every input that requires grad. Inputs must be contiguous f64 CPU leaves.
inline ::testing::AssertionResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs,
                                            double step = kGradcheckStep,
                                            double abs_tol = kGradcheckAbs,
                                            double rel_tol = kGradcheckRel) {
  for (const Tensor& t : inputs) {
    if (t.dtype() != DType::f64 || !t.device().is_cpu() || !t.is_contiguous() || !t.is_leaf()) {
      return ::testing::AssertionFailure() << "gradcheck needs contiguous f64 CPU leaves, got "
                                           << t.str();
    }
  }
  Tensor out = f(inputs);
  Generator gen(1234);
  const Tensor projection = Tensor::rand(out.shape(), gen, -1.0, 1.0, DType::f64);
  auto objective = [&](const Tensor& o) { return sum(mul(o, projection)); };

  for (const Tensor& t : inputs) {
    if (t.requires_grad()) t.set_grad(Tensor());
  }
  objective(out).backward();

  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& t = inputs[k];
    if (!t.requires_grad()) continue;
    const Tensor analytic = t.grad();
    if (!analytic.defined()) {
      return ::testing::AssertionFailure() << "input " << k << " received no gradient";
    }
    const std::vector<double> grad = analytic.to_vector<double>();
    double* x = t.data<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double saved = x[i];
      double plus = 0.0, minus = 0.0;
      {
        NoGradGuard no_grad;
        x[i] = saved + step;
        plus = objective(f(inputs)).item();
        x[i] = saved - step;
        minus = objective(f(inputs)).item();
      }
      x[i] = saved;
      const double numeric = (plus - minus) / (2.0 * step);
      if (!(std::abs(numeric - grad[i]) <= abs_tol + rel_tol * std::abs(numeric))) {
        return ::testing::AssertionFailure()
               << "input " << k << " element " << i << ": analytic " << grad[i] << " vs numeric "
               << numeric;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// A seeded f64 CPU leaf with values uniform in (low, high].
inline Tensor leaf(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0,
                   bool requires_grad = true) {
  Generator gen(seed);
  Tensor t = Tensor::rand(shape, gen, low, high, DType::f64);
  t.set_requires_grad(requires_grad);
  return t;
}

}  // namespace retort::test
