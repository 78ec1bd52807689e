// Tests of the CPU augmentation kernel against a naive pad-crop-flip-normalise reference.
#include "kernels/augment.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace retort::kernels
