// Tests of the Philox4x32-10 generator and the CPU random fills: known answers, element-to-counter
// mapping, determinism, offsets, thread independence and moments.
#include "kernels/fill.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;

const CpuContext kCpu{};

// Statistical checks allow this many standard errors; with fixed seeds the outcome is fixed, and
// five standard errors leave room for a correct generator on any seed.
constexpr double kStandardErrors = 5.0;
constexpr int64_t kMomentSamples = 1'000'000;

// ---- Philox known answers --------------------------------------------------------------------

struct KnownAnswer {
  uint32_t counter[4];
  uint32_t key[2];
  uint32_t expected[4];
};

// Random123's kat_vectors for philox4x32_10.
const KnownAnswer kKnownAnswers[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

uint64_t pack(uint32_t low, uint32_t high) {
  return (uint64_t{high} << 32) | low;
}

TEST(Philox, Random123KnownAnswers) {
  for (const KnownAnswer& kat : kKnownAnswers) {
    uint32_t out[4];
    philox4x32_10(pack(kat.key[0], kat.key[1]), pack(kat.counter[0], kat.counter[1]),
                  pack(kat.counter[2], kat.counter[3]), out);
    for (int lane = 0; lane < 4; ++lane) {
      EXPECT_EQ(out[lane], kat.expected[lane])
          << "counter " << std::hex << kat.counter[0] << " lane " << lane;
    }
  }
}

TEST(Philox, UnitMappingIsHalfOpenAtZero) {
  EXPECT_EQ(uint32_to_unit(0u), 1.0f / 16777216.0f);
  EXPECT_EQ(uint32_to_unit(0xffffffffu), 1.0f);
  EXPECT_GT(uint32_to_unit(0xffu), 0.0f);  // the low 8 bits are dropped, never rounded to 0
}

// ---- element-to-counter mapping --------------------------------------------------------------

// Element i of a fill is lane i % 4 of counter offset + i / 4 (stream 0), for every tail length.
TEST(Fill, UniformElementMapping) {
  const uint64_t seed = 0x1234'5678'9abc'def0, offset = 0xffff'ffff'ffff'fffd;  // wraps past 2^64
  for (const int64_t n : {1, 2, 3, 4, 5, 37}) {
    std::vector<float> y(n);
    std::vector<double> y64(n);
    fill_uniform<float>(kCpu, n, seed, offset, 0.0f, 1.0f, y.data());
    fill_uniform<double>(kCpu, n, seed, offset, 0.0, 1.0, y64.data());
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits[4];
      philox4x32_10(seed, offset + static_cast<uint64_t>(i / 4), 0, bits);
      EXPECT_EQ(y[i], uint32_to_unit(bits[i % 4])) << "n=" << n << " i=" << i;
      EXPECT_EQ(y64[i], static_cast<double>(uint32_to_unit(bits[i % 4]))) << "n=" << n;
    }
  }
}

// Lanes 0 and 2 are the cosine branch of Box-Muller on pairs (0, 1) and (2, 3); 1 and 3 the sine.
TEST(Fill, NormalElementMapping) {
  const uint64_t seed = 99, offset = 1000;
  const int64_t n = 23;
  const double mean = -1.5, stddev = 2.5;
  std::vector<float> y(n);
  std::vector<double> y64(n);
  fill_normal<float>(kCpu, n, seed, offset, float(mean), float(stddev), y.data());
  fill_normal<double>(kCpu, n, seed, offset, mean, stddev, y64.data());
  std::vector<double> expected(n);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits[4];
    philox4x32_10(seed, offset + static_cast<uint64_t>(i / 4), 0, bits);
    const int pair = (i % 4) / 2 * 2;
    const double u0 = uint32_to_unit(bits[pair]), u1 = uint32_to_unit(bits[pair + 1]);
    const double radius = std::sqrt(-2.0 * std::log(u0)), theta = 2.0 * std::numbers::pi * u1;
    const double z = i % 2 == 0 ? radius * std::cos(theta) : radius * std::sin(theta);
    expected[i] = mean + stddev * z;
  }
  EXPECT_TRUE(all_close(y64, expected, test::kReferenceF64Rel, test::kReferenceF64Rel));
  // float twin: logf/cosf/sinf of arguments up to 2 pi, scaled by a radius up to 5.77 and stddev.
  EXPECT_TRUE(all_close(y, expected, test::kReferenceF32Rel, test::kReferenceF32Abs));
}

// ---- determinism and offsets -----------------------------------------------------------------

TEST(Fill, SameSeedAndOffsetGiveIdenticalValues) {
  const int64_t n = 4099;
  std::vector<float> a(n), b(n), other_seed(n), other_offset(n);
  fill_normal<float>(kCpu, n, 7, 11, 0.0f, 1.0f, a.data());
  fill_normal<float>(kCpu, n, 7, 11, 0.0f, 1.0f, b.data());
  fill_normal<float>(kCpu, n, 8, 11, 0.0f, 1.0f, other_seed.data());
  fill_normal<float>(kCpu, n, 7, 12, 0.0f, 1.0f, other_offset.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other_seed);
  EXPECT_NE(a, other_offset);
}

// Shifting the offset by k counters equals the tail of a longer fill from 4k elements later.
template <typename T>
void check_offset_shift(bool normal) {
  const int64_t n = 1001;
  const uint64_t seed = 2024, offset = 5;
  for (const int64_t k : {1, 7, 250}) {
    std::vector<T> shifted(n), longer(n + 4 * k);
    if (normal) {
      fill_normal<T>(kCpu, n, seed, offset + k, T(1), T(2), shifted.data());
      fill_normal<T>(kCpu, n + 4 * k, seed, offset, T(1), T(2), longer.data());
    } else {
      fill_uniform<T>(kCpu, n, seed, offset + k, T(-1), T(1), shifted.data());
      fill_uniform<T>(kCpu, n + 4 * k, seed, offset, T(-1), T(1), longer.data());
    }
    EXPECT_EQ(shifted, std::vector<T>(longer.begin() + 4 * k, longer.end()))
        << "k=" << k << " normal=" << normal;
  }
}

TEST(Fill, OffsetShiftMatchesLongerFill) {
  check_offset_shift<float>(false);
  check_offset_shift<float>(true);
  check_offset_shift<double>(false);
  check_offset_shift<double>(true);
}

TEST(Fill, CountersConsumed) {
  EXPECT_EQ(philox_counters(0), 0u);
  EXPECT_EQ(philox_counters(1), 1u);
  EXPECT_EQ(philox_counters(4), 1u);
  EXPECT_EQ(philox_counters(5), 2u);
  EXPECT_EQ(philox_counters(1001), 251u);
}

// Large enough to take the parallel path: one thread and several give identical bits.
TEST(Fill, ThreadCountDoesNotChangeResult) {
  const int64_t n = (1 << 16) + 3;
  std::vector<float> u1(n), u3(n), n1(n), n3(n);
  std::vector<double> d1(n), d3(n);
  fill_uniform<float>(CpuContext{1}, n, 3, 4, -1.0f, 1.0f, u1.data());
  fill_uniform<float>(CpuContext{3}, n, 3, 4, -1.0f, 1.0f, u3.data());
  fill_normal<float>(CpuContext{1}, n, 3, 4, 0.0f, 1.0f, n1.data());
  fill_normal<float>(CpuContext{3}, n, 3, 4, 0.0f, 1.0f, n3.data());
  fill_normal<double>(CpuContext{1}, n, 3, 4, 0.0, 1.0, d1.data());
  fill_normal<double>(CpuContext{3}, n, 3, 4, 0.0, 1.0, d3.data());
  EXPECT_EQ(u1, u3);
  EXPECT_EQ(n1, n3);
  EXPECT_EQ(d1, d3);
}

// The float and double twins draw the same uniforms, so they agree to float precision.
TEST(Fill, FloatAndDoubleTwinsAgree) {
  const int64_t n = 10007;
  std::vector<float> u(n), z(n);
  std::vector<double> u64(n), z64(n);
  fill_uniform<float>(kCpu, n, 42, 0, -3.0f, 5.0f, u.data());
  fill_uniform<double>(kCpu, n, 42, 0, -3.0, 5.0, u64.data());
  fill_normal<float>(kCpu, n, 42, 0, 0.5f, 2.0f, z.data());
  fill_normal<double>(kCpu, n, 42, 0, 0.5, 2.0, z64.data());
  EXPECT_TRUE(all_close(u, u64, test::kReferenceF32Rel, test::kReferenceF32Abs));
  EXPECT_TRUE(all_close(z, z64, test::kReferenceF32Rel, test::kReferenceF32Abs));
}

// ---- distribution ----------------------------------------------------------------------------

struct Moments {
  double mean, variance;
};

template <typename T>
Moments moments(const std::vector<T>& v, size_t start = 0, size_t stride = 1) {
  double sum = 0, sum_sq = 0;
  size_t count = 0;
  for (size_t i = start; i < v.size(); i += stride, ++count) sum += v[i];
  const double mean = sum / count;
  for (size_t i = start; i < v.size(); i += stride) sum_sq += (v[i] - mean) * (v[i] - mean);
  return {mean, sum_sq / (count - 1)};
}

template <typename T>
void check_uniform_moments() {
  const double low = -2.0, high = 3.0, width = high - low;
  std::vector<T> y(kMomentSamples);
  fill_uniform<T>(kCpu, kMomentSamples, 123, 0, T(low), T(high), y.data());
  for (const T v : y) ASSERT_TRUE(v > T(low) && v <= T(high)) << v;
  const Moments m = moments(y);
  const double n = kMomentSamples;
  // Var(x) = w^2 / 12; Var((x - mu)^2) = mu4 - sigma^4 = w^4 (1/80 - 1/144).
  const double variance = width * width / 12;
  const double mean_error = std::sqrt(variance / n);
  const double variance_error = width * width * std::sqrt(1.0 / 80 - 1.0 / 144) / std::sqrt(n);
  EXPECT_NEAR(m.mean, (low + high) / 2, kStandardErrors * mean_error);
  EXPECT_NEAR(m.variance, variance, kStandardErrors * variance_error);
}

TEST(Fill, UniformMoments) {
  check_uniform_moments<float>();
  check_uniform_moments<double>();
}

template <typename T>
void check_normal_moments() {
  const double mean = 2.0, stddev = 3.0;
  std::vector<T> y(kMomentSamples);
  fill_normal<T>(kCpu, kMomentSamples, 321, 17, T(mean), T(stddev), y.data());
  for (const T v : y) ASSERT_TRUE(std::isfinite(v));
  const double n = kMomentSamples;
  const Moments m = moments(y);
  // Var(sample variance) ~ 2 sigma^4 / n for a normal.
  EXPECT_NEAR(m.mean, mean, kStandardErrors * stddev / std::sqrt(n));
  EXPECT_NEAR(m.variance, stddev * stddev,
              kStandardErrors * std::sqrt(2.0) * stddev * stddev / std::sqrt(n));
  // Each lane alone (cosine lanes 0 and 2, sine lanes 1 and 3) is N(mean, stddev^2).
  for (size_t lane = 0; lane < 4; ++lane) {
    const Moments lm = moments(y, lane, 4);
    const double lane_n = n / 4;
    EXPECT_NEAR(lm.mean, mean, kStandardErrors * stddev / std::sqrt(lane_n)) << "lane " << lane;
    EXPECT_NEAR(lm.variance, stddev * stddev,
                kStandardErrors * std::sqrt(2.0) * stddev * stddev / std::sqrt(lane_n))
        << "lane " << lane;
  }
  // Standardised: the fourth moment of N(0, 1) is 3 (Var(z^4) = 105 - 9), and the two halves of a
  // Box-Muller pair are independent, so E[z0 z1] = 0 with Var(z0 z1) = 1.
  double fourth = 0, cross = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double z = (y[i] - mean) / stddev;
    fourth += z * z * z * z;
    if (i % 2 == 0) cross += z * ((y[i + 1] - mean) / stddev);
  }
  EXPECT_NEAR(fourth / n, 3.0, kStandardErrors * std::sqrt(96.0 / n));
  EXPECT_NEAR(cross / (n / 2), 0.0, kStandardErrors * std::sqrt(1.0 / (n / 2)));
}

TEST(Fill, NormalMoments) {
  check_normal_moments<float>();
  check_normal_moments<double>();
}

}  // namespace
}  // namespace retort::kernels
