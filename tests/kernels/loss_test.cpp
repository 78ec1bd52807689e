// Tests of the CPU loss kernels: cross-entropy, KD divergence and softmax entropy.
#include "kernels/loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::random_vector;

const CpuContext kCpu{};
constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Naive double softmax of x / temperature straight from the definition (for moderate inputs).
std::vector<double> naive_softmax(int64_t rows, int64_t cols, double temperature,
                                  const std::vector<double>& x) {
  std::vector<double> p(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[r * cols + c] / temperature);
    for (int64_t c = 0; c < cols; ++c)
      p[r * cols + c] = std::exp(x[r * cols + c] / temperature) / sum;
  }
  return p;
}

// Max-shifted double log-softmax for the extreme-logit references, where the naive one overflows.
std::vector<double> shifted_log_softmax(int64_t cols, double temperature,
                                        const std::vector<double>& row) {
  double row_max = -kInf;
  for (const double v : row) row_max = std::max(row_max, v);
  double sum = 0;
  for (const double v : row) sum += std::exp((v - row_max) / temperature);
  std::vector<double> out(cols);
  for (int64_t c = 0; c < cols; ++c) out[c] = (row[c] - row_max) / temperature - std::log(sum);
  return out;
}

std::vector<int64_t> random_labels(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, cols - 1);
  std::vector<int64_t> labels(rows);
  for (auto& label : labels) label = dist(gen);
  return labels;
}

// Central-difference gradient of objective at x, in float64.
template <typename Objective>
std::vector<double> numeric_gradient(std::vector<double> x, Objective objective) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + test::kGradcheckStep;
    const double up = objective(x);
    x[i] = saved - test::kGradcheckStep;
    const double down = objective(x);
    x[i] = saved;
    grad[i] = (up - down) / (2 * test::kGradcheckStep);
  }
  return grad;
}

struct Shape {
  int64_t rows, cols;
};
const Shape kShapes[] = {{1, 1}, {4, 3}, {7, 10}, {33, 100}, {128, 257}};

template <typename T>
class LossTyped : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LossTyped, Dtypes);

// Reference bounds for this dtype. The float64 absolute floor equals its relative bound: the
// values are O(1) and some (log-probabilities of a dominant class, KL of close distributions)
// sit near 0, where a relative bound alone is meaningless.
template <typename T>
double rel_tol() {
  return sizeof(T) == 4 ? test::kReferenceF32Rel : test::kReferenceF64Rel;
}
template <typename T>
double abs_tol() {
  return sizeof(T) == 4 ? test::kReferenceF32Abs : test::kReferenceF64Abs;
}

// ---- cross-entropy ---------------------------------------------------------------------------

TYPED_TEST(LossTyped, CrossEntropyForwardMatchesReference) {
  using T = TypeParam;
  for (const Shape s : kShapes) {
    const auto logits = random_vector<T>(s.rows * s.cols, 1, T(-4), T(4));
    const auto labels = random_labels(s.rows, s.cols, 2);
    std::vector<T> loss(s.rows), log_prob(logits.size());
    cross_entropy_forward<T>(kCpu, s.rows, s.cols, logits.data(), labels.data(), loss.data(),
                             log_prob.data());
    const auto p = naive_softmax(s.rows, s.cols, 1.0, to_double(logits));
    std::vector<double> loss_ref(s.rows), log_prob_ref(p.size());
    for (size_t i = 0; i < p.size(); ++i) log_prob_ref[i] = std::log(p[i]);
    for (int64_t r = 0; r < s.rows; ++r) loss_ref[r] = -log_prob_ref[r * s.cols + labels[r]];
    EXPECT_TRUE(all_close(loss, loss_ref, rel_tol<T>(), abs_tol<T>())) << s.rows << "x" << s.cols;
    EXPECT_TRUE(all_close(log_prob, log_prob_ref, rel_tol<T>(), abs_tol<T>()))
        << s.rows << "x" << s.cols;
  }
}

TYPED_TEST(LossTyped, CrossEntropyBackwardMatchesFormula) {
  using T = TypeParam;
  const int64_t rows = 9, cols = 31;
  const auto logits = random_vector<T>(rows * cols, 3, T(-4), T(4));
  const auto labels = random_labels(rows, cols, 4);
  const auto grad_loss = random_vector<T>(rows, 5);
  std::vector<T> loss(rows), log_prob(logits.size()), grad(logits.size());
  cross_entropy_forward<T>(kCpu, rows, cols, logits.data(), labels.data(), loss.data(),
                           log_prob.data());
  cross_entropy_backward<T>(kCpu, rows, cols, log_prob.data(), labels.data(), grad_loss.data(),
                            grad.data());
  const auto p = naive_softmax(rows, cols, 1.0, to_double(logits));
  std::vector<double> expected(p.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      expected[r * cols + c] = grad_loss[r] * (p[r * cols + c] - (c == labels[r] ? 1.0 : 0.0));
    }
  }
  EXPECT_TRUE(all_close(grad, expected, rel_tol<T>(), abs_tol<T>()));
}

TEST(Loss, CrossEntropyGradcheckFloat64) {
  const Shape shapes[] = {{1, 1}, {3, 4}, {5, 9}};
  for (const Shape s : shapes) {
    const auto logits = random_vector<double>(s.rows * s.cols, 6, -3.0, 3.0);
    const auto labels = random_labels(s.rows, s.cols, 7);
    const auto grad_loss = random_vector<double>(s.rows, 8);
    std::vector<double> loss(s.rows), log_prob(logits.size()), grad(logits.size());
    cross_entropy_forward<double>(kCpu, s.rows, s.cols, logits.data(), labels.data(), loss.data(),
                                  log_prob.data());
    cross_entropy_backward<double>(kCpu, s.rows, s.cols, log_prob.data(), labels.data(),
                                   grad_loss.data(), grad.data());
    const auto numeric = numeric_gradient(logits, [&](const std::vector<double>& x) {
      std::vector<double> l(s.rows), lp(x.size());
      cross_entropy_forward<double>(kCpu, s.rows, s.cols, x.data(), labels.data(), l.data(),
                                    lp.data());
      double sum = 0;
      for (int64_t r = 0; r < s.rows; ++r) sum += grad_loss[r] * l[r];
      return sum;
    });
    EXPECT_TRUE(all_close(grad, numeric, test::kGradcheckRel, test::kGradcheckAbs))
        << s.rows << "x" << s.cols;
  }
}

// Logits of +-1e4: a naive exp overflows; the loss is exactly the logit gap, the gradient p - 1.
TYPED_TEST(LossTyped, CrossEntropyExtremeLogits) {
  using T = TypeParam;
  const int64_t rows = 3, cols = 3;
  const std::vector<T> logits = {T(1e4),  T(-1e4), T(0),      // label 1: loss 2e4
                                 T(1e4),  T(-1e4), T(0),      // label 0: loss 0
                                 T(-1e4), T(-1e4), T(-1e4)};  // all equal: loss log 3
  const std::vector<int64_t> labels = {1, 0, 2};
  const std::vector<T> grad_loss = {T(1), T(2), T(1)};
  std::vector<T> loss(rows), log_prob(logits.size()), grad(logits.size());
  cross_entropy_forward<T>(kCpu, rows, cols, logits.data(), labels.data(), loss.data(),
                           log_prob.data());
  cross_entropy_backward<T>(kCpu, rows, cols, log_prob.data(), labels.data(), grad_loss.data(),
                            grad.data());
  EXPECT_TRUE(
      all_close(loss, std::vector<double>{2e4, 0.0, std::log(3.0)}, rel_tol<T>(), abs_tol<T>()));
  const double third = 1.0 / 3.0;
  EXPECT_TRUE(all_close(grad, std::vector<double>{1, -1, 0, 0, 0, 0, third, third, third - 1},
                        rel_tol<T>(), abs_tol<T>()));
}

// ---- KD divergence ---------------------------------------------------------------------------

TYPED_TEST(LossTyped, KdDivergenceForwardMatchesReference) {
  using T = TypeParam;
  for (const Shape s : kShapes) {
    for (const double temperature : {1.0, 4.0, 20.0}) {
      const auto student = random_vector<T>(s.rows * s.cols, 11, T(-5), T(5));
      const auto teacher = random_vector<T>(s.rows * s.cols, 12, T(-5), T(5));
      std::vector<T> kl(s.rows), log_s(student.size()), p_t(student.size());
      kd_divergence_forward<T>(kCpu, s.rows, s.cols, T(temperature), student.data(), teacher.data(),
                               kl.data(), log_s.data(), p_t.data());
      const auto ps_ref = naive_softmax(s.rows, s.cols, temperature, to_double(student));
      const auto pt_ref = naive_softmax(s.rows, s.cols, temperature, to_double(teacher));
      std::vector<double> kl_ref(s.rows, 0.0), log_s_ref(ps_ref.size());
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t c = 0; c < s.cols; ++c) {
          const int64_t i = r * s.cols + c;
          kl_ref[r] += pt_ref[i] * std::log(pt_ref[i] / ps_ref[i]);
          log_s_ref[i] = std::log(ps_ref[i]);
        }
      }
      EXPECT_TRUE(all_close(kl, kl_ref, rel_tol<T>(), abs_tol<T>()))
          << s.rows << "x" << s.cols << " T=" << temperature;
      EXPECT_TRUE(all_close(log_s, log_s_ref, rel_tol<T>(), abs_tol<T>()))
          << s.rows << "x" << s.cols << " T=" << temperature;
      EXPECT_TRUE(all_close(p_t, pt_ref, rel_tol<T>(), abs_tol<T>()))
          << s.rows << "x" << s.cols << " T=" << temperature;
    }
  }
}

TYPED_TEST(LossTyped, KdDivergenceBackwardMatchesFormula) {
  using T = TypeParam;
  const int64_t rows = 8, cols = 23;
  for (const double temperature : {1.0, 4.0}) {
    const auto student = random_vector<T>(rows * cols, 13, T(-5), T(5));
    const auto teacher = random_vector<T>(rows * cols, 14, T(-5), T(5));
    const auto grad_kl = random_vector<T>(rows, 15);
    std::vector<T> kl(rows), log_s(student.size()), p_t(student.size()), grad(student.size());
    kd_divergence_forward<T>(kCpu, rows, cols, T(temperature), student.data(), teacher.data(),
                             kl.data(), log_s.data(), p_t.data());
    kd_divergence_backward<T>(kCpu, rows, cols, T(temperature), log_s.data(), p_t.data(),
                              grad_kl.data(), grad.data());
    const auto ps_ref = naive_softmax(rows, cols, temperature, to_double(student));
    const auto pt_ref = naive_softmax(rows, cols, temperature, to_double(teacher));
    std::vector<double> expected(ps_ref.size());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = r * cols + c;
        expected[i] = grad_kl[r] * (ps_ref[i] - pt_ref[i]) / temperature;
      }
    }
    EXPECT_TRUE(all_close(grad, expected, rel_tol<T>(), abs_tol<T>())) << "T=" << temperature;
  }
}

TEST(Loss, KdDivergenceGradcheckFloat64) {
  const Shape shapes[] = {{1, 1}, {2, 3}, {4, 8}};
  for (const Shape s : shapes) {
    for (const double temperature : {1.0, 4.0, 20.0}) {
      const int64_t n = s.rows * s.cols;
      const auto student = random_vector<double>(n, 16, -3.0, 3.0);
      const auto teacher = random_vector<double>(n, 17, -3.0, 3.0);
      const auto grad_kl = random_vector<double>(s.rows, 18);
      std::vector<double> kl(s.rows), log_s(n), p_t(n), grad(n);
      kd_divergence_forward<double>(kCpu, s.rows, s.cols, temperature, student.data(),
                                    teacher.data(), kl.data(), log_s.data(), p_t.data());
      kd_divergence_backward<double>(kCpu, s.rows, s.cols, temperature, log_s.data(), p_t.data(),
                                     grad_kl.data(), grad.data());
      const auto numeric = numeric_gradient(student, [&](const std::vector<double>& x) {
        std::vector<double> k(s.rows), ls(n), pt(n);
        kd_divergence_forward<double>(kCpu, s.rows, s.cols, temperature, x.data(), teacher.data(),
                                      k.data(), ls.data(), pt.data());
        double sum = 0;
        for (int64_t r = 0; r < s.rows; ++r) sum += grad_kl[r] * k[r];
        return sum;
      });
      EXPECT_TRUE(all_close(grad, numeric, test::kGradcheckRel, test::kGradcheckAbs))
          << s.rows << "x" << s.cols << " T=" << temperature;
    }
  }
}

// Logits of +-1e4 at T = 1 and T = 20: teacher probabilities underflow to exactly 0 (0 * log 0
// must give 0, not NaN) and a naive exp overflows; the divergence and gradient stay finite.
TYPED_TEST(LossTyped, KdDivergenceExtremeLogits) {
  using T = TypeParam;
  const int64_t rows = 4, cols = 3;
  const std::vector<double> student = {-1e4, 1e4,      0,   // opposite of the teacher
                                       1e4,  -1e4,     0,   // identical to the teacher
                                       0,    0,        0,   // uniform student
                                       1e4,  1e4 - 20, 5};  // close but not equal
  const std::vector<double> teacher = {1e4, -1e4,     0,    //
                                       1e4, -1e4,     0,    //
                                       1e4, 1e4 - 20, -1e4, 1e4 - 20, 1e4, -1e4};
  const std::vector<T> student_t(student.begin(), student.end());
  const std::vector<T> teacher_t(teacher.begin(), teacher.end());
  const std::vector<T> grad_kl(rows, T(1));
  for (const double temperature : {1.0, 20.0}) {
    std::vector<T> kl(rows), log_s(rows * cols), p_t(rows * cols), grad(rows * cols);
    kd_divergence_forward<T>(kCpu, rows, cols, T(temperature), student_t.data(), teacher_t.data(),
                             kl.data(), log_s.data(), p_t.data());
    kd_divergence_backward<T>(kCpu, rows, cols, T(temperature), log_s.data(), p_t.data(),
                              grad_kl.data(), grad.data());
    std::vector<double> kl_ref(rows, 0.0), grad_ref(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<double> s_row(student.begin() + r * cols, student.begin() + (r + 1) * cols);
      const std::vector<double> t_row(teacher.begin() + r * cols, teacher.begin() + (r + 1) * cols);
      const auto ls = shifted_log_softmax(cols, temperature, s_row);
      const auto lt = shifted_log_softmax(cols, temperature, t_row);
      for (int64_t c = 0; c < cols; ++c) {
        const double pt = std::exp(lt[c]);
        if (pt > 0) kl_ref[r] += pt * (lt[c] - ls[c]);
        grad_ref[r * cols + c] = (std::exp(ls[c]) - pt) / temperature;
      }
    }
    for (int64_t i = 0; i < rows * cols; ++i) {
      EXPECT_TRUE(std::isfinite(log_s[i]) && std::isfinite(p_t[i]) && std::isfinite(grad[i]))
          << i << " T=" << temperature;
    }
    EXPECT_TRUE(all_close(kl, kl_ref, rel_tol<T>(), abs_tol<T>())) << "T=" << temperature;
    EXPECT_TRUE(all_close(grad, grad_ref, rel_tol<T>(), abs_tol<T>())) << "T=" << temperature;
    // Hand values for the first two rows: the opposite student costs the logit gap 2e4 / T; the
    // identical one costs exactly nothing.
    EXPECT_NEAR(static_cast<double>(kl[0]), 2e4 / temperature, 2e4 / temperature * rel_tol<T>());
    EXPECT_EQ(kl[1], T(0));
    EXPECT_TRUE(all_close(std::vector<T>(grad.begin(), grad.begin() + cols),
                          std::vector<double>{-1 / temperature, 1 / temperature, 0}, rel_tol<T>(),
                          abs_tol<T>()));
  }
}

// A -inf teacher logit gives p_t = 0 and log p_t = -inf: the term is 0 * log 0 = 0, not NaN.
TYPED_TEST(LossTyped, KdDivergenceZeroTeacherProbability) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  const std::vector<T> teacher = {T(0), -inf, T(0)};
  const std::vector<T> student = {T(1), T(2), T(3)};
  std::vector<T> kl(1), log_s(3), p_t(3);
  kd_divergence_forward<T>(kCpu, 1, 3, T(1), student.data(), teacher.data(), kl.data(),
                           log_s.data(), p_t.data());
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  const double expected = 0.5 * (std::log(0.5) - (1 - lse)) + 0.5 * (std::log(0.5) - (3 - lse));
  EXPECT_TRUE(std::isfinite(kl[0]));
  EXPECT_NEAR(static_cast<double>(kl[0]), expected, abs_tol<T>());
  EXPECT_EQ(p_t[1], T(0));
}

TYPED_TEST(LossTyped, KdDivergenceIsNonNegative) {
  using T = TypeParam;
  const int64_t rows = 50, cols = 20;
  const auto student = random_vector<T>(rows * cols, 19, T(-10), T(10));
  const auto teacher = random_vector<T>(rows * cols, 20, T(-10), T(10));
  std::vector<T> kl(rows), log_s(student.size()), p_t(student.size());
  kd_divergence_forward<T>(kCpu, rows, cols, T(2), student.data(), teacher.data(), kl.data(),
                           log_s.data(), p_t.data());
  for (int64_t r = 0; r < rows; ++r) EXPECT_GE(kl[r], T(0)) << r;
}

// ---- softmax entropy -------------------------------------------------------------------------

TYPED_TEST(LossTyped, SoftmaxEntropyMatchesReference) {
  using T = TypeParam;
  for (const Shape s : kShapes) {
    for (const double temperature : {1.0, 4.0}) {
      const auto logits = random_vector<T>(s.rows * s.cols, 21, T(-5), T(5));
      std::vector<T> entropy(s.rows);
      softmax_entropy<T>(kCpu, s.rows, s.cols, T(temperature), logits.data(), entropy.data());
      const auto p = naive_softmax(s.rows, s.cols, temperature, to_double(logits));
      std::vector<double> expected(s.rows, 0.0);
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t c = 0; c < s.cols; ++c) {
          expected[r] -= p[r * s.cols + c] * std::log(p[r * s.cols + c]);
        }
      }
      EXPECT_TRUE(all_close(entropy, expected, rel_tol<T>(), abs_tol<T>()))
          << s.rows << "x" << s.cols << " T=" << temperature;
    }
  }
}

// Uniform logits have entropy log(cols); a one-hot row (+-1e4) has entropy 0, and a -inf logit
// contributes 0 * log 0 = 0. None of these may produce NaN or inf.
TYPED_TEST(LossTyped, SoftmaxEntropyEdgeCases) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  const int64_t rows = 4, cols = 4;
  const std::vector<T> logits = {T(7),    T(7),    T(7),   T(7),     //
                                 T(1e4),  T(-1e4), T(0),   T(-1e4),  //
                                 T(0),    -inf,    T(0),   -inf,     //
                                 T(-1e4), T(1e4),  T(1e4), T(-1e4)};
  for (const double temperature : {1.0, 20.0}) {
    std::vector<T> entropy(rows);
    softmax_entropy<T>(kCpu, rows, cols, T(temperature), logits.data(), entropy.data());
    std::vector<double> expected = {std::log(4.0), 0.0, std::log(2.0), std::log(2.0)};
    if (temperature == 20.0) {
      // One-hot row at T = 20: z = {0, -1000, -500, -1000}; only e^-500 survives (in double).
      const auto lp = shifted_log_softmax(cols, temperature, {1e4, -1e4, 0, -1e4});
      expected[1] = 0;
      for (const double v : lp) expected[1] -= std::exp(v) * v;
    }
    for (int64_t r = 0; r < rows; ++r) EXPECT_TRUE(std::isfinite(entropy[r])) << r;
    EXPECT_TRUE(all_close(entropy, expected, rel_tol<T>(), abs_tol<T>())) << "T=" << temperature;
  }
}

// ---- threading -------------------------------------------------------------------------------

// Large enough to take the parallel path: one thread and several give identical bits.
TYPED_TEST(LossTyped, ThreadCountDoesNotChangeResult) {
  using T = TypeParam;
  const int64_t rows = 400, cols = 301;  // enough work for three threads
  const auto student = random_vector<T>(rows * cols, 22, T(-8), T(8));
  const auto teacher = random_vector<T>(rows * cols, 23, T(-8), T(8));
  const auto labels = random_labels(rows, cols, 24);
  const auto grad_out = random_vector<T>(rows, 25);
  auto run = [&](int threads) {
    const CpuContext ctx{threads};
    std::vector<T> out;
    std::vector<T> loss(rows), log_prob(rows * cols), grad(rows * cols), kl(rows),
        log_s(rows * cols), p_t(rows * cols), grad_s(rows * cols), entropy(rows);
    cross_entropy_forward<T>(ctx, rows, cols, student.data(), labels.data(), loss.data(),
                             log_prob.data());
    cross_entropy_backward<T>(ctx, rows, cols, log_prob.data(), labels.data(), grad_out.data(),
                              grad.data());
    kd_divergence_forward<T>(ctx, rows, cols, T(4), student.data(), teacher.data(), kl.data(),
                             log_s.data(), p_t.data());
    kd_divergence_backward<T>(ctx, rows, cols, T(4), log_s.data(), p_t.data(), grad_out.data(),
                              grad_s.data());
    softmax_entropy<T>(ctx, rows, cols, T(1), teacher.data(), entropy.data());
    for (const auto* v : {&loss, &log_prob, &grad, &kl, &log_s, &p_t, &grad_s, &entropy}) {
      out.insert(out.end(), v->begin(), v->end());
    }
    return out;
  };
  EXPECT_EQ(run(1), run(3));
}

}  // namespace
}  // namespace retort::kernels
