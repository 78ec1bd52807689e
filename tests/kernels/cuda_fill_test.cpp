// CPU-vs-CUDA parity of the Philox fills: identical uniform bits, normals to float rounding.
#include "kernels/fill.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <string>
#include <vector>

#include "tests/kernels/cuda_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::bitwise_equal;
using test::CudaParityTest;
using test::DeviceArray;
using test::kParityF32Abs;
using test::kParityF32Rel;
using test::poisoned_output;

using CudaFillTest = CudaParityTest;

const int64_t kSizes[] = {1, 3, 4, 5, 4099};
const uint64_t kOffsets[] = {0, 12345};
constexpr uint64_t kSeed = 0x5EEDF00Dull;

// low + (high - low) * u can differ by one rounding between the twins (a fused multiply-add on
// one side, separate multiply and add on the other, depending on how the CPU build contracts):
// at most half an ulp of the product (high - low) * u <= 5 plus half an ulp of the result.
constexpr double kOneRoundingRel = 2.5e-7, kOneRoundingAbs = 5e-7;

TEST_F(CudaFillTest, UnitUniformIsBitIdenticalToCpu) {
  for (int64_t n : kSizes) {
    for (uint64_t offset : kOffsets) {
      for (size_t misalign : {0, 1}) {
        SCOPED_TRACE("n " + std::to_string(n) + " offset " + std::to_string(offset) + " misalign " +
                     std::to_string(misalign));
        // With low = 0 and high = 1 the result is u itself on both devices: this pins the
        // element -> (counter, lane) mapping and the uint32 -> float conversion bit for bit.
        std::vector<float> y(static_cast<size_t>(n));
        fill_uniform(cpu, n, kSeed, offset, 0.0f, 1.0f, y.data());
        DeviceArray<float> d_y = poisoned_output(y.size(), misalign);
        fill_uniform(gpu(), n, kSeed, offset, 0.0f, 1.0f, d_y.data());
        EXPECT_TRUE(bitwise_equal(d_y.download(), y));
      }
    }
  }
}

TEST_F(CudaFillTest, ScaledUniformMatchesCpu) {
  for (int64_t n : kSizes) {
    std::vector<float> y(static_cast<size_t>(n));
    fill_uniform(cpu, n, kSeed, 7, -2.0f, 3.0f, y.data());
    DeviceArray<float> d_y = poisoned_output(y.size());
    fill_uniform(gpu(), n, kSeed, 7, -2.0f, 3.0f, d_y.data());
    EXPECT_TRUE(all_close(d_y.download(), y, kOneRoundingRel, kOneRoundingAbs));
  }
}

TEST_F(CudaFillTest, NormalMatchesCpu) {
  for (int64_t n : kSizes) {
    for (uint64_t offset : kOffsets) {
      SCOPED_TRACE("n " + std::to_string(n) + " offset " + std::to_string(offset));
      std::vector<float> y(static_cast<size_t>(n));
      fill_normal(cpu, n, kSeed, offset, 0.5f, 2.0f, y.data());
      DeviceArray<float> d_y = poisoned_output(y.size());
      fill_normal(gpu(), n, kSeed, offset, 0.5f, 2.0f, d_y.data());
      EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs));
    }
  }
}

TEST_F(CudaFillTest, ConsecutiveFillsEqualOneLongFill) {
  // A fill of 8 then a fill of 5 at offset + philox_counters(8) continue the same stream.
  DeviceArray<float> whole = poisoned_output(13), first = poisoned_output(8),
                     second = poisoned_output(5);
  fill_uniform(gpu(), 13, kSeed, 100, 0.0f, 1.0f, whole.data());
  fill_uniform(gpu(), 8, kSeed, 100, 0.0f, 1.0f, first.data());
  fill_uniform(gpu(), 5, kSeed, 100 + philox_counters(8), 0.0f, 1.0f, second.data());
  std::vector<float> joined = first.download();
  const std::vector<float> tail = second.download();
  joined.insert(joined.end(), tail.begin(), tail.end());
  EXPECT_TRUE(bitwise_equal(joined, whole.download()));
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaFillTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
