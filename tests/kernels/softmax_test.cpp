// Tests of the CPU softmax / log-softmax kernels: naive references, gradient checks, extremes.
#include "kernels/softmax.h"

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

const CpuContext kCpu{};

// Naive double reference straight from the definition (no max subtraction: inputs stay small).
std::vector<double> reference_softmax(int64_t rows, int64_t cols, double temperature, bool log,
                                      const std::vector<double>& x) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[r * cols + c] / temperature);
    for (int64_t c = 0; c < cols; ++c) {
      const double z = x[r * cols + c] / temperature;
      y[r * cols + c] = log ? z - std::log(sum) : std::exp(z) / sum;
    }
  }
  return y;
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

struct Shape {
  int64_t rows, cols;
};
const Shape kShapes[] = {{1, 1}, {3, 7}, {5, 1}, {2, 33}, {17, 129}, {64, 1000}};

template <typename T>
class SoftmaxTyped : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SoftmaxTyped, Dtypes);

// Reference bounds for this dtype. The float64 absolute floor equals its relative bound: outputs
// are O(1), and log-softmax entries near 0 (one dominant class) need an absolute floor.
template <typename T>
double rel_tol() {
  return sizeof(T) == 4 ? test::kReferenceF32Rel : test::kReferenceF64Rel;
}
template <typename T>
double abs_tol() {
  return sizeof(T) == 4 ? test::kReferenceF32Abs : test::kReferenceF64Abs;
}

TYPED_TEST(SoftmaxTyped, ForwardMatchesReference) {
  using T = TypeParam;
  for (const Shape s : kShapes) {
    for (const double temperature : {1.0, 4.0, 0.5}) {
      for (const bool log : {false, true}) {
        const auto x = random_vector<T>(s.rows * s.cols, 11, T(-3), T(3));
        std::vector<T> y(x.size());
        softmax_forward<T>(kCpu, s.rows, s.cols, T(temperature), log, x.data(), y.data());
        const auto expected = reference_softmax(s.rows, s.cols, temperature, log, to_double(x));
        EXPECT_TRUE(all_close(y, expected, rel_tol<T>(), abs_tol<T>()))
            << s.rows << "x" << s.cols << " T=" << temperature << " log=" << log;
      }
    }
  }
}

TYPED_TEST(SoftmaxTyped, RowsSumToOne) {
  using T = TypeParam;
  const int64_t rows = 9, cols = 301;
  const auto x = random_vector<T>(rows * cols, 5, T(-20), T(20));
  std::vector<T> p(x.size()), log_p(x.size());
  softmax_forward<T>(kCpu, rows, cols, T(1), false, x.data(), p.data());
  softmax_forward<T>(kCpu, rows, cols, T(1), true, x.data(), log_p.data());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0, sum_exp_log = 0;
    for (int64_t c = 0; c < cols; ++c) {
      sum += p[r * cols + c];
      sum_exp_log += std::exp(static_cast<double>(log_p[r * cols + c]));
    }
    EXPECT_NEAR(sum, 1.0, rel_tol<T>()) << "row " << r;
    EXPECT_NEAR(sum_exp_log, 1.0, rel_tol<T>()) << "row " << r;
  }
}

// Backward against a reference written from the header's formula, in double.
TYPED_TEST(SoftmaxTyped, BackwardMatchesFormula) {
  using T = TypeParam;
  const int64_t rows = 6, cols = 45;
  for (const double temperature : {1.0, 4.0}) {
    for (const bool log : {false, true}) {
      const auto x = random_vector<T>(rows * cols, 21, T(-3), T(3));
      const auto grad_y = random_vector<T>(rows * cols, 22);
      std::vector<T> y(x.size()), grad_x(x.size());
      softmax_forward<T>(kCpu, rows, cols, T(temperature), log, x.data(), y.data());
      softmax_backward<T>(kCpu, rows, cols, T(temperature), log, y.data(), grad_y.data(),
                          grad_x.data());
      const auto y_ref = reference_softmax(rows, cols, temperature, log, to_double(x));
      std::vector<double> expected(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        double dot = 0, sum = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t i = r * cols + c;
          dot += grad_y[i] * y_ref[i];
          sum += grad_y[i];
        }
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t i = r * cols + c;
          expected[i] = log ? (grad_y[i] - std::exp(y_ref[i]) * sum) / temperature
                            : y_ref[i] * (grad_y[i] - dot) / temperature;
        }
      }
      EXPECT_TRUE(all_close(grad_x, expected, rel_tol<T>(), abs_tol<T>()))
          << "T=" << temperature << " log=" << log;
    }
  }
}

// sum(w * y(x)) differentiated by central differences in float64 against softmax_backward.
TEST(Softmax, GradcheckFloat64) {
  const Shape shapes[] = {{1, 1}, {3, 5}, {2, 16}};
  for (const Shape s : shapes) {
    for (const double temperature : {1.0, 4.0}) {
      for (const bool log : {false, true}) {
        const int64_t n = s.rows * s.cols;
        auto x = random_vector<double>(n, 31, -2.0, 2.0);
        const auto w = random_vector<double>(n, 32);
        std::vector<double> y(n), grad_x(n), numeric(n);
        auto objective = [&](const std::vector<double>& input) {
          std::vector<double> out(n);
          softmax_forward<double>(kCpu, s.rows, s.cols, temperature, log, input.data(), out.data());
          double sum = 0;
          for (int64_t i = 0; i < n; ++i) sum += w[i] * out[i];
          return sum;
        };
        softmax_forward<double>(kCpu, s.rows, s.cols, temperature, log, x.data(), y.data());
        softmax_backward<double>(kCpu, s.rows, s.cols, temperature, log, y.data(), w.data(),
                                 grad_x.data());
        for (int64_t i = 0; i < n; ++i) {
          const double saved = x[i];
          x[i] = saved + test::kGradcheckStep;
          const double up = objective(x);
          x[i] = saved - test::kGradcheckStep;
          const double down = objective(x);
          x[i] = saved;
          numeric[i] = (up - down) / (2 * test::kGradcheckStep);
        }
        EXPECT_TRUE(all_close(grad_x, numeric, test::kGradcheckRel, test::kGradcheckAbs))
            << s.rows << "x" << s.cols << " T=" << temperature << " log=" << log;
      }
    }
  }
}

// Logits of +-1e4 overflow a naive exp in both dtypes; the stable kernel stays finite and exact.
TYPED_TEST(SoftmaxTyped, ExtremeLogitsStayFinite) {
  using T = TypeParam;
  const int64_t cols = 4;
  const std::vector<double> row = {1e4, -1e4, 0.0, 1e4 - 1};
  const std::vector<T> x(row.begin(), row.end());
  for (const double temperature : {1.0, 20.0}) {
    // Shifted by the row max (1e4) and scaled: z = {0, -2e4, -1e4, -1} / T.
    std::vector<double> z(cols);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      z[c] = (row[c] - 1e4) / temperature;
      sum += std::exp(z[c]);
    }
    std::vector<double> p_ref(cols), log_p_ref(cols);
    for (int64_t c = 0; c < cols; ++c) {
      p_ref[c] = std::exp(z[c]) / sum;
      log_p_ref[c] = z[c] - std::log(sum);
    }
    std::vector<T> p(cols), log_p(cols), grad_x(cols), grad_log_x(cols);
    const std::vector<T> grad_y = {T(0.5), T(-1), T(2), T(0.25)};
    softmax_forward<T>(kCpu, 1, cols, T(temperature), false, x.data(), p.data());
    softmax_forward<T>(kCpu, 1, cols, T(temperature), true, x.data(), log_p.data());
    softmax_backward<T>(kCpu, 1, cols, T(temperature), false, p.data(), grad_y.data(),
                        grad_x.data());
    softmax_backward<T>(kCpu, 1, cols, T(temperature), true, log_p.data(), grad_y.data(),
                        grad_log_x.data());
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_TRUE(std::isfinite(p[c]) && std::isfinite(log_p[c])) << c;
      EXPECT_TRUE(std::isfinite(grad_x[c]) && std::isfinite(grad_log_x[c])) << c;
    }
    EXPECT_TRUE(all_close(p, p_ref, rel_tol<T>(), abs_tol<T>())) << "T=" << temperature;
    EXPECT_TRUE(all_close(log_p, log_p_ref, rel_tol<T>(), abs_tol<T>())) << "T=" << temperature;
    double dot = 0, sum_grad = 0;
    for (int64_t c = 0; c < cols; ++c) {
      dot += grad_y[c] * p_ref[c];
      sum_grad += grad_y[c];
    }
    std::vector<double> grad_ref(cols), grad_log_ref(cols);
    for (int64_t c = 0; c < cols; ++c) {
      grad_ref[c] = p_ref[c] * (grad_y[c] - dot) / temperature;
      grad_log_ref[c] = (grad_y[c] - p_ref[c] * sum_grad) / temperature;
    }
    EXPECT_TRUE(all_close(grad_x, grad_ref, rel_tol<T>(), abs_tol<T>())) << "T=" << temperature;
    EXPECT_TRUE(all_close(grad_log_x, grad_log_ref, rel_tol<T>(), abs_tol<T>()))
        << "T=" << temperature;
  }
}

// Large enough to take the parallel path: one thread and several give identical bits.
TYPED_TEST(SoftmaxTyped, ThreadCountDoesNotChangeResult) {
  using T = TypeParam;
  const int64_t rows = 512, cols = 257;  // enough work for three threads
  const auto x = random_vector<T>(rows * cols, 41, T(-5), T(5));
  const auto grad_y = random_vector<T>(rows * cols, 42);
  for (const bool log : {false, true}) {
    std::vector<T> y1(x.size()), y3(x.size()), g1(x.size()), g3(x.size());
    softmax_forward<T>(CpuContext{1}, rows, cols, T(2), log, x.data(), y1.data());
    softmax_forward<T>(CpuContext{3}, rows, cols, T(2), log, x.data(), y3.data());
    softmax_backward<T>(CpuContext{1}, rows, cols, T(2), log, y1.data(), grad_y.data(), g1.data());
    softmax_backward<T>(CpuContext{3}, rows, cols, T(2), log, y1.data(), grad_y.data(), g3.data());
    EXPECT_EQ(y1, y3) << "log=" << log;
    EXPECT_EQ(g1, g3) << "log=" << log;
  }
}

}  // namespace
}  // namespace retort::kernels
