// Tests on the real Fashion-MNIST files: counts, sizes, balance, statistics, loader throughput.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "datasets/data_loader.h"
#include "datasets/readers.h"

namespace retort::data {
namespace {

#define SKIP_WITHOUT_FASHION_MNIST()                                                              \
  if (!std::filesystem::exists(std::string(kFashionMnistRoot) + "/train-images-idx3-ubyte.gz")) { \
    GTEST_SKIP() << kFashionMnistRoot << " is missing (Debian package dataset-fashion-mnist)";    \
  }

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Loaded once: decompressing 26 MB takes a moment.
const ImageSet& train_set() {
  static const ImageSet set = [] {
    const auto start = std::chrono::steady_clock::now();
    ImageSet s = fashion_mnist(kFashionMnistRoot, true);
    std::printf("[ info ] fashion_mnist(train) read in %.3f s\n", seconds_since(start));
    return s;
  }();
  return set;
}

TEST(FashionMnist, TrainSet) {
  SKIP_WITHOUT_FASHION_MNIST();
  const ImageSet& set = train_set();
  EXPECT_EQ(set.size(), 60000);
  EXPECT_EQ(set.channels(), 1);
  EXPECT_EQ(set.height(), 28);
  EXPECT_EQ(set.width(), 28);
  EXPECT_EQ(set.num_classes(), 10);
  EXPECT_EQ(set.class_names().at(9), "Ankle boot");
  EXPECT_EQ(set.class_counts(), std::vector<int64_t>(10, 6000));
  // The published normalisation constants are this set's own statistics.
  const ChannelStats stats = channel_stats(set);
  EXPECT_NEAR(stats.mean[0], kFashionMnistMean[0], 5e-4);
  EXPECT_NEAR(stats.std[0], kFashionMnistStd[0], 5e-4);
}

TEST(FashionMnist, TestSet) {
  SKIP_WITHOUT_FASHION_MNIST();
  const ImageSet set = fashion_mnist(kFashionMnistRoot, false);
  EXPECT_EQ(set.size(), 10000);
  EXPECT_EQ(set.height(), 28);
  EXPECT_EQ(set.width(), 28);
  EXPECT_EQ(set.class_counts(), std::vector<int64_t>(10, 1000));
}

TEST(FashionMnist, SubsetIsBalanced) {
  SKIP_WITHOUT_FASHION_MNIST();
  const ImageSet small = subset(train_set(), 1000, 3);
  EXPECT_EQ(small.size(), 1000);
  EXPECT_EQ(small.class_counts(), std::vector<int64_t>(10, 100));
}

// Images per second for one augmented epoch (crop padding 4, flip, normalise), batch 128.
TEST(FashionMnist, LoaderThroughput) {
  SKIP_WITHOUT_FASHION_MNIST();
  auto set = std::make_shared<const ImageSet>(train_set());
  for (int threads : {1, 2}) {
    for (int prefetch : {0, 3}) {
      DataLoaderOptions o;
      o.batch_size = 128;
      o.seed = 1;
      o.kernel_threads = threads;
      o.prefetch_batches = prefetch;
      o.augment = {4, true, kFashionMnistMean, kFashionMnistStd, true};
      DataLoader loader(set, set->all_indices(), o);
      const auto start = std::chrono::steady_clock::now();
      loader.begin_epoch(0);
      int64_t images = 0;
      while (auto batch = loader.next()) images += batch->indices.numel();
      const double s = seconds_since(start);
      EXPECT_EQ(images, 60000);
      std::printf("[ info ] loader: %d kernel thread(s), prefetch %d: %.0f images/s (%.3f s)\n",
                  threads, prefetch, images / s, s);
    }
  }
}

}  // namespace
}  // namespace retort::data
