// Tests of the CPU metric kernels: count_top1 against hand cases and a naive ranking loop.
#include "kernels/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace retort::kernels {
namespace {

const CpuContext kCpu{};

// nn::count_correct's rule with k = 1 written out the slow way: the label's rank is the number of
// classes that sort before it (greater, or equal with a lower index); rank 0 is correct.
template <typename T>
int64_t naive_top1(int64_t n, int64_t c, const std::vector<T>& logits,
                   const std::vector<int64_t>& labels) {
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T target = logits[i * c + labels[i]];
    if (std::isnan(target)) continue;
    int64_t rank = 0;
    for (int64_t j = 0; j < c; ++j) {
      const T v = logits[i * c + j];
      if (v > target || (j < labels[i] && v == target)) ++rank;
    }
    if (rank == 0) ++correct;
  }
  return correct;
}

// Logits drawn from a few integer levels so that ties are common, with some NaNs mixed in.
template <typename T>
std::vector<T> tie_heavy_logits(size_t count, uint32_t seed, int levels, double nan_fraction) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> level(0, levels - 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<T> v(count);
  for (T& x : v) {
    x = unit(gen) < nan_fraction ? std::numeric_limits<T>::quiet_NaN() : static_cast<T>(level(gen));
  }
  return v;
}

std::vector<int64_t> random_labels(int64_t n, int64_t c, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, c - 1);
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t& label : labels) label = dist(gen);
  return labels;
}

TEST(CountTop1, HandCases) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // (8, 3); the comment says whether the row counts.
  const std::vector<float> logits = {
      1.0f, 3.0f,  2.0f,  // label 1: strict maximum -> yes
      1.0f, 3.0f,  2.0f,  // label 2: second -> no
      5.0f, 5.0f,  1.0f,  // label 0: tie, lowest index -> yes
      5.0f, 5.0f,  1.0f,  // label 1: tie, a lower index has the same value -> no
      nan,  1.0f,  0.0f,  // label 1: a NaN elsewhere never beats the target -> yes
      nan,  1.0f,  0.0f,  // label 0: NaN target -> no
      -inf, -inf,  -inf,  // label 0: all equal, lowest index -> yes
      0.0f, -0.0f, 0.0f,  // label 1: -0 == 0, and index 0 is lower -> no
  };
  const std::vector<int64_t> labels = {1, 2, 0, 1, 1, 0, 0, 1};
  int64_t correct = 0;
  count_top1<float>(kCpu, 8, 3, logits.data(), labels.data(), &correct);
  EXPECT_EQ(correct, 4);
  EXPECT_EQ(correct, naive_top1<float>(8, 3, logits, labels));
}

TEST(CountTop1, SingleClassCountsEveryNonNanRow) {
  const std::vector<double> logits = {-3.0, 0.0, std::nan(""), 7.0};
  const std::vector<int64_t> labels = {0, 0, 0, 0};
  int64_t correct = 0;
  count_top1<double>(kCpu, 4, 1, logits.data(), labels.data(), &correct);
  EXPECT_EQ(correct, 3);
}

template <typename T>
void check_against_naive() {
  struct Shape {
    int64_t n, c;
  };
  const Shape shapes[] = {{1, 1}, {1, 10}, {7, 3}, {64, 10}, {257, 100}, {5, 2049}, {3000, 7}};
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    for (int levels : {2, 5, 1000}) {
      for (double nan_fraction : {0.0, 0.05}) {
        SCOPED_TRACE(std::to_string(s.n) + "x" + std::to_string(s.c) + ", levels " +
                     std::to_string(levels) + ", NaN fraction " + std::to_string(nan_fraction));
        const auto logits =
            tie_heavy_logits<T>(static_cast<size_t>(s.n * s.c), ++seed, levels, nan_fraction);
        const auto labels = random_labels(s.n, s.c, ++seed);
        int64_t correct = 0;
        count_top1<T>(kCpu, s.n, s.c, logits.data(), labels.data(), &correct);
        EXPECT_EQ(correct, naive_top1<T>(s.n, s.c, logits, labels));
      }
    }
  }
}

TEST(CountTop1, MatchesNaiveLoopFloat) {
  check_against_naive<float>();
}
TEST(CountTop1, MatchesNaiveLoopDouble) {
  check_against_naive<double>();
}

TEST(CountTop1, AccumulatesAcrossCalls) {
  constexpr int64_t kN = 300, kC = 10;
  const auto logits = tie_heavy_logits<float>(kN * kC, 5, 4, 0.02);
  const auto labels = random_labels(kN, kC, 6);
  int64_t whole = 0;
  count_top1<float>(kCpu, kN, kC, logits.data(), labels.data(), &whole);
  // The same rows in three batches, starting from a non-zero count: adds, never resets.
  int64_t split = 1000;
  count_top1<float>(kCpu, 100, kC, logits.data(), labels.data(), &split);
  count_top1<float>(kCpu, 150, kC, logits.data() + 100 * kC, labels.data() + 100, &split);
  count_top1<float>(kCpu, 50, kC, logits.data() + 250 * kC, labels.data() + 250, &split);
  EXPECT_EQ(split, 1000 + whole);
  EXPECT_GT(whole, 0);
}

TEST(CountTop1, SameResultOnAnyThreadCount) {
  constexpr int64_t kN = 20000, kC = 10;
  const auto logits = tie_heavy_logits<float>(kN * kC, 9, 6, 0.01);
  const auto labels = random_labels(kN, kC, 10);
  int64_t one = 0, many = 0;
  count_top1<float>(CpuContext{1}, kN, kC, logits.data(), labels.data(), &one);
  count_top1<float>(CpuContext{4}, kN, kC, logits.data(), labels.data(), &many);
  EXPECT_EQ(one, many);
  EXPECT_EQ(one, naive_top1<float>(kN, kC, logits, labels));
}

TEST(CountTop1, EmptyBatchAddsNothing) {
  int64_t correct = 17;
  count_top1<float>(kCpu, 0, 10, nullptr, nullptr, &correct);
  EXPECT_EQ(correct, 17);
}

TEST(CountTop1, BadLabelThrowsNamingTheRowAndAddsNothing) {
  const std::vector<float> logits(4 * 3, 0.0f);
  for (int64_t bad : {int64_t{-1}, int64_t{3}}) {
    const std::vector<int64_t> labels = {0, 1, bad, 2};
    int64_t correct = 5;
    try {
      count_top1<float>(kCpu, 4, 3, logits.data(), labels.data(), &correct);
      FAIL() << "expected std::invalid_argument for label " << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("row 2"), std::string::npos) << e.what();
    }
    EXPECT_EQ(correct, 5);
  }
  int64_t correct = 0;
  EXPECT_THROW(count_top1<float>(kCpu, -1, 3, logits.data(), nullptr, &correct),
               std::invalid_argument);
}

}  // namespace
}  // namespace retort::kernels
