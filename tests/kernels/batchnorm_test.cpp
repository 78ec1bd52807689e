// Tests of the CPU batch-norm kernels: double references, finite differences, stats, fused ReLU.
#include "kernels/batchnorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::random_vector;

constexpr double kMomentum = 0.1;
constexpr double kEps = 1e-5;

// Tolerances of a kernel against a double reference fed the same inputs. The float64 absolute
// floor equals the relative tolerance: values are O(1), and outputs such as grad_x cancel to near
// zero, where only an absolute bound is meaningful.
template <typename T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double rel = test::kReferenceF32Rel, abs = test::kReferenceF32Abs;
};
template <>
struct Tol<double> {
  static constexpr double rel = test::kReferenceF64Rel, abs = test::kReferenceF64Abs;
};

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

int64_t numel(const BatchNormShape& s) {
  return s.batch * s.channels * s.spatial;
}
int64_t index(const BatchNormShape& s, int64_t b, int64_t c, int64_t i) {
  return (b * s.channels + c) * s.spatial + i;
}

// The values of channel c, in (batch, spatial) order.
std::vector<double> channel_values(const BatchNormShape& s, const std::vector<double>& x,
                                   int64_t c) {
  std::vector<double> v;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < s.spatial; ++i) v.push_back(x[index(s, b, c, i)]);
  }
  return v;
}

struct TrainReference {
  std::vector<double> y, mean, invstd, running_mean, running_var;
};

// PyTorch's training-mode batch norm written out directly, for n > 1 values per channel.
TrainReference reference_train(const BatchNormShape& s, const std::vector<double>& x,
                               const std::vector<double>& gamma, const std::vector<double>& beta,
                               std::vector<double> running_mean, std::vector<double> running_var) {
  TrainReference r{std::vector<double>(x.size()), {}, {}, {}, {}};
  for (int64_t c = 0; c < s.channels; ++c) {
    const std::vector<double> v = channel_values(s, x, c);
    const double n = static_cast<double>(v.size());
    double mean = 0.0;
    for (double e : v) mean += e;
    mean /= n;
    double ss = 0.0;
    for (double e : v) ss += (e - mean) * (e - mean);
    const double var = ss / n;
    const double invstd = 1.0 / std::sqrt(var + kEps);
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t i = 0; i < s.spatial; ++i) {
        const int64_t k = index(s, b, c, i);
        r.y[k] = (x[k] - mean) * invstd * gamma[c] + beta[c];
      }
    }
    r.mean.push_back(mean);
    r.invstd.push_back(invstd);
    running_mean[c] = (1 - kMomentum) * running_mean[c] + kMomentum * mean;
    running_var[c] = (1 - kMomentum) * running_var[c] + kMomentum * ss / (n - 1);
  }
  r.running_mean = running_mean;
  r.running_var = running_var;
  return r;
}

std::vector<double> reference_eval(const BatchNormShape& s, const std::vector<double>& x,
                                   const std::vector<double>& gamma,
                                   const std::vector<double>& beta,
                                   const std::vector<double>& running_mean,
                                   const std::vector<double>& running_var) {
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t c = 0; c < s.channels; ++c) {
      for (int64_t i = 0; i < s.spatial; ++i) {
        const int64_t k = index(s, b, c, i);
        y[k] = (x[k] - running_mean[c]) / std::sqrt(running_var[c] + kEps) * gamma[c] + beta[c];
      }
    }
  }
  return y;
}

struct Grads {
  std::vector<double> x, gamma, beta;
};

// The textbook chain rule through xhat, var and mean (a different route from the kernel's
// closed form), with the statistics recomputed from x.
Grads reference_backward_train(const BatchNormShape& s, const std::vector<double>& x,
                               const std::vector<double>& grad_y,
                               const std::vector<double>& gamma) {
  Grads g{std::vector<double>(x.size()), {}, {}};
  for (int64_t c = 0; c < s.channels; ++c) {
    const std::vector<double> v = channel_values(s, x, c);
    const std::vector<double> dy = channel_values(s, grad_y, c);
    const double n = static_cast<double>(v.size());
    double mean = 0.0;
    for (double e : v) mean += e;
    mean /= n;
    double var = 0.0;
    for (double e : v) var += (e - mean) * (e - mean);
    var /= n;
    const double invstd = 1.0 / std::sqrt(var + kEps);
    double grad_var = 0.0, grad_mean = 0.0, sum_xmu = 0.0, grad_gamma = 0.0, grad_beta = 0.0;
    for (size_t k = 0; k < v.size(); ++k) {
      const double grad_xhat = dy[k] * gamma[c];
      grad_var += grad_xhat * (v[k] - mean) * -0.5 * std::pow(var + kEps, -1.5);
      grad_mean += -grad_xhat * invstd;
      sum_xmu += -2.0 * (v[k] - mean);
      grad_gamma += dy[k] * (v[k] - mean) * invstd;
      grad_beta += dy[k];
    }
    grad_mean += grad_var * sum_xmu / n;
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t i = 0; i < s.spatial; ++i) {
        const int64_t k = index(s, b, c, i);
        g.x[k] = grad_y[k] * gamma[c] * invstd + grad_var * 2.0 * (x[k] - mean) / n + grad_mean / n;
      }
    }
    g.gamma.push_back(grad_gamma);
    g.beta.push_back(grad_beta);
  }
  return g;
}

Grads reference_backward_eval(const BatchNormShape& s, const std::vector<double>& x,
                              const std::vector<double>& grad_y, const std::vector<double>& gamma,
                              const std::vector<double>& running_mean,
                              const std::vector<double>& running_var) {
  Grads g{std::vector<double>(x.size()), std::vector<double>(s.channels, 0.0),
          std::vector<double>(s.channels, 0.0)};
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t c = 0; c < s.channels; ++c) {
      const double invstd = 1.0 / std::sqrt(running_var[c] + kEps);
      for (int64_t i = 0; i < s.spatial; ++i) {
        const int64_t k = index(s, b, c, i);
        g.x[k] = grad_y[k] * gamma[c] * invstd;
        g.gamma[c] += grad_y[k] * (x[k] - running_mean[c]) * invstd;
        g.beta[c] += grad_y[k];
      }
    }
  }
  return g;
}

// Random inputs for one case; x may sit on a large offset to catch float accumulation.
template <typename T>
struct Inputs {
  std::vector<T> x, gamma, beta, running_mean, running_var, grad_y;
};

template <typename T>
Inputs<T> make_inputs(const BatchNormShape& s, uint32_t seed, double offset = 0.0) {
  Inputs<T> in;
  in.x = random_vector<T>(numel(s), seed, T(offset - 1), T(offset + 1));
  in.gamma = random_vector<T>(s.channels, seed + 1, T(0.5), T(1.5));
  in.beta = random_vector<T>(s.channels, seed + 2, T(-0.5), T(0.5));
  in.running_mean = random_vector<T>(s.channels, seed + 3, T(-0.5), T(0.5));
  in.running_var = random_vector<T>(s.channels, seed + 4, T(0.5), T(1.5));
  in.grad_y = random_vector<T>(numel(s), seed + 5);
  return in;
}

// Shapes with more than one value per channel: BatchNorm1d (spatial 1), batch 1, odd sizes.
const std::vector<BatchNormShape> kTrainShapes = {
    {2, 3, 1}, {5, 2, 1}, {1, 4, 7}, {1, 1, 2}, {3, 5, 35}, {4, 3, 9}, {7, 3, 13}, {2, 1, 2},
};

template <typename T>
class BatchNormTest : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(BatchNormTest, Dtypes);

TYPED_TEST(BatchNormTest, ForwardTrainMatchesReference) {
  using T = TypeParam;
  uint32_t seed = 10;
  for (const BatchNormShape& s : kTrainShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    Inputs<T> in = make_inputs<T>(s, seed += 10);
    const TrainReference ref =
        reference_train(s, to_double(in.x), to_double(in.gamma), to_double(in.beta),
                        to_double(in.running_mean), to_double(in.running_var));
    std::vector<T> y(numel(s)), save_mean(s.channels), save_invstd(s.channels);
    batchnorm_forward_train<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                               T(kMomentum), T(kEps), in.running_mean.data(), in.running_var.data(),
                               y.data(), save_mean.data(), save_invstd.data());
    EXPECT_TRUE(all_close(y, ref.y, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(save_mean, ref.mean, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(save_invstd, ref.invstd, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(in.running_mean, ref.running_mean, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(in.running_var, ref.running_var, Tol<T>::rel, Tol<T>::abs));
  }
}

// 4096 values per channel around 100: a float accumulator would lose ~1e-4 in the mean.
TYPED_TEST(BatchNormTest, ForwardTrainAccumulatesInDouble) {
  using T = TypeParam;
  const BatchNormShape s{4, 2, 1024};
  Inputs<T> in = make_inputs<T>(s, 7, 100.0);
  const TrainReference ref =
      reference_train(s, to_double(in.x), to_double(in.gamma), to_double(in.beta),
                      to_double(in.running_mean), to_double(in.running_var));
  std::vector<T> y(numel(s)), save_mean(s.channels), save_invstd(s.channels);
  batchnorm_forward_train<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                             T(kMomentum), T(kEps), in.running_mean.data(), in.running_var.data(),
                             y.data(), save_mean.data(), save_invstd.data());
  EXPECT_TRUE(all_close(y, ref.y, Tol<T>::rel, Tol<T>::abs));
  EXPECT_TRUE(all_close(save_mean, ref.mean, Tol<T>::rel, Tol<T>::abs));
  EXPECT_TRUE(all_close(save_invstd, ref.invstd, Tol<T>::rel, Tol<T>::abs));
  EXPECT_TRUE(all_close(in.running_var, ref.running_var, Tol<T>::rel, Tol<T>::abs));
}

TYPED_TEST(BatchNormTest, ForwardEvalMatchesReference) {
  using T = TypeParam;
  std::vector<BatchNormShape> shapes = kTrainShapes;
  shapes.push_back({1, 3, 1});  // one value per channel is fine in evaluation
  uint32_t seed = 200;
  for (const BatchNormShape& s : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    const Inputs<T> in = make_inputs<T>(s, seed += 10);
    const std::vector<double> ref =
        reference_eval(s, to_double(in.x), to_double(in.gamma), to_double(in.beta),
                       to_double(in.running_mean), to_double(in.running_var));
    std::vector<T> y(numel(s));
    batchnorm_forward_eval<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                              in.running_mean.data(), in.running_var.data(), T(kEps), y.data());
    EXPECT_TRUE(all_close(y, ref, Tol<T>::rel, Tol<T>::abs));
  }
}

TYPED_TEST(BatchNormTest, BackwardTrainMatchesReference) {
  using T = TypeParam;
  uint32_t seed = 400;
  for (const BatchNormShape& s : kTrainShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    Inputs<T> in = make_inputs<T>(s, seed += 10);
    std::vector<T> y(numel(s)), save_mean(s.channels), save_invstd(s.channels);
    batchnorm_forward_train<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                               T(kMomentum), T(kEps), in.running_mean.data(), in.running_var.data(),
                               y.data(), save_mean.data(), save_invstd.data());
    std::vector<T> grad_x(numel(s)), grad_gamma(s.channels), grad_beta(s.channels);
    batchnorm_backward_train<T>(CpuContext{}, s, in.x.data(), in.grad_y.data(), in.gamma.data(),
                                save_mean.data(), save_invstd.data(), grad_x.data(),
                                grad_gamma.data(), grad_beta.data());
    const Grads ref =
        reference_backward_train(s, to_double(in.x), to_double(in.grad_y), to_double(in.gamma));
    EXPECT_TRUE(all_close(grad_x, ref.x, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(grad_gamma, ref.gamma, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(grad_beta, ref.beta, Tol<T>::rel, Tol<T>::abs));
  }
}

TYPED_TEST(BatchNormTest, BackwardEvalMatchesReference) {
  using T = TypeParam;
  std::vector<BatchNormShape> shapes = kTrainShapes;
  shapes.push_back({1, 3, 1});
  uint32_t seed = 600;
  for (const BatchNormShape& s : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    const Inputs<T> in = make_inputs<T>(s, seed += 10);
    std::vector<T> grad_x(numel(s)), grad_gamma(s.channels), grad_beta(s.channels);
    batchnorm_backward_eval<T>(CpuContext{}, s, in.x.data(), in.grad_y.data(), in.gamma.data(),
                               in.running_mean.data(), in.running_var.data(), T(kEps),
                               grad_x.data(), grad_gamma.data(), grad_beta.data());
    const Grads ref =
        reference_backward_eval(s, to_double(in.x), to_double(in.grad_y), to_double(in.gamma),
                                to_double(in.running_mean), to_double(in.running_var));
    EXPECT_TRUE(all_close(grad_x, ref.x, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(grad_gamma, ref.gamma, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(grad_beta, ref.beta, Tol<T>::rel, Tol<T>::abs));
  }
}

// Central differences of L = sum(w * y(v)) with respect to each element of v, in double.
template <typename Loss>
std::vector<double> finite_difference(std::vector<double> v, Loss loss) {
  std::vector<double> grad(v.size());
  for (size_t k = 0; k < v.size(); ++k) {
    const double saved = v[k];
    v[k] = saved + test::kGradcheckStep;
    const double plus = loss(v);
    v[k] = saved - test::kGradcheckStep;
    const double minus = loss(v);
    v[k] = saved;
    grad[k] = (plus - minus) / (2 * test::kGradcheckStep);
  }
  return grad;
}

double weighted_sum(const std::vector<double>& w, const std::vector<double>& y) {
  double sum = 0.0;
  for (size_t k = 0; k < y.size(); ++k) sum += w[k] * y[k];
  return sum;
}

const std::vector<BatchNormShape> kGradcheckShapes = {{2, 3, 4}, {3, 2, 1}, {1, 2, 5}};

TEST(BatchNormGradcheck, TrainMatchesFiniteDifferences) {
  uint32_t seed = 800;
  for (const BatchNormShape& s : kGradcheckShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    const Inputs<double> in = make_inputs<double>(s, seed += 10);
    // L(x, gamma, beta); running statistics go to scratch copies.
    auto loss = [&](const std::vector<double>& x, const std::vector<double>& gamma,
                    const std::vector<double>& beta) {
      std::vector<double> rm = in.running_mean, rv = in.running_var, y(numel(s)), sm(s.channels),
                          si(s.channels);
      batchnorm_forward_train<double>(CpuContext{}, s, x.data(), gamma.data(), beta.data(),
                                      kMomentum, kEps, rm.data(), rv.data(), y.data(), sm.data(),
                                      si.data());
      return weighted_sum(in.grad_y, y);
    };
    std::vector<double> rm = in.running_mean, rv = in.running_var, y(numel(s)),
                        save_mean(s.channels), save_invstd(s.channels);
    batchnorm_forward_train<double>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                                    kMomentum, kEps, rm.data(), rv.data(), y.data(),
                                    save_mean.data(), save_invstd.data());
    std::vector<double> grad_x(numel(s)), grad_gamma(s.channels), grad_beta(s.channels);
    batchnorm_backward_train<double>(CpuContext{}, s, in.x.data(), in.grad_y.data(),
                                     in.gamma.data(), save_mean.data(), save_invstd.data(),
                                     grad_x.data(), grad_gamma.data(), grad_beta.data());
    const auto fd_x =
        finite_difference(in.x, [&](const auto& v) { return loss(v, in.gamma, in.beta); });
    const auto fd_gamma =
        finite_difference(in.gamma, [&](const auto& v) { return loss(in.x, v, in.beta); });
    const auto fd_beta =
        finite_difference(in.beta, [&](const auto& v) { return loss(in.x, in.gamma, v); });
    EXPECT_TRUE(all_close(grad_x, fd_x, test::kGradcheckRel, test::kGradcheckAbs));
    EXPECT_TRUE(all_close(grad_gamma, fd_gamma, test::kGradcheckRel, test::kGradcheckAbs));
    EXPECT_TRUE(all_close(grad_beta, fd_beta, test::kGradcheckRel, test::kGradcheckAbs));
  }
}

TEST(BatchNormGradcheck, EvalMatchesFiniteDifferences) {
  uint32_t seed = 900;
  std::vector<BatchNormShape> shapes = kGradcheckShapes;
  shapes.push_back({1, 2, 1});
  for (const BatchNormShape& s : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    const Inputs<double> in = make_inputs<double>(s, seed += 10);
    auto loss = [&](const std::vector<double>& x, const std::vector<double>& gamma,
                    const std::vector<double>& beta) {
      std::vector<double> y(numel(s));
      batchnorm_forward_eval<double>(CpuContext{}, s, x.data(), gamma.data(), beta.data(),
                                     in.running_mean.data(), in.running_var.data(), kEps, y.data());
      return weighted_sum(in.grad_y, y);
    };
    std::vector<double> grad_x(numel(s)), grad_gamma(s.channels), grad_beta(s.channels);
    batchnorm_backward_eval<double>(CpuContext{}, s, in.x.data(), in.grad_y.data(), in.gamma.data(),
                                    in.running_mean.data(), in.running_var.data(), kEps,
                                    grad_x.data(), grad_gamma.data(), grad_beta.data());
    const auto fd_x =
        finite_difference(in.x, [&](const auto& v) { return loss(v, in.gamma, in.beta); });
    const auto fd_gamma =
        finite_difference(in.gamma, [&](const auto& v) { return loss(in.x, v, in.beta); });
    const auto fd_beta =
        finite_difference(in.beta, [&](const auto& v) { return loss(in.x, in.gamma, v); });
    EXPECT_TRUE(all_close(grad_x, fd_x, test::kGradcheckRel, test::kGradcheckAbs));
    EXPECT_TRUE(all_close(grad_gamma, fd_gamma, test::kGradcheckRel, test::kGradcheckAbs));
    EXPECT_TRUE(all_close(grad_beta, fd_beta, test::kGradcheckRel, test::kGradcheckAbs));
  }
}

// Hand-computed: channel 0 holds {1, 2, 3, 4} (mean 2.5, unbiased var 5/3), channel 1 holds
// {-1, -1, 3, 3} (mean 1, unbiased var 16/3); two steps from running (0, 1) with momentum 0.1.
TEST(BatchNormRunningStats, UpdateUsesUnbiasedVariance) {
  const BatchNormShape s{2, 2, 2};
  const std::vector<double> x = {1, 2, -1, -1, 3, 4, 3, 3};  // (2, 2, 2)
  const std::vector<double> gamma = {1, 1}, beta = {0, 0};
  std::vector<double> rm = {0, 0}, rv = {1, 1}, y(8), save_mean(2), save_invstd(2);
  batchnorm_forward_train<double>(CpuContext{}, s, x.data(), gamma.data(), beta.data(), 0.1, kEps,
                                  rm.data(), rv.data(), y.data(), save_mean.data(),
                                  save_invstd.data());
  const double rel = test::kReferenceF64Rel;
  EXPECT_TRUE(all_close(save_mean, std::vector<double>{2.5, 1.0}, rel, rel));
  // save_invstd uses the biased variance: 5/4 and 16/4.
  EXPECT_TRUE(all_close(save_invstd,
                        std::vector<double>{1 / std::sqrt(1.25 + kEps), 1 / std::sqrt(4 + kEps)},
                        rel, rel));
  EXPECT_TRUE(all_close(rm, std::vector<double>{0.25, 0.1}, rel, rel));
  EXPECT_TRUE(all_close(rv, std::vector<double>{0.9 + 0.1 * 5 / 3, 0.9 + 0.1 * 16 / 3}, rel, rel));
  batchnorm_forward_train<double>(CpuContext{}, s, x.data(), gamma.data(), beta.data(), 0.1, kEps,
                                  rm.data(), rv.data(), y.data(), save_mean.data(),
                                  save_invstd.data());
  EXPECT_TRUE(all_close(rm, std::vector<double>{0.9 * 0.25 + 0.25, 0.9 * 0.1 + 0.1}, rel, rel));
  EXPECT_TRUE(all_close(rv,
                        std::vector<double>{0.9 * (0.9 + 0.1 * 5 / 3) + 0.1 * 5 / 3,
                                            0.9 * (0.9 + 0.1 * 16 / 3) + 0.1 * 16 / 3},
                        rel, rel));
}

// Path equivalence: evaluation with running stats equal to the batch's (biased) statistics
// reproduces the training-mode output.
TEST(BatchNormPaths, EvalWithBatchStatisticsEqualsTrain) {
  const BatchNormShape s{3, 4, 10};
  const Inputs<double> in = make_inputs<double>(s, 55);
  std::vector<double> rm = in.running_mean, rv = in.running_var, y_train(numel(s)),
                      save_mean(s.channels), save_invstd(s.channels);
  batchnorm_forward_train<double>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                                  kMomentum, kEps, rm.data(), rv.data(), y_train.data(),
                                  save_mean.data(), save_invstd.data());
  std::vector<double> biased_var(s.channels);
  for (int64_t c = 0; c < s.channels; ++c) {
    biased_var[c] = 1 / (save_invstd[c] * save_invstd[c]) - kEps;
  }
  std::vector<double> y_eval(numel(s));
  batchnorm_forward_eval<double>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                                 save_mean.data(), biased_var.data(), kEps, y_eval.data());
  EXPECT_TRUE(all_close(y_eval, y_train, test::kReferenceF64Rel, test::kReferenceF64Rel));
}

// One value per channel (the engine rejects this before calling, as PyTorch does): the kernel
// still returns finite values: y = beta, invstd = 1/sqrt(eps), the unbiased variance taken as 0,
// and a zero grad_x.
TEST(BatchNormDegenerate, OneValuePerChannel) {
  const BatchNormShape s{1, 2, 1};
  const std::vector<double> x = {3.0, -2.0}, gamma = {1.5, 0.5}, beta = {0.25, -0.75};
  std::vector<double> rm = {0.5, 0.5}, rv = {2.0, 2.0}, y(2), save_mean(2), save_invstd(2);
  batchnorm_forward_train<double>(CpuContext{}, s, x.data(), gamma.data(), beta.data(), kMomentum,
                                  kEps, rm.data(), rv.data(), y.data(), save_mean.data(),
                                  save_invstd.data());
  const double rel = test::kReferenceF64Rel;
  EXPECT_TRUE(all_close(y, beta, rel, rel));
  EXPECT_TRUE(all_close(save_mean, x, rel, rel));
  EXPECT_TRUE(all_close(save_invstd, std::vector<double>(2, 1 / std::sqrt(kEps)), rel, rel));
  EXPECT_TRUE(
      all_close(rm, std::vector<double>{0.9 * 0.5 + 0.1 * 3.0, 0.9 * 0.5 - 0.1 * 2.0}, rel, rel));
  EXPECT_TRUE(all_close(rv, std::vector<double>{1.8, 1.8}, rel, rel));
  const std::vector<double> grad_y = {0.7, -1.3};
  std::vector<double> grad_x(2), grad_gamma(2), grad_beta(2);
  batchnorm_backward_train<double>(CpuContext{}, s, x.data(), grad_y.data(), gamma.data(),
                                   save_mean.data(), save_invstd.data(), grad_x.data(),
                                   grad_gamma.data(), grad_beta.data());
  EXPECT_TRUE(all_close(grad_x, std::vector<double>{0, 0}, rel, rel));
  EXPECT_TRUE(all_close(grad_gamma, std::vector<double>{0, 0}, rel, rel));
  EXPECT_TRUE(all_close(grad_beta, grad_y, rel, rel));
}

// Per-channel sums in a fixed order: any thread count gives the same bits.
TEST(BatchNormDeterminism, ThreadCountDoesNotChangeResults) {
  const BatchNormShape s{8, 16, 1024};
  const Inputs<float> in = make_inputs<float>(s, 99);
  struct Run {
    std::vector<float> y, save_mean, save_invstd, rm, rv, grad_x, grad_gamma, grad_beta;
  };
  auto run = [&](int threads) {
    const CpuContext ctx{threads};
    Run r{std::vector<float>(numel(s)),
          std::vector<float>(s.channels),
          std::vector<float>(s.channels),
          in.running_mean,
          in.running_var,
          std::vector<float>(numel(s)),
          std::vector<float>(s.channels),
          std::vector<float>(s.channels)};
    batchnorm_forward_train<float>(ctx, s, in.x.data(), in.gamma.data(), in.beta.data(),
                                   float(kMomentum), float(kEps), r.rm.data(), r.rv.data(),
                                   r.y.data(), r.save_mean.data(), r.save_invstd.data());
    batchnorm_backward_train<float>(ctx, s, in.x.data(), in.grad_y.data(), in.gamma.data(),
                                    r.save_mean.data(), r.save_invstd.data(), r.grad_x.data(),
                                    r.grad_gamma.data(), r.grad_beta.data());
    return r;
  };
  const Run one = run(1), many = run(3);
  EXPECT_EQ(one.y, many.y);
  EXPECT_EQ(one.save_mean, many.save_mean);
  EXPECT_EQ(one.save_invstd, many.save_invstd);
  EXPECT_EQ(one.rm, many.rm);
  EXPECT_EQ(one.rv, many.rv);
  EXPECT_EQ(one.grad_x, many.grad_x);
  EXPECT_EQ(one.grad_gamma, many.grad_gamma);
  EXPECT_EQ(one.grad_beta, many.grad_beta);
}

// --- fused ReLU -------------------------------------------------------------------------------
// Path equivalence: the fused forward gives the bits of BN, then ReLU, with the same statistics;
// the fused backward equals the BN backward fed grad_y masked by the output's sign.

// grad_y where y > 0, else 0 (PyTorch's relu backward, which takes the output).
template <typename T>
std::vector<T> relu_masked(const std::vector<T>& grad_y, const std::vector<T>& y) {
  std::vector<T> g(grad_y.size());
  for (size_t k = 0; k < g.size(); ++k) g[k] = y[k] > T(0) ? grad_y[k] : T(0);
  return g;
}

template <typename T>
std::vector<T> relu_of(std::vector<T> v) {
  for (T& e : v) e = e < T(0) ? T(0) : e;
  return v;
}

TYPED_TEST(BatchNormTest, FusedReluTrainEqualsBatchNormThenRelu) {
  using T = TypeParam;
  uint32_t seed = 1000;
  for (const BatchNormShape& s : kTrainShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    const Inputs<T> in = make_inputs<T>(s, seed += 10);
    std::vector<T> rm = in.running_mean, rv = in.running_var, y(numel(s)), mean(s.channels),
                   invstd(s.channels);
    batchnorm_forward_train<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                               T(kMomentum), T(kEps), rm.data(), rv.data(), y.data(), mean.data(),
                               invstd.data());
    std::vector<T> frm = in.running_mean, frv = in.running_var, fy(numel(s)), fmean(s.channels),
                   finvstd(s.channels);
    batchnorm_forward_train<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                               T(kMomentum), T(kEps), frm.data(), frv.data(), fy.data(),
                               fmean.data(), finvstd.data(), /*relu=*/true);
    EXPECT_EQ(fy, relu_of(y));
    EXPECT_EQ(fmean, mean);
    EXPECT_EQ(finvstd, invstd);
    EXPECT_EQ(frm, rm);
    EXPECT_EQ(frv, rv);

    std::vector<T> gx(numel(s)), gg(s.channels), gb(s.channels);
    const std::vector<T> masked = relu_masked(in.grad_y, fy);
    batchnorm_backward_train<T>(CpuContext{}, s, in.x.data(), masked.data(), in.gamma.data(),
                                mean.data(), invstd.data(), gx.data(), gg.data(), gb.data());
    std::vector<T> fgx(numel(s)), fgg(s.channels), fgb(s.channels);
    batchnorm_backward_train<T>(CpuContext{}, s, in.x.data(), in.grad_y.data(), in.gamma.data(),
                                mean.data(), invstd.data(), fgx.data(), fgg.data(), fgb.data(),
                                fy.data());
    // Not bitwise: the compiler may contract the sums into FMAs differently in the two paths.
    EXPECT_TRUE(all_close(fgx, gx, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(fgg, gg, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(fgb, gb, Tol<T>::rel, Tol<T>::abs));
    // And against the textbook chain rule fed the masked gradient.
    const Grads ref =
        reference_backward_train(s, to_double(in.x), to_double(masked), to_double(in.gamma));
    EXPECT_TRUE(all_close(fgx, ref.x, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(fgg, ref.gamma, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(fgb, ref.beta, Tol<T>::rel, Tol<T>::abs));
  }
}

TYPED_TEST(BatchNormTest, FusedReluEvalEqualsBatchNormThenRelu) {
  using T = TypeParam;
  std::vector<BatchNormShape> shapes = kTrainShapes;
  shapes.push_back({1, 3, 1});
  uint32_t seed = 1200;
  for (const BatchNormShape& s : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    const Inputs<T> in = make_inputs<T>(s, seed += 10);
    std::vector<T> y(numel(s)), fy(numel(s));
    batchnorm_forward_eval<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                              in.running_mean.data(), in.running_var.data(), T(kEps), y.data());
    batchnorm_forward_eval<T>(CpuContext{}, s, in.x.data(), in.gamma.data(), in.beta.data(),
                              in.running_mean.data(), in.running_var.data(), T(kEps), fy.data(),
                              /*relu=*/true);
    EXPECT_EQ(fy, relu_of(y));
    const std::vector<T> masked = relu_masked(in.grad_y, fy);
    std::vector<T> gx(numel(s)), gg(s.channels), gb(s.channels);
    batchnorm_backward_eval<T>(CpuContext{}, s, in.x.data(), masked.data(), in.gamma.data(),
                               in.running_mean.data(), in.running_var.data(), T(kEps), gx.data(),
                               gg.data(), gb.data());
    std::vector<T> fgx(numel(s)), fgg(s.channels), fgb(s.channels);
    batchnorm_backward_eval<T>(CpuContext{}, s, in.x.data(), in.grad_y.data(), in.gamma.data(),
                               in.running_mean.data(), in.running_var.data(), T(kEps), fgx.data(),
                               fgg.data(), fgb.data(), fy.data());
    // Not bitwise: the compiler may contract the sums into FMAs differently in the two paths.
    EXPECT_TRUE(all_close(fgx, gx, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(fgg, gg, Tol<T>::rel, Tol<T>::abs));
    EXPECT_TRUE(all_close(fgb, gb, Tol<T>::rel, Tol<T>::abs));
  }
}

// The kink: an output of exactly 0 passes no gradient (beta = 0 and x at the mean give 0).
TEST(BatchNormFusedRelu, ZeroOutputPassesNoGradient) {
  const BatchNormShape s{1, 1, 3};
  const std::vector<double> x = {-1.0, 0.0, 1.0}, gamma = {1.0}, beta = {0.0};
  const std::vector<double> running_mean = {0.0}, running_var = {1.0 - kEps};
  std::vector<double> y(3);
  batchnorm_forward_eval<double>(CpuContext{}, s, x.data(), gamma.data(), beta.data(),
                                 running_mean.data(), running_var.data(), kEps, y.data(), true);
  EXPECT_EQ(y[0], 0.0);
  EXPECT_EQ(y[1], 0.0);
  EXPECT_GT(y[2], 0.0);
  const std::vector<double> grad_y = {1.0, 1.0, 1.0};
  std::vector<double> grad_x(3), grad_gamma(1), grad_beta(1);
  batchnorm_backward_eval<double>(CpuContext{}, s, x.data(), grad_y.data(), gamma.data(),
                                  running_mean.data(), running_var.data(), kEps, grad_x.data(),
                                  grad_gamma.data(), grad_beta.data(), y.data());
  EXPECT_EQ(grad_x[0], 0.0);
  EXPECT_EQ(grad_x[1], 0.0);
  EXPECT_NE(grad_x[2], 0.0);
  EXPECT_EQ(grad_beta[0], 1.0);
}

TEST(BatchNormGradcheck, FusedReluTrainMatchesFiniteDifferences) {
  uint32_t seed = 1400;
  for (const BatchNormShape& s : kGradcheckShapes) {
    SCOPED_TRACE(::testing::Message()
                 << "shape " << s.batch << "x" << s.channels << "x" << s.spatial);
    const Inputs<double> in = make_inputs<double>(s, seed += 10);
    auto forward = [&](const std::vector<double>& x, const std::vector<double>& gamma,
                       const std::vector<double>& beta, std::vector<double>& save_mean,
                       std::vector<double>& save_invstd) {
      std::vector<double> rm = in.running_mean, rv = in.running_var, y(numel(s));
      batchnorm_forward_train<double>(CpuContext{}, s, x.data(), gamma.data(), beta.data(),
                                      kMomentum, kEps, rm.data(), rv.data(), y.data(),
                                      save_mean.data(), save_invstd.data(), true);
      return y;
    };
    auto loss = [&](const std::vector<double>& x, const std::vector<double>& gamma,
                    const std::vector<double>& beta) {
      std::vector<double> sm(s.channels), si(s.channels);
      return weighted_sum(in.grad_y, forward(x, gamma, beta, sm, si));
    };
    std::vector<double> save_mean(s.channels), save_invstd(s.channels);
    const std::vector<double> y = forward(in.x, in.gamma, in.beta, save_mean, save_invstd);
    std::vector<double> grad_x(numel(s)), grad_gamma(s.channels), grad_beta(s.channels);
    batchnorm_backward_train<double>(CpuContext{}, s, in.x.data(), in.grad_y.data(),
                                     in.gamma.data(), save_mean.data(), save_invstd.data(),
                                     grad_x.data(), grad_gamma.data(), grad_beta.data(), y.data());
    const auto fd_x =
        finite_difference(in.x, [&](const auto& v) { return loss(v, in.gamma, in.beta); });
    const auto fd_gamma =
        finite_difference(in.gamma, [&](const auto& v) { return loss(in.x, v, in.beta); });
    const auto fd_beta =
        finite_difference(in.beta, [&](const auto& v) { return loss(in.x, in.gamma, v); });
    EXPECT_TRUE(all_close(grad_x, fd_x, test::kGradcheckRel, test::kGradcheckAbs));
    EXPECT_TRUE(all_close(grad_gamma, fd_gamma, test::kGradcheckRel, test::kGradcheckAbs));
    EXPECT_TRUE(all_close(grad_beta, fd_beta, test::kGradcheckRel, test::kGradcheckAbs));
  }
}

}  // namespace
}  // namespace retort::kernels
