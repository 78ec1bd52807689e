// Tests of the CPU augmentation kernels: gather against a naive crop-flip-normalise reference; mix.
#include "kernels/augment.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

namespace retort::kernels {
namespace {

const CpuContext kCpu{};

// Statistical checks allow this many standard errors (fixed seeds, so the outcome is fixed).
constexpr double kStandardErrors = 5.0;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(gen() & 0xFF);
  return v;
}

// The mapping documented in kernels/augment.h, written out again from philox4x32_10 so that the
// test does not trust augment_choice.
struct Choice {
  int dy, dx;
  bool flip;
};
Choice reference_choice(uint64_t seed, uint64_t counter, int pad, float flip_prob) {
  uint32_t r[4];
  philox4x32_10(seed, counter, /*counter_hi=*/1, r);
  const uint32_t span = 2 * static_cast<uint32_t>(pad) + 1;
  const float u = (static_cast<float>(r[2] >> 8) + 1.0f) / 16777216.0f;
  return {static_cast<int>(r[0] % span), static_cast<int>(r[1] % span), u <= flip_prob};
}

// Pads with zeros, crops at (dy, dx), flips the crop, scales and normalises, one step at a time.
template <typename T>
std::vector<T> reference_augment(const AugmentShape& s, const AugmentParams& p, uint64_t seed,
                                 uint64_t offset, const std::vector<uint8_t>& images,
                                 const std::vector<int64_t>& indices) {
  const int64_t C = s.channels, H = s.height, W = s.width, P = p.pad;
  const int64_t PH = H + 2 * P, PW = W + 2 * P;
  std::vector<T> out;
  for (int64_t b = 0; b < s.batch; ++b) {
    const Choice ch = reference_choice(seed, offset + b, p.pad, p.flip_prob);
    const uint8_t* src = images.data() + indices[b] * C * H * W;
    std::vector<uint8_t> padded(C * PH * PW, 0);  // (C, H + 2P, W + 2P)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
          padded[(c * PH + y + P) * PW + x + P] = src[(c * H + y) * W + x];
    std::vector<uint8_t> crop(C * H * W);  // (C, H, W)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
          crop[(c * H + y) * W + x] = padded[(c * PH + y + ch.dy) * PW + x + ch.dx];
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          const uint8_t v = crop[(c * H + y) * W + (ch.flip ? W - 1 - x : x)];
          out.push_back((static_cast<T>(v) / T(255) - static_cast<T>(p.mean[c])) /
                        static_cast<T>(p.std[c]));
        }
  }
  return out;
}

struct Case {
  int64_t batch, source_count, channels, height, width;
  int pad;
  float flip_prob;
};

const Case kCases[] = {
    {16, 40, 1, 28, 28, 4, 0.5f},  // Fashion-MNIST-like
    {12, 30, 3, 32, 32, 4, 0.5f},  // CIFAR-like
    {9, 5, 3, 5, 7, 2, 0.5f},      // odd sizes, repeated indices
    {7, 4, 2, 5, 7, 9, 0.5f},      // padding wider than the image: some crops are all zero
    {5, 6, 4, 3, 1, 1, 1.0f},      // one-pixel-wide RGBA, always flipped
    {6, 6, 1, 4, 4, 0, 0.5f},      // flip only
    {6, 6, 3, 4, 4, 3, 0.0f},      // crop only
};

template <typename T>
void check_against_reference(const Case& cs, uint64_t seed, uint64_t offset) {
  const AugmentShape s{cs.batch, cs.source_count, cs.channels, cs.height, cs.width};
  AugmentParams p;
  p.pad = cs.pad;
  p.flip_prob = cs.flip_prob;
  for (int c = 0; c < cs.channels; ++c) {
    p.mean[c] = 0.3f + 0.1f * static_cast<float>(c);
    p.std[c] = 0.2f + 0.05f * static_cast<float>(c);
  }
  const auto images = random_bytes(cs.source_count * s.image_numel(), 7 + cs.channels);
  std::vector<int64_t> indices(cs.batch);
  for (int64_t b = 0; b < cs.batch; ++b) indices[b] = (b * 7 + 3) % cs.source_count;
  std::vector<T> y(cs.batch * s.image_numel(), T(-99));
  augment_gather<T>(kCpu, s, p, seed, offset, images.data(), indices.data(), y.data());
  const auto expected = reference_augment<T>(s, p, seed, offset, images, indices);
  ASSERT_EQ(y.size(), expected.size());
  for (size_t i = 0; i < y.size(); ++i) {
    // Same expression in the same precision: exact equality is the contract the CUDA twin keeps
    // for choices and (up to rounding) for values.
    ASSERT_EQ(y[i], expected[i]) << "element " << i << " (C=" << cs.channels << ", " << cs.height
                                 << "x" << cs.width << ", pad " << cs.pad << ")";
  }
}

TEST(AugmentGather, MatchesReferenceFloat) {
  for (const Case& cs : kCases) check_against_reference<float>(cs, 1234, 0);
  for (const Case& cs : kCases) check_against_reference<float>(cs, 99, (uint64_t{5} << 32) + 17);
}

TEST(AugmentGather, MatchesReferenceDouble) {
  for (const Case& cs : kCases) check_against_reference<double>(cs, 42, 1000);
}

TEST(AugmentGather, ChoiceHelperMatchesDocumentedMapping) {
  for (int pad : {0, 1, 4, 9}) {
    for (float prob : {0.0f, 0.25f, 0.5f, 1.0f}) {
      for (uint64_t counter = 0; counter < 200; ++counter) {
        const AugmentChoice a = augment_choice(77, counter, pad, prob);
        const Choice b = reference_choice(77, counter, pad, prob);
        ASSERT_EQ(a.dy, b.dy);
        ASSERT_EQ(a.dx, b.dx);
        ASSERT_EQ(a.flip, b.flip);
      }
    }
  }
}

TEST(AugmentGather, NoAugmentationIsPlainNormalisation) {
  const AugmentShape s{4, 4, 3, 6, 5};
  AugmentParams p;  // pad 0, flip 0
  const float mean[3] = {0.5071f, 0.4867f, 0.4408f}, stdev[3] = {0.2675f, 0.2565f, 0.2761f};
  for (int c = 0; c < 3; ++c) p.mean[c] = mean[c], p.std[c] = stdev[c];
  const auto images = random_bytes(4 * s.image_numel(), 3);
  const std::vector<int64_t> indices = {3, 0, 2, 1};
  for (uint64_t seed : {0ull, 1ull, 987654321ull}) {
    std::vector<float> y(4 * s.image_numel());
    augment_gather<float>(kCpu, s, p, seed, seed * 13, images.data(), indices.data(), y.data());
    for (int64_t b = 0; b < 4; ++b) {
      for (int64_t i = 0; i < s.image_numel(); ++i) {
        const int64_t c = i / (6 * 5);
        const float v = images[indices[b] * s.image_numel() + i];
        ASSERT_EQ(y[b * s.image_numel() + i], (v / 255.0f - mean[c]) / stdev[c]);
      }
    }
  }
}

TEST(AugmentGather, DefaultParamsScaleToUnitInterval) {
  const AugmentShape s{1, 1, 1, 1, 256};
  std::vector<uint8_t> image(256);
  for (int v = 0; v < 256; ++v) image[v] = static_cast<uint8_t>(v);
  const int64_t index = 0;
  std::vector<float> y(256);
  augment_gather<float>(kCpu, s, AugmentParams{}, 0, 0, image.data(), &index, y.data());
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[255], 1.0f);
  EXPECT_EQ(y[51], 0.2f);
}

TEST(AugmentGather, SameResultOnAnyThreadCount) {
  const AugmentShape s{64, 64, 3, 32, 32};
  AugmentParams p;
  p.pad = 4;
  p.flip_prob = 0.5f;
  const auto images = random_bytes(64 * s.image_numel(), 11);
  std::vector<int64_t> indices(64);
  for (int64_t b = 0; b < 64; ++b) indices[b] = 63 - b;
  std::vector<float> one(64 * s.image_numel()), many(64 * s.image_numel());
  augment_gather<float>(CpuContext{1}, s, p, 5, 0, images.data(), indices.data(), one.data());
  augment_gather<float>(CpuContext{4}, s, p, 5, 0, images.data(), indices.data(), many.data());
  EXPECT_EQ(one, many);
}

TEST(AugmentGather, ImageBUsesCounterOffsetPlusB) {
  // A batch of 6 at offset 10 equals two batches of 3 at offsets 10 and 13.
  const AugmentShape s6{6, 6, 1, 8, 8}, s3{3, 6, 1, 8, 8};
  AugmentParams p;
  p.pad = 3;
  p.flip_prob = 0.5f;
  const auto images = random_bytes(6 * 64, 2);
  const std::vector<int64_t> indices = {0, 1, 2, 3, 4, 5};
  std::vector<float> whole(6 * 64), split(6 * 64);
  augment_gather<float>(kCpu, s6, p, 8, 10, images.data(), indices.data(), whole.data());
  augment_gather<float>(kCpu, s3, p, 8, 10, images.data(), indices.data(), split.data());
  augment_gather<float>(kCpu, s3, p, 8, 13, images.data(), indices.data() + 3,
                        split.data() + 3 * 64);
  EXPECT_EQ(whole, split);
  std::vector<float> other(6 * 64);
  augment_gather<float>(kCpu, s6, p, 8, 11, images.data(), indices.data(), other.data());
  EXPECT_NE(whole, other);
}

TEST(AugmentGather, ChoicesAreUniform) {
  constexpr int kPad = 4, kSpan = 2 * kPad + 1;
  constexpr int64_t kDraws = 90000;
  std::vector<int64_t> dy_count(kSpan, 0), dx_count(kSpan, 0);
  int64_t flips = 0;
  for (int64_t i = 0; i < kDraws; ++i) {
    const AugmentChoice ch = augment_choice(2024, static_cast<uint64_t>(i), kPad, 0.5f);
    ++dy_count[ch.dy];
    ++dx_count[ch.dx];
    flips += ch.flip;
  }
  const double half_se = std::sqrt(kDraws * 0.25);
  EXPECT_NEAR(static_cast<double>(flips), kDraws * 0.5, kStandardErrors * half_se);
  const double p = 1.0 / kSpan, se = std::sqrt(kDraws * p * (1 - p));
  for (int k = 0; k < kSpan; ++k) {
    EXPECT_NEAR(static_cast<double>(dy_count[k]), kDraws * p, kStandardErrors * se) << "dy " << k;
    EXPECT_NEAR(static_cast<double>(dx_count[k]), kDraws * p, kStandardErrors * se) << "dx " << k;
  }
}

TEST(AugmentGather, FlipProbabilityEdges) {
  for (uint64_t i = 0; i < 1000; ++i) {
    ASSERT_FALSE(augment_choice(3, i, 2, 0.0f).flip);
    ASSERT_TRUE(augment_choice(3, i, 2, 1.0f).flip);
  }
}

TEST(AugmentGather, RejectsBadArguments) {
  const std::vector<uint8_t> images(5 * 4, 0);
  const int64_t index = 0;
  std::vector<float> y(5 * 4);
  AugmentParams p;
  EXPECT_THROW(augment_gather<float>(kCpu, AugmentShape{1, 1, 5, 2, 2}, p, 0, 0, images.data(),
                                     &index, y.data()),
               std::invalid_argument);
  p.pad = -1;
  EXPECT_THROW(augment_gather<float>(kCpu, AugmentShape{1, 1, 1, 2, 2}, p, 0, 0, images.data(),
                                     &index, y.data()),
               std::invalid_argument);
}

// --- mix_images ---------------------------------------------------------------------------------

// One mixed byte the slow way: float32 products and sum kept apart by volatile (no FMA), clamped,
// truncated toward zero.
uint8_t reference_mix(uint8_t a, uint8_t b, float wa, float wb) {
  volatile float pa = wa * static_cast<float>(a);
  volatile float pb = wb * static_cast<float>(b);
  volatile float sum = pa + pb;
  return static_cast<uint8_t>(std::min(std::max(static_cast<float>(sum), 0.0f), 255.0f));
}

TEST(MixImages, HandValues) {
  // Five images of 4 bytes: image 0 gets a convex mix with image 1, image 2 an additive one with
  // image 3, image 4 is in no pair.
  std::vector<uint8_t> images = {200, 1, 255, 10,   // image 0
                                 100, 2, 255, 11,   // image 1
                                 200, 0, 255, 100,  // image 2
                                 200, 9, 100, 50,   // image 3
                                 7,   7, 7,   7};   // image 4 (untouched)
  const std::vector<int64_t> dst = {0, 2}, src = {1, 3};
  const std::vector<float> w_dst = {0.5f, 1.0f}, w_src = {0.5f, 0.3f};
  mix_images(kCpu, 2, 4, dst.data(), src.data(), w_dst.data(), w_src.data(), images.data());
  // Convex half-half: 150, 1.5 truncates to 1, 255 stays 255, 10.5 truncates to 10.
  EXPECT_EQ((std::vector<uint8_t>(images.begin(), images.begin() + 4)),
            (std::vector<uint8_t>{150, 1, 255, 10}));
  // Additive x + 0.3 y: 200 + 60 clamps to 255; 0 + 2.7 truncates to 2; 255 + 30 clamps; 100 + 15.
  EXPECT_EQ((std::vector<uint8_t>(images.begin() + 8, images.begin() + 12)),
            (std::vector<uint8_t>{255, 2, 255, 115}));
  // Sources and images in no pair are untouched.
  EXPECT_EQ((std::vector<uint8_t>(images.begin() + 4, images.begin() + 8)),
            (std::vector<uint8_t>{100, 2, 255, 11}));
  EXPECT_EQ((std::vector<uint8_t>(images.begin() + 12, images.end())),
            (std::vector<uint8_t>{200, 9, 100, 50, 7, 7, 7, 7}));
}

TEST(MixImages, NegativeResultsClampToZero) {
  std::vector<uint8_t> images = {100, 20, 50, 60};  // two images of 2 bytes
  const int64_t dst = 0, src = 1;
  const float w_dst = 1.0f, w_src = -1.0f;
  mix_images(kCpu, 1, 2, &dst, &src, &w_dst, &w_src, images.data());
  EXPECT_EQ(images, (std::vector<uint8_t>{50, 0, 50, 60}));
}

TEST(MixImages, MatchesFloat32ReferenceAndKcdWeights) {
  // KCD's convex ramp over a tail of 97 pairs: w_dst = 0.3 (L - j) / L + 0.7 in float32.
  constexpr int64_t kCount = 200, kNumel = 3 * 7 * 5, kPairs = 97;
  auto images = random_bytes(kCount * kNumel, 21);
  const auto original = images;
  std::vector<int64_t> dst(kPairs), src(kPairs);
  std::vector<float> w_dst(kPairs), w_src(kPairs);
  for (int64_t j = 0; j < kPairs; ++j) {
    dst[j] = (j * 37 + 5) % 100;  // distinct, in [0, 100)
    src[j] = 100 + (j * 13) % 100;
    w_dst[j] =
        0.3f * ((static_cast<float>(kPairs) - static_cast<float>(j)) / static_cast<float>(kPairs)) +
        0.7f;
    w_src[j] = 1.0f - w_dst[j];
  }
  mix_images(kCpu, kPairs, kNumel, dst.data(), src.data(), w_dst.data(), w_src.data(),
             images.data());
  std::vector<bool> is_dst(kCount, false);
  for (int64_t j = 0; j < kPairs; ++j) {
    is_dst[dst[j]] = true;
    for (int64_t k = 0; k < kNumel; ++k) {
      ASSERT_EQ(images[dst[j] * kNumel + k],
                reference_mix(original[dst[j] * kNumel + k], original[src[j] * kNumel + k],
                              w_dst[j], w_src[j]))
          << "pair " << j << " byte " << k;
    }
  }
  for (int64_t i = 0; i < kCount; ++i) {
    if (is_dst[i]) continue;
    for (int64_t k = 0; k < kNumel; ++k)
      ASSERT_EQ(images[i * kNumel + k], original[i * kNumel + k]);
  }
  // The first pair has weight exactly 1 on its own image: unchanged.
  EXPECT_EQ(w_dst[0], 1.0f);
  for (int64_t k = 0; k < kNumel; ++k) {
    EXPECT_EQ(images[dst[0] * kNumel + k], original[dst[0] * kNumel + k]);
  }
}

TEST(MixImages, SameResultOnAnyThreadCountAndOrder) {
  constexpr int64_t kCount = 512, kNumel = 32 * 32 * 3, kPairs = 256;
  const auto images = random_bytes(kCount * kNumel, 4);
  std::vector<int64_t> dst(kPairs), src(kPairs);
  std::vector<float> w_dst(kPairs), w_src(kPairs);
  for (int64_t j = 0; j < kPairs; ++j) {
    dst[j] = 2 * j;
    src[j] = 2 * ((j * 5) % kPairs) + 1;
    w_dst[j] = 0.6f + 0.001f * static_cast<float>(j);
    w_src[j] = 1.0f - w_dst[j];
  }
  auto one = images, many = images, reversed = images;
  mix_images(CpuContext{1}, kPairs, kNumel, dst.data(), src.data(), w_dst.data(), w_src.data(),
             one.data());
  mix_images(CpuContext{4}, kPairs, kNumel, dst.data(), src.data(), w_dst.data(), w_src.data(),
             many.data());
  std::reverse(dst.begin(), dst.end());
  std::reverse(src.begin(), src.end());
  std::reverse(w_dst.begin(), w_dst.end());
  std::reverse(w_src.begin(), w_src.end());
  mix_images(kCpu, kPairs, kNumel, dst.data(), src.data(), w_dst.data(), w_src.data(),
             reversed.data());
  EXPECT_EQ(one, many);
  EXPECT_EQ(one, reversed);
  EXPECT_NE(one, images);
}

TEST(MixImages, NoPairsIsANoOpAndNegativeSizesThrow) {
  std::vector<uint8_t> images = {1, 2, 3};
  mix_images(kCpu, 0, 3, nullptr, nullptr, nullptr, nullptr, images.data());
  EXPECT_EQ(images, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_THROW(mix_images(kCpu, -1, 3, nullptr, nullptr, nullptr, nullptr, images.data()),
               std::invalid_argument);
  EXPECT_THROW(mix_images(kCpu, 1, -3, nullptr, nullptr, nullptr, nullptr, images.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace retort::kernels
