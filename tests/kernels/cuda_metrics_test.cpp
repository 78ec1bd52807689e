// CPU-vs-CUDA parity of the metric kernels: count_top1, exact counts on tie-heavy logits.
#include "kernels/metrics.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/kernels/cuda_test_util.h"

namespace retort::kernels {
namespace {

using test::CudaParityTest;
using test::DeviceArray;

using CudaMetricsTest = CudaParityTest;

// Logits from a few integer levels so that ties are common, with some NaNs mixed in.
std::vector<float> tie_heavy_logits(size_t count, uint32_t seed, int levels, double nan_fraction) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> level(0, levels - 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<float> v(count);
  for (float& x : v) {
    x = unit(gen) < nan_fraction ? std::numeric_limits<float>::quiet_NaN()
                                 : static_cast<float>(level(gen));
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

// Runs the CUDA twin on a device copy starting from `initial` and returns the device's total.
int64_t gpu_count(const CudaContext& ctx, int64_t n, int64_t c, const std::vector<float>& logits,
                  const std::vector<int64_t>& labels, int64_t initial) {
  DeviceArray<float> d_logits(logits);
  DeviceArray<int64_t> d_labels(labels);
  DeviceArray<int64_t> d_correct(std::vector<int64_t>{initial});
  count_top1(ctx, n, c, d_logits.data(), d_labels.data(), d_correct.data());
  return d_correct.download()[0];
}

TEST_F(CudaMetricsTest, CountTop1MatchesCpu) {
  struct Shape {
    int64_t n, c;
  };
  // Rows per warp (c <= 1024) and per block (c > 1024); 600000 x 2 needs more than one pass of
  // the capped grid.
  const Shape shapes[] = {{1, 1},   {1, 10},   {7, 3},    {64, 10},  {257, 100},
                          {33, 31}, {9, 1024}, {5, 1025}, {3, 4099}, {600000, 2}};
  uint32_t seed = 100;
  for (const Shape& s : shapes) {
    for (int levels : {2, 5, 1000}) {
      for (double nan_fraction : {0.0, 0.05}) {
        SCOPED_TRACE(std::to_string(s.n) + "x" + std::to_string(s.c) + ", levels " +
                     std::to_string(levels) + ", NaN fraction " + std::to_string(nan_fraction));
        const auto logits =
            tie_heavy_logits(static_cast<size_t>(s.n * s.c), ++seed, levels, nan_fraction);
        const auto labels = random_labels(s.n, s.c, ++seed);
        int64_t expected = 0;
        count_top1<float>(cpu, s.n, s.c, logits.data(), labels.data(), &expected);
        EXPECT_EQ(gpu_count(gpu(), s.n, s.c, logits, labels, 0), expected);
      }
    }
  }
}

TEST_F(CudaMetricsTest, TiesAndNanByHand) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> logits = {
      5.0f, 5.0f, 1.0f,  // label 0: tie, lowest index -> yes
      5.0f, 5.0f, 1.0f,  // label 1: tie with a lower index -> no
      nan,  1.0f, 0.0f,  // label 1: NaN elsewhere -> yes
      nan,  1.0f, 0.0f,  // label 0: NaN target -> no
  };
  const std::vector<int64_t> labels = {0, 1, 1, 0};
  EXPECT_EQ(gpu_count(gpu(), 4, 3, logits, labels, 0), 2);
}

TEST_F(CudaMetricsTest, AccumulatesOnTheDeviceAcrossCalls) {
  constexpr int64_t kN = 300, kC = 10;
  const auto logits = tie_heavy_logits(kN * kC, 5, 4, 0.02);
  const auto labels = random_labels(kN, kC, 6);
  int64_t expected = 1000;
  count_top1<float>(cpu, kN, kC, logits.data(), labels.data(), &expected);

  DeviceArray<float> d_logits(logits);
  DeviceArray<int64_t> d_labels(labels);
  DeviceArray<int64_t> d_correct(std::vector<int64_t>{1000});
  count_top1(gpu(), 100, kC, d_logits.data(), d_labels.data(), d_correct.data());
  count_top1(gpu(), 150, kC, d_logits.data() + 100 * kC, d_labels.data() + 100, d_correct.data());
  count_top1(gpu(), 50, kC, d_logits.data() + 250 * kC, d_labels.data() + 250, d_correct.data());
  EXPECT_EQ(d_correct.download()[0], expected);
}

TEST_F(CudaMetricsTest, LabelsOutsideTheClassesAreNotCounted) {
  constexpr int64_t kN = 200, kC = 7;
  const auto logits = tie_heavy_logits(kN * kC, 11, 3, 0.0);
  auto labels = random_labels(kN, kC, 12);
  // The CPU twin would throw; count the valid rows there and break the others for the device.
  int64_t expected = 0;
  count_top1<float>(cpu, kN, kC, logits.data(), labels.data(), &expected);
  for (int64_t i = 0; i < kN; i += 3) {
    int64_t one = 0;
    count_top1<float>(cpu, 1, kC, logits.data() + i * kC, labels.data() + i, &one);
    expected -= one;
    labels[static_cast<size_t>(i)] = (i % 2 == 0) ? -1 : kC;
  }
  EXPECT_EQ(gpu_count(gpu(), kN, kC, logits, labels, 0), expected);
}

TEST_F(CudaMetricsTest, EmptyInputsAddNothing) {
  DeviceArray<int64_t> d_correct(std::vector<int64_t>{17});
  count_top1(gpu(), 0, 10, nullptr, nullptr, d_correct.data());
  count_top1(gpu(), 4, 0, nullptr, nullptr, d_correct.data());
  EXPECT_EQ(d_correct.download()[0], 17);
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaMetricsTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
