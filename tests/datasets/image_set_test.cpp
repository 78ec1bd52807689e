// Tests of ImageSet (checks, access, mutation), select/subset, channel stats and permutations.
#include "datasets/image_set.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <vector>

#include "datasets/permutation.h"

namespace retort::data {
namespace {

// n images of (1, 2, 2) filled with i % 256, labels i % classes.
ImageSet counting_set(int64_t n, int64_t classes) {
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) {
    pixels.insert(pixels.end(), 4, static_cast<uint8_t>(i % 256));
    labels.push_back(i % classes);
  }
  return ImageSet(n, 1, 2, 2, std::move(pixels), std::move(labels), classes, {}, "counting");
}

TEST(ImageSet, ChecksItsParts) {
  EXPECT_THROW(ImageSet(2, 1, 2, 2, std::vector<uint8_t>(7), {0, 0}, 1), std::invalid_argument);
  EXPECT_THROW(ImageSet(2, 1, 2, 2, std::vector<uint8_t>(8), {0}, 1), std::invalid_argument);
  EXPECT_THROW(ImageSet(2, 1, 2, 2, std::vector<uint8_t>(8), {0, 2}, 2), std::invalid_argument);
  EXPECT_THROW(ImageSet(2, 1, 2, 2, std::vector<uint8_t>(8), {0, -1}, 2), std::invalid_argument);
  EXPECT_THROW(ImageSet(2, 1, 2, 2, std::vector<uint8_t>(8), {0, 1}, 2, {"one"}),
               std::invalid_argument);
  EXPECT_THROW(ImageSet(1, 0, 2, 2, {}, {0}, 1), std::invalid_argument);
  EXPECT_NO_THROW(ImageSet(2, 1, 2, 2, std::vector<uint8_t>(8), {0, 1}, 2, {"a", "b"}));
}

TEST(ImageSet, ServesImageLabelAndIndex) {
  const ImageSet set = counting_set(10, 3);
  EXPECT_EQ(set.size(), 10);
  EXPECT_EQ(set.image_numel(), 4);
  const Sample s = set.sample(7);
  EXPECT_EQ(s.index, 7);
  EXPECT_EQ(s.label, 1);
  EXPECT_EQ(s.image[3], 7);
  EXPECT_THROW(set.image(10), std::out_of_range);
  EXPECT_THROW(set.label(-1), std::out_of_range);
  EXPECT_EQ(set.all_indices().size(), 10u);
  EXPECT_EQ(set.class_counts(), (std::vector<int64_t>{4, 3, 3}));
  EXPECT_NE(set.str().find("10 images of (1, 2, 2), 3 classes"), std::string::npos);
}

TEST(ImageSet, CopyIsADeepMutableCopy) {
  const ImageSet original = counting_set(4, 2);
  ImageSet copy = original;  // what KCD mixes
  copy.mutable_image(2)[0] = 200;
  EXPECT_EQ(copy.image(2)[0], 200);
  EXPECT_EQ(original.image(2)[0], 2);
}

TEST(ImageSet, SelectCopiesInOrder) {
  const ImageSet set = counting_set(6, 3);
  const ImageSet chosen = select(set, {5, 1, 5});
  ASSERT_EQ(chosen.size(), 3);
  EXPECT_EQ(chosen.image(0)[0], 5);
  EXPECT_EQ(chosen.image(1)[0], 1);
  EXPECT_EQ(chosen.labels(), (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(chosen.num_classes(), 3);
  EXPECT_THROW(select(set, {6}), std::out_of_range);
}

TEST(Subset, StratifiedSeededAndDistinct) {
  // Unbalanced classes: 0..3 with 40, 30, 20, 10 images.
  std::vector<int64_t> labels;
  for (int c = 0; c < 4; ++c) labels.insert(labels.end(), 40 - 10 * c, c);
  const ImageSet set(100, 1, 1, 1, std::vector<uint8_t>(100), labels, 4);
  const std::vector<int64_t> a = subset_indices(set, 40, 7);
  ASSERT_EQ(a.size(), 40u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 40u);
  std::vector<int64_t> per_class(4, 0);
  for (int64_t i : a) ++per_class[labels[i]];
  EXPECT_EQ(per_class, (std::vector<int64_t>{10, 10, 10, 10}));
  // A small class runs out: the others fill the rest evenly.
  per_class.assign(4, 0);
  for (int64_t i : subset_indices(set, 70, 7)) ++per_class[labels[i]];
  EXPECT_EQ(per_class, (std::vector<int64_t>{20, 20, 20, 10}));
  EXPECT_EQ(subset_indices(set, 40, 7), a);
  EXPECT_NE(subset_indices(set, 40, 8), a);
  EXPECT_EQ(subset_indices(set, 100, 1), set.all_indices());
  EXPECT_THROW(subset_indices(set, 101, 1), std::invalid_argument);
  EXPECT_EQ(subset(set, 12, 3).size(), 12);
}

TEST(ChannelStats, MatchesDirectComputation) {
  // Two images of (2, 1, 2): channel 0 holds 0 and 255 (mean 0.5, std 0.5), channel 1 all 51.
  const ImageSet set(2, 2, 1, 2, {0, 255, 51, 51, 255, 0, 51, 51}, {0, 0}, 1);
  const ChannelStats stats = channel_stats(set);
  ASSERT_EQ(stats.mean.size(), 2u);
  EXPECT_NEAR(stats.mean[0], 0.5, 1e-6);
  EXPECT_NEAR(stats.std[0], 0.5, 1e-6);
  EXPECT_NEAR(stats.mean[1], 0.2, 1e-6);
  EXPECT_NEAR(stats.std[1], 0.0, 1e-3);
  const ChannelStats first = channel_stats(set, {0});
  EXPECT_NEAR(first.mean[0], 0.5, 1e-6);
}

TEST(SeededPermutation, IsAPermutationAndDependsOnSeedAndStream) {
  const auto p = seeded_permutation(1000, 1, 5);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(seeded_permutation(1000, 1, 5), p);
  EXPECT_NE(seeded_permutation(1000, 2, 5), p);
  EXPECT_NE(seeded_permutation(1000, 1, 6), p);
  EXPECT_TRUE(seeded_permutation(0, 1, 1).empty());
  EXPECT_EQ(seeded_permutation(1, 1, 1), std::vector<int64_t>{0});
}

TEST(SeededPermutation, PositionsAreUniform) {
  // Over 6000 permutations of 6, each value lands at each position ~1000 times.
  constexpr int kN = 6, kTrials = 6000;
  std::vector<std::vector<int>> hits(kN, std::vector<int>(kN, 0));
  for (int t = 0; t < kTrials; ++t) {
    const auto p = seeded_permutation(kN, 11, static_cast<uint64_t>(t));
    for (int k = 0; k < kN; ++k) ++hits[k][p[k]];
  }
  const double expected = kTrials / kN, se = std::sqrt(kTrials * (1.0 / kN) * (1 - 1.0 / kN));
  for (int k = 0; k < kN; ++k)
    for (int v = 0; v < kN; ++v) EXPECT_NEAR(hits[k][v], expected, 5 * se) << k << ", " << v;
}

}  // namespace
}  // namespace retort::data
