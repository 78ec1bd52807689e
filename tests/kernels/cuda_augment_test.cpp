// CPU-vs-CUDA parity of the augmentation kernels: gather and mix, bit-identical to the CPU twin.
#include "kernels/augment.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/kernels/cuda_test_util.h"

namespace retort::kernels {
namespace {

using test::bitwise_equal;
using test::CudaParityTest;
using test::DeviceArray;
using test::poisoned_output;

using CudaAugmentTest = CudaParityTest;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(gen() & 0xFF);
  return v;
}

struct GatherCase {
  int64_t batch, source_count, channels, height, width;
  int pad;
  float flip_prob;
};

std::string describe(const GatherCase& g) {
  return "batch " + std::to_string(g.batch) + ", " + std::to_string(g.channels) + "x" +
         std::to_string(g.height) + "x" + std::to_string(g.width) + ", pad " +
         std::to_string(g.pad) + ", flip " + std::to_string(g.flip_prob);
}

// Runs both twins on the same images, indices, seed and offset and compares the bits.
void check_gather(const CudaContext& gpu, const GatherCase& g, uint64_t seed, uint64_t offset) {
  SCOPED_TRACE(describe(g) + ", seed " + std::to_string(seed) + ", offset " +
               std::to_string(offset));
  const AugmentShape shape{g.batch, g.source_count, g.channels, g.height, g.width};
  AugmentParams params;
  params.pad = g.pad;
  params.flip_prob = g.flip_prob;
  // CIFAR-100's statistics (and made-up ones for a fourth channel): values that do not divide
  // evenly, so any difference in rounding shows.
  const float mean[4] = {0.5071f, 0.4865f, 0.4409f, 0.3f};
  const float stdev[4] = {0.2673f, 0.2564f, 0.2762f, 0.7f};
  for (int c = 0; c < kMaxAugmentChannels; ++c) params.mean[c] = mean[c], params.std[c] = stdev[c];
  const size_t numel = static_cast<size_t>(shape.image_numel());
  const auto images =
      random_bytes(static_cast<size_t>(g.source_count) * numel, static_cast<uint32_t>(seed));
  std::vector<int64_t> indices(static_cast<size_t>(g.batch));
  for (int64_t b = 0; b < g.batch; ++b) indices[b] = (b * 7 + 3) % g.source_count;  // repeats

  std::vector<float> expected(static_cast<size_t>(g.batch) * numel);
  augment_gather<float>(CpuContext{}, shape, params, seed, offset, images.data(), indices.data(),
                        expected.data());
  DeviceArray<uint8_t> d_images(images);
  DeviceArray<int64_t> d_indices(indices);
  DeviceArray<float> d_y = poisoned_output(expected.size());
  augment_gather(gpu, shape, params, seed, offset, d_images.data(), d_indices.data(), d_y.data());
  EXPECT_TRUE(bitwise_equal(d_y.download(), expected));
}

TEST_F(CudaAugmentTest, GatherIsBitIdenticalToCpu) {
  struct Size {
    int64_t height, width;
  };
  const Size sizes[] = {{28, 28}, {5, 7}, {1, 1}};
  for (int64_t channels : {1, 3}) {
    for (int pad : {0, 4}) {
      for (float flip_prob : {0.0f, 0.5f, 1.0f}) {
        for (const Size& size : sizes) {
          for (int64_t batch : {1, 13}) {
            check_gather(gpu(), {batch, 9, channels, size.height, size.width, pad, flip_prob}, 42,
                         7);
          }
        }
      }
    }
  }
}

TEST_F(CudaAugmentTest, GatherEdgeShapesAndCountersMatchCpu) {
  const GatherCase cases[] = {
      {4, 3, 4, 3, 5, 1, 0.5f},        // RGBA, odd sizes
      {5, 4, 2, 5, 7, 9, 0.5f},        // padding wider than the image: some crops are all zero
      {3, 3, 3, 32, 32, 4, 0.5f},      // CIFAR-sized
      {2, 2, 3, 37, 300, 2, 0.5f},     // an image spanning many blocks
      {3000, 50, 1, 28, 28, 4, 0.5f},  // more images than blocks: blocks loop over images
  };
  for (const GatherCase& g : cases) {
    check_gather(gpu(), g, 1234, 0);
    check_gather(gpu(), g, 99, (uint64_t{5} << 32) + 17);  // counters above 2^32
  }
}

TEST_F(CudaAugmentTest, GatherWithNothingToDoIsANoOp) {
  DeviceArray<float> d_y = poisoned_output(4);
  augment_gather(gpu(), AugmentShape{0, 1, 1, 2, 2}, AugmentParams{}, 0, 0, nullptr, nullptr,
                 d_y.data());
  augment_gather(gpu(), AugmentShape{2, 1, 1, 0, 2}, AugmentParams{}, 0, 0, nullptr, nullptr,
                 d_y.data());
  for (float v : d_y.download()) EXPECT_TRUE(std::isnan(v));
  AugmentParams bad;
  bad.pad = -1;
  EXPECT_THROW(
      augment_gather(gpu(), AugmentShape{1, 1, 1, 2, 2}, bad, 0, 0, nullptr, nullptr, d_y.data()),
      std::invalid_argument);
  EXPECT_THROW(augment_gather(gpu(), AugmentShape{1, 1, 5, 2, 2}, AugmentParams{}, 0, 0, nullptr,
                              nullptr, d_y.data()),
               std::invalid_argument);
}

// Mixes the same pairs on both devices and compares every byte, untouched images included.
void check_mix(const CudaContext& gpu, int64_t count, int64_t numel,
               const std::vector<int64_t>& dst, const std::vector<int64_t>& src,
               const std::vector<float>& w_dst, const std::vector<float>& w_src, uint32_t seed) {
  const int64_t pairs = static_cast<int64_t>(dst.size());
  auto expected = random_bytes(static_cast<size_t>(count * numel), seed);
  DeviceArray<uint8_t> d_images(expected);
  mix_images(CpuContext{}, pairs, numel, dst.data(), src.data(), w_dst.data(), w_src.data(),
             expected.data());
  DeviceArray<int64_t> d_dst(dst), d_src(src);
  DeviceArray<float> d_w_dst(w_dst), d_w_src(w_src);
  mix_images(gpu, pairs, numel, d_dst.data(), d_src.data(), d_w_dst.data(), d_w_src.data(),
             d_images.data());
  EXPECT_EQ(d_images.download(), expected);
}

TEST_F(CudaAugmentTest, MixIsBitIdenticalToCpu) {
  constexpr int64_t kCount = 300, kPairs = 120;
  for (int64_t numel : {int64_t{1}, int64_t{3 * 7 * 5}, int64_t{28 * 28}, int64_t{3 * 32 * 32}}) {
    SCOPED_TRACE("image_numel " + std::to_string(numel));
    std::mt19937 gen(static_cast<uint32_t>(numel));
    std::uniform_real_distribution<float> weight(0.0f, 1.0f);
    std::vector<int64_t> dst(kPairs), src(kPairs);
    std::vector<float> w_dst(kPairs), w_src(kPairs);
    for (int64_t j = 0; j < kPairs; ++j) {
      dst[j] = (j * 37 + 5) % 150;  // distinct, in [0, 150)
      src[j] = 150 + (j * 13) % 150;
      switch (j % 4) {
        case 0:  // KCD's convex ramp
          w_dst[j] = 0.3f * ((static_cast<float>(kPairs) - static_cast<float>(j)) /
                             static_cast<float>(kPairs)) +
                     0.7f;
          w_src[j] = 1.0f - w_dst[j];
          break;
        case 1:  // the paper's additive summary: clamps at 255
          w_dst[j] = 1.0f;
          w_src[j] = weight(gen);
          break;
        case 2:  // weights above 1
          w_dst[j] = 1.0f + 2.0f * weight(gen);
          w_src[j] = 0.5f + weight(gen);
          break;
        default:  // a negative weight: clamps at 0
          w_dst[j] = weight(gen);
          w_src[j] = -1.5f * weight(gen);
          break;
      }
    }
    check_mix(gpu(), kCount, numel, dst, src, w_dst, w_src, 21);
  }
}

TEST_F(CudaAugmentTest, MixWithMorePairsThanGridRowsMatchesCpu) {
  // 70000 pairs of 3-byte images: more pairs than gridDim.y allows, so blocks loop over pairs.
  constexpr int64_t kPairs = 70000, kNumel = 3;
  std::vector<int64_t> dst(kPairs), src(kPairs);
  std::vector<float> w_dst(kPairs), w_src(kPairs);
  for (int64_t j = 0; j < kPairs; ++j) {
    dst[j] = 2 * j;
    src[j] = 2 * ((j * 5) % kPairs) + 1;
    w_dst[j] = 0.6f + 1e-5f * static_cast<float>(j);
    w_src[j] = 1.0f - w_dst[j];
  }
  check_mix(gpu(), 2 * kPairs, kNumel, dst, src, w_dst, w_src, 4);
}

TEST_F(CudaAugmentTest, MixWithNoPairsIsANoOpAndNegativeSizesThrow) {
  const std::vector<uint8_t> bytes = {1, 2, 3};
  DeviceArray<uint8_t> d_images(bytes);
  mix_images(gpu(), 0, 3, nullptr, nullptr, nullptr, nullptr, d_images.data());
  EXPECT_EQ(d_images.download(), bytes);
  EXPECT_THROW(mix_images(gpu(), -1, 3, nullptr, nullptr, nullptr, nullptr, d_images.data()),
               std::invalid_argument);
  EXPECT_THROW(mix_images(gpu(), 1, -3, nullptr, nullptr, nullptr, nullptr, d_images.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaAugmentTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
