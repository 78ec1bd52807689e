// Small helpers shared by the tests: seeded random data and element-wise comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace retort::test {

// Uniform values in [low, high) from a fixed seed, so failures reproduce.
template <typename T>
std::vector<T> random_vector(size_t n, uint32_t seed, T low = T(-1), T high = T(1)) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(static_cast<double>(low), static_cast<double>(high));
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

// Fails with the first few mismatching indices when |a - b| > abs_tol + rel_tol * |b|.
template <typename T, typename U>
::testing::AssertionResult all_close(const std::vector<T>& actual, const std::vector<U>& expected,
                                     double rel_tol, double abs_tol) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected size " << expected.size();
  }
  int bad = 0;
  ::testing::AssertionResult result = ::testing::AssertionSuccess();
  auto failure = ::testing::AssertionFailure();
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = static_cast<double>(actual[i]);
    const double b = static_cast<double>(expected[i]);
    if (!(std::abs(a - b) <= abs_tol + rel_tol * std::abs(b))) {
      if (bad < 5) failure << "[" << i << "] " << a << " vs expected " << b << "; ";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return failure << bad << " of " << actual.size() << " elements differ (rel " << rel_tol
                 << ", abs " << abs_tol << ")";
}

}  // namespace retort::test
