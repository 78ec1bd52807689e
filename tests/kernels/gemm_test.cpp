// Tests of the CPU gemm kernel against a naive float64 loop over shapes, transposes, strides.
#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::random_vector;

template <typename T>
struct Tolerance;
// The outputs are O(1) sums, so an absolute floor equal to the relative tolerance only matters
// where a sum cancels to near zero and the relative bound would demand more than rounding allows.
template <>
struct Tolerance<double> {
  static constexpr double rel = test::kReferenceF64Rel;
  static constexpr double abs = test::kReferenceF64Abs;
};
template <>
struct Tolerance<float> {
  static constexpr double rel = test::kReferenceF32Rel;
  static constexpr double abs = test::kReferenceF32Abs;
};

struct GemmCase {
  bool trans_a, trans_b;
  int64_t m, n, k;
  int64_t lda_pad, ldb_pad, ldc_pad;  // leading dimension = width + pad
  double alpha, beta;
};

// C = alpha * op(A) * op(B) + beta * C in float64, reading C only when beta != 0.
template <typename T>
std::vector<double> reference_gemm(const GemmCase& g, const std::vector<T>& a, int64_t lda,
                                   const std::vector<T>& b, int64_t ldb, const std::vector<T>& c,
                                   int64_t ldc) {
  std::vector<double> out(c.begin(), c.end());
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double sum = 0;
      for (int64_t p = 0; p < g.k; ++p) {
        const double a_ip = g.trans_a ? a[p * lda + i] : a[i * lda + p];
        const double b_pj = g.trans_b ? b[j * ldb + p] : b[p * ldb + j];
        sum += a_ip * b_pj;
      }
      const double prior = g.beta == 0 ? 0.0 : g.beta * static_cast<double>(c[i * ldc + j]);
      out[i * ldc + j] = g.alpha * sum + prior;
    }
  }
  return out;
}

template <typename T>
void check_gemm(const GemmCase& g, int num_threads) {
  SCOPED_TRACE(::testing::Message() << "trans_a=" << g.trans_a << " trans_b=" << g.trans_b << " m="
                                    << g.m << " n=" << g.n << " k=" << g.k << " pads=" << g.lda_pad
                                    << "," << g.ldb_pad << "," << g.ldc_pad << " alpha=" << g.alpha
                                    << " beta=" << g.beta << " threads=" << num_threads);
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  const int64_t lda = a_cols + g.lda_pad, ldb = b_cols + g.ldb_pad, ldc = g.n + g.ldc_pad;
  const auto a = random_vector<T>(a_rows * lda, 1);
  const auto b = random_vector<T>(b_rows * ldb, 2);
  auto c = random_vector<T>(g.m * ldc, 3);
  if (g.beta == 0) {
    // beta = 0 must not read C: NaNs in the output would otherwise propagate.
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) c[i * ldc + j] = std::numeric_limits<T>::quiet_NaN();
    }
  }
  const auto expected = reference_gemm(g, a, lda, b, ldb, c, ldc);
  gemm<T>(CpuContext{num_threads}, g.trans_a, g.trans_b, g.m, g.n, g.k, static_cast<T>(g.alpha),
          a.data(), lda, b.data(), ldb, static_cast<T>(g.beta), c.data(), ldc);
  // The padding between rows of C must be left untouched, so compare the whole buffer.
  EXPECT_TRUE(all_close(c, expected, Tolerance<T>::rel, Tolerance<T>::abs));
}

std::vector<GemmCase> gemm_cases() {
  std::vector<GemmCase> cases;
  const int64_t sizes[][3] = {{1, 1, 1},    {1, 7, 5},     {7, 1, 5},   {5, 3, 1},
                              {7, 5, 3},    {16, 16, 16},  {33, 17, 9}, {64, 48, 144},
                              {70, 90, 65}, {130, 37, 260}};
  for (const auto& size : sizes) {
    for (int trans = 0; trans < 4; ++trans) {
      const bool ta = trans & 1, tb = trans & 2;
      cases.push_back({ta, tb, size[0], size[1], size[2], 0, 0, 0, 1.0, 0.0});
      cases.push_back({ta, tb, size[0], size[1], size[2], 3, 5, 2, 1.0, 1.0});
      cases.push_back({ta, tb, size[0], size[1], size[2], 1, 0, 4, -0.5, 0.0});
      cases.push_back({ta, tb, size[0], size[1], size[2], 0, 2, 0, 2.0, 0.25});
    }
  }
  return cases;
}

template <typename T>
class GemmTest : public ::testing::Test {};
using Dtypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GemmTest, Dtypes);

TYPED_TEST(GemmTest, MatchesReferenceSerial) {
  for (const auto& g : gemm_cases()) check_gemm<TypeParam>(g, 1);
}

TYPED_TEST(GemmTest, MatchesReferenceMultithreaded) {
  for (const auto& g : gemm_cases()) {
    check_gemm<TypeParam>(g, 2);
    check_gemm<TypeParam>(g, 0);
  }
}

TYPED_TEST(GemmTest, LargeProductAcrossThreads) {
  // Large enough for Eigen to split the product over an OpenMP team.
  check_gemm<TypeParam>({false, false, 300, 260, 200, 0, 0, 0, 1.0, 0.0}, 2);
  check_gemm<TypeParam>({true, true, 257, 301, 190, 4, 1, 3, 1.0, 1.0}, 2);
}

TYPED_TEST(GemmTest, EmptyInnerDimensionScalesC) {
  // k = 0: op(A) * op(B) is the zero matrix; A and B are never read.
  using T = TypeParam;
  std::vector<T> c = {T(1), T(2), T(3), T(4)};
  gemm<T>(CpuContext{1}, false, false, 2, 2, 0, T(1), nullptr, 1, nullptr, 2, T(0.5), c.data(), 2);
  EXPECT_EQ(c, (std::vector<T>{T(0.5), T(1), T(1.5), T(2)}));
  std::vector<T> nan_c(4, std::numeric_limits<T>::quiet_NaN());
  gemm<T>(CpuContext{1}, false, false, 2, 2, 0, T(1), nullptr, 1, nullptr, 2, T(0), nan_c.data(),
          2);
  EXPECT_EQ(nan_c, std::vector<T>(4, T(0)));
}

TYPED_TEST(GemmTest, ZeroAlphaDoesNotReadInputs) {
  using T = TypeParam;
  const std::vector<T> a(6, std::numeric_limits<T>::quiet_NaN());
  const std::vector<T> b(6, std::numeric_limits<T>::quiet_NaN());
  std::vector<T> c = {T(1), T(2), T(3), T(4)};
  gemm<T>(CpuContext{1}, false, false, 2, 2, 3, T(0), a.data(), 3, b.data(), 2, T(2), c.data(), 2);
  EXPECT_EQ(c, (std::vector<T>{T(2), T(4), T(6), T(8)}));
}

}  // namespace
}  // namespace retort::kernels
