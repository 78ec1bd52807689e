// DataLoader tests: coverage, seeded order and resume, index lists, batches, errors, shutdown.
#include "datasets/data_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "kernels/augment.h"

namespace retort::data {
namespace {

// n images of (1, 3, 3) whose pixels all equal i % 251, labels i % 7.
std::shared_ptr<ImageSet> counting_set(int64_t n) {
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) {
    pixels.insert(pixels.end(), 9, static_cast<uint8_t>(i % 251));
    labels.push_back(i % 7);
  }
  return std::make_shared<ImageSet>(n, 1, 3, 3, std::move(pixels), std::move(labels), 7,
                                    std::vector<std::string>{}, "counting");
}

DataLoaderOptions options(int64_t batch_size, uint64_t seed = 1, int prefetch = 3) {
  DataLoaderOptions o;
  o.batch_size = batch_size;
  o.seed = seed;
  o.prefetch_batches = prefetch;
  return o;
}

// All batches of one epoch.
std::vector<Batch> run_epoch(DataLoader& loader, int64_t epoch) {
  loader.begin_epoch(epoch);
  std::vector<Batch> batches;
  while (auto batch = loader.next()) batches.push_back(std::move(*batch));
  return batches;
}

std::vector<int64_t> epoch_indices(DataLoader& loader, int64_t epoch) {
  std::vector<int64_t> all;
  for (const Batch& b : run_epoch(loader, epoch)) {
    const auto v = b.indices.to_vector<int64_t>();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

TEST(DataLoader, EveryIndexOncePerEpochWithMatchingLabelsAndImages) {
  const auto set = counting_set(103);
  DataLoader loader(set, set->all_indices(), options(10));
  EXPECT_EQ(loader.batches_per_epoch(), 11);
  EXPECT_EQ(loader.samples_per_epoch(), 103);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const std::vector<Batch> batches = run_epoch(loader, epoch);
    ASSERT_EQ(static_cast<int64_t>(batches.size()), 11);
    std::vector<int64_t> seen;
    for (const Batch& b : batches) {
      const int64_t n = b.indices.numel();
      EXPECT_EQ(b.images.shape(), (Shape{n, 1, 3, 3}));
      EXPECT_EQ(b.images.dtype(), DType::f32);
      EXPECT_EQ(b.labels.dtype(), DType::i64);
      const auto indices = b.indices.to_vector<int64_t>();
      const auto labels = b.labels.to_vector<int64_t>();
      const auto images = b.images.to_vector<float>();
      for (int64_t k = 0; k < n; ++k) {
        EXPECT_EQ(labels[k], indices[k] % 7);
        // No augmentation, no normalisation: pixel / 255.
        EXPECT_EQ(images[k * 9 + 4], static_cast<float>(indices[k] % 251) / 255.0f);
      }
      seen.insert(seen.end(), indices.begin(), indices.end());
    }
    EXPECT_EQ(batches.back().indices.numel(), 3);  // the partial last batch is kept
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, set->all_indices()) << "epoch " << epoch;
  }
}

TEST(DataLoader, SameSeedAndEpochSameOrderOtherEpochOrSeedNot) {
  const auto set = counting_set(200);
  DataLoader a(set, set->all_indices(), options(16, 5));
  DataLoader b(set, set->all_indices(), options(16, 5, /*prefetch=*/0));
  DataLoader other_seed(set, set->all_indices(), options(16, 6));
  const auto a2 = epoch_indices(a, 2);
  EXPECT_EQ(epoch_indices(b, 2), a2);
  EXPECT_EQ(a.epoch_order(2), a2);
  EXPECT_NE(epoch_indices(a, 3), a2);
  EXPECT_NE(epoch_indices(other_seed, 2), a2);
  EXPECT_NE(a2, set->all_indices());  // it does shuffle
}

TEST(DataLoader, ResumeAtAnEpochReproducesItWithAugmentation) {
  const auto set = counting_set(60);
  DataLoaderOptions o = options(8, 42);
  o.augment = {2, true, {0.4f}, {0.3f}, true};
  DataLoader full_run(set, set->all_indices(), o);
  for (int64_t epoch = 0; epoch < 4; ++epoch) run_epoch(full_run, epoch);
  const std::vector<Batch> expected = run_epoch(full_run, 4);
  o.prefetch_batches = 1;
  o.kernel_threads = 2;
  DataLoader resumed(set, set->all_indices(), o);
  const std::vector<Batch> actual = run_epoch(resumed, 4);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t b = 0; b < actual.size(); ++b) {
    EXPECT_EQ(actual[b].indices.to_vector<int64_t>(), expected[b].indices.to_vector<int64_t>());
    EXPECT_EQ(actual[b].images.to_vector<float>(), expected[b].images.to_vector<float>());
  }
}

TEST(DataLoader, AugmentationFollowsTheDocumentedCounters) {
  // Random pixels so that crops and flips show.
  std::vector<uint8_t> pixels(20 * 3 * 6 * 5);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  const auto set = std::make_shared<ImageSet>(20, 3, 6, 5, pixels, std::vector<int64_t>(20, 0), 1);
  DataLoaderOptions o = options(6, 9);
  o.augment = {3, true, {0.5f, 0.4f, 0.3f}, {0.2f, 0.25f, 0.3f}, true};
  DataLoader loader(set, set->all_indices(), o);
  const std::vector<Batch> batches = run_epoch(loader, 7);
  kernels::AugmentParams p;
  p.pad = 3;
  p.flip_prob = 0.5f;
  for (int c = 0; c < 3; ++c) p.mean[c] = o.augment.mean[c], p.std[c] = o.augment.std[c];
  int64_t position = 0;
  for (const Batch& b : batches) {
    const int64_t n = b.indices.numel();
    const auto indices = b.indices.to_vector<int64_t>();
    std::vector<float> expected(n * 90);
    kernels::augment_gather<float>(kernels::CpuContext{}, {n, 20, 3, 6, 5}, p, 9,
                                   (uint64_t{7} << 32) + position, pixels.data(), indices.data(),
                                   expected.data());
    EXPECT_EQ(b.images.to_vector<float>(), expected);
    position += n;
  }
  // Evaluation mode (random = false) keeps only the normalisation.
  o.augment.random = false;
  DataLoader eval(set, set->all_indices(), o);
  const Batch first = run_epoch(eval, 7).front();
  const auto idx = first.indices.to_vector<int64_t>();
  const auto img = first.images.to_vector<float>();
  for (int64_t k = 0; k < first.indices.numel(); ++k) {
    for (int i = 0; i < 90; ++i) {
      const int c = i / 30;
      const float v = pixels[idx[k] * 90 + i];
      ASSERT_EQ(img[k * 90 + i], (v / 255.0f - o.augment.mean[c]) / o.augment.std[c]);
    }
  }
}

TEST(DataLoader, ChangedIndexListIsRespected) {
  const auto set = counting_set(50);
  DataLoader loader(set, set->all_indices(), options(4));
  EXPECT_EQ(epoch_indices(loader, 0).size(), 50u);
  std::vector<int64_t> kept = {3, 9, 10, 11, 20, 21, 22, 40, 49};  // KCD's condensed set
  loader.set_indices(kept);
  EXPECT_EQ(loader.batches_per_epoch(), 3);
  auto seen = epoch_indices(loader, 1);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, kept);
  EXPECT_THROW(loader.set_indices({0, 50}), std::invalid_argument);
  EXPECT_EQ(loader.indices(), kept);  // a rejected list changes nothing
  loader.set_indices({});
  EXPECT_EQ(loader.batches_per_epoch(), 0);
  EXPECT_TRUE(run_epoch(loader, 2).empty());
}

TEST(DataLoader, MutatedPixelsAreSeenNextEpoch) {
  const auto set = counting_set(5);
  DataLoaderOptions o = options(5);
  o.shuffle = false;
  DataLoader loader(set, set->all_indices(), o);
  run_epoch(loader, 0);
  std::fill(set->mutable_image(2), set->mutable_image(2) + 9, uint8_t{255});  // KCD mixing
  const Batch b = run_epoch(loader, 1).front();
  EXPECT_EQ(b.indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(b.images.to_vector<float>()[2 * 9], 1.0f);
}

TEST(DataLoader, DropLastAndNoShuffle) {
  const auto set = counting_set(23);
  DataLoaderOptions o = options(5);
  o.drop_last = true;
  o.shuffle = false;
  DataLoader loader(set, set->all_indices(), o);
  EXPECT_EQ(loader.batches_per_epoch(), 4);
  EXPECT_EQ(loader.samples_per_epoch(), 20);
  const auto batches = run_epoch(loader, 0);
  ASSERT_EQ(batches.size(), 4u);
  for (const Batch& b : batches) EXPECT_EQ(b.indices.numel(), 5);
  EXPECT_EQ(batches[3].indices.to_vector<int64_t>(), (std::vector<int64_t>{15, 16, 17, 18, 19}));
}

TEST(DataLoader, ExhaustedEpochKeepsReturningNothing) {
  const auto set = counting_set(3);
  DataLoader loader(set, set->all_indices(), options(2));
  EXPECT_THROW(loader.next(), std::logic_error);
  run_epoch(loader, 0);
  EXPECT_FALSE(loader.next().has_value());
  EXPECT_FALSE(loader.epoch_in_flight());
}

TEST(DataLoader, WorkerExceptionReachesTheConsumer) {
  const auto set = counting_set(40);
  for (int prefetch : {0, 1, 3}) {
    DataLoaderOptions o = options(4, 1, prefetch);
    auto made = std::make_shared<std::atomic<int>>(0);
    o.batch_hook = [made](Batch&) {
      if (++*made == 3) throw std::runtime_error("hook failed on batch 3");
    };
    DataLoader loader(set, set->all_indices(), o);
    loader.begin_epoch(0);
    EXPECT_TRUE(loader.next().has_value());
    EXPECT_TRUE(loader.next().has_value());
    try {
      loader.next();
      ADD_FAILURE() << "no exception (prefetch " << prefetch << ")";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "hook failed on batch 3");
    }
    EXPECT_FALSE(loader.next().has_value());
    EXPECT_EQ(run_epoch(loader, 1).size(), 10u);  // the loader recovers at the next epoch
  }
}

TEST(DataLoader, DestroyOrRestartMidEpochDoesNotHang) {
  const auto set = counting_set(2000);
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < 20; ++round) {
    DataLoader loader(set, set->all_indices(), options(8, round, 2));
    loader.begin_epoch(0);
    ASSERT_TRUE(loader.next().has_value());
    loader.begin_epoch(1);  // restart while the worker waits on a full queue
    ASSERT_TRUE(loader.next().has_value());
    if (round % 2) loader.end_epoch();
  }  // destroyed mid-epoch
  {
    DataLoader never_read(set, set->all_indices(), options(8));
    never_read.begin_epoch(0);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(DataLoader, RejectsBadOptions) {
  const auto set = counting_set(4);
  auto make = [&](DataLoaderOptions o) { DataLoader(set, set->all_indices(), o); };
  DataLoaderOptions o;
  o.batch_size = 0;
  EXPECT_THROW(make(o), std::invalid_argument);
  o = {};
  o.augment.mean = {0.1f, 0.2f};
  EXPECT_THROW(make(o), std::invalid_argument);
  o = {};
  o.augment.std = {0.0f};
  EXPECT_THROW(make(o), std::invalid_argument);
  o = {};
  o.augment.crop_padding = -1;
  EXPECT_THROW(make(o), std::invalid_argument);
  EXPECT_THROW(DataLoader(nullptr, {}, {}), std::invalid_argument);
  EXPECT_THROW(DataLoader(set, {4}, {}), std::invalid_argument);
  DataLoader ok(set, set->all_indices(), {});
  EXPECT_THROW(ok.begin_epoch(-1), std::invalid_argument);
}

}  // namespace
}  // namespace retort::data
