// Training on the GPU against the CPU path: the device data pipeline gives the CPU's bits, a short
// run reaches the CPU's accuracy, KD/KCD runs complete, and deterministic mode repeats bit for bit.
// Every test that needs a GPU skips with the reason on a machine without one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <tuple>
#include <filesystem>
#include <string>

#include "datasets/data_loader.h"
#include "datasets/readers.h"
#include "distill/kcd.h"
#include "distill/kd.h"
#include "distill/trainer.h"
#include "nn/models/registry.h"
#include "tests/cuda_test.h"
#include "tests/distill/distill_test_util.h"

namespace retort::distill {
namespace {

namespace fs = std::filesystem;

// Where Fashion-MNIST is: $RETORT_FASHION_MNIST (the GPU check carries the files there), else
// Debian's package directory.
std::string fashion_mnist_dir() {
  const char* env = std::getenv("RETORT_FASHION_MNIST");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(data::kFashionMnistRoot);
}

bool have_fashion_mnist() {
  return fs::exists(fashion_mnist_dir() + "/train-images-idx3-ubyte.gz");
}

using CudaTraining = test::CudaTest;

struct Data {
  std::shared_ptr<data::ImageSet> train, test;
};

Data fashion_subset(int64_t train_count, int64_t test_count) {
  const std::string dir = fashion_mnist_dir();
  return {std::make_shared<data::ImageSet>(
              data::subset(data::fashion_mnist(dir, true), train_count, 1)),
          std::make_shared<data::ImageSet>(
              data::subset(data::fashion_mnist(dir, false), test_count, 2))};
}

// A synthetic 1x12x12 set with a learnable pattern, for the tests that need no real data.
std::shared_ptr<data::ImageSet> synthetic(int64_t n, uint64_t salt) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n * 144));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 10;
    for (int64_t p = 0; p < 144; ++p) {
      pixels[i * 144 + p] = static_cast<uint8_t>((p * (i % 10 + 1) + i * 7 + salt) % 251);
    }
  }
  return std::make_shared<data::ImageSet>(n, 1, 12, 12, pixels, labels, 10);
}

TrainerOptions options(const std::string& name, int64_t epochs, Device device) {
  TrainerOptions o;
  const fs::path dir = fs::temp_directory_path() / ("retort_cuda_training_" + name);
  fs::remove_all(dir);
  o.run_dir = dir.string();
  o.epochs = epochs;
  o.batch_size = 64;
  o.eval_batch_size = 250;
  o.seed = 3;
  o.quiet = true;
  o.device = device;
  o.schedule = LrScheduleKind::cosine;
  o.sgd.lr = 0.1;
  o.save_checkpoints = false;
  o.augment.crop_padding = 2;
  o.augment.horizontal_flip = true;
  o.augment.mean = {0.286f};
  o.augment.std = {0.353f};
  return o;
}

TEST_F(CudaTraining, DeviceLoaderMakesTheCpuLoadersBits) {
  auto set = synthetic(203, 0);
  data::DataLoaderOptions o;
  o.batch_size = 64;  // 203 images: three full batches and a partial one
  o.seed = 11;
  o.augment.crop_padding = 3;
  o.augment.horizontal_flip = true;
  o.augment.mean = {0.4f};
  o.augment.std = {0.2f};
  data::DataLoader cpu(set, set->all_indices(), o);
  o.device = Device::cuda();
  data::DataLoader gpu(set, set->all_indices(), o);
  for (int64_t epoch : {0, 5}) {
    cpu.begin_epoch(epoch);
    gpu.begin_epoch(epoch);
    int64_t batches = 0;
    while (auto a = cpu.next()) {
      auto b = gpu.next();
      ASSERT_TRUE(b.has_value());
      EXPECT_EQ(b->images.device(), Device::cuda());
      EXPECT_EQ(a->images.to_vector<float>(), b->images.to_vector<float>()) << "batch " << batches;
      EXPECT_EQ(a->labels.to_vector<int64_t>(), b->labels.to_vector<int64_t>());
      EXPECT_EQ(a->indices.to_vector<int64_t>(), b->indices.to_vector<int64_t>());
      ++batches;
    }
    EXPECT_FALSE(gpu.next().has_value());
    EXPECT_EQ(batches, 4);
  }
}

TEST_F(CudaTraining, DeviceLoaderSeesPixelsChangedBetweenEpochs) {
  auto set = synthetic(64, 1);
  data::DataLoaderOptions o;
  o.batch_size = 64;
  o.shuffle = false;
  o.device = Device::cuda();
  data::DataLoader gpu(set, set->all_indices(), o);
  gpu.begin_epoch(0);
  const std::vector<float> before = gpu.next()->images.to_vector<float>();
  gpu.end_epoch();
  set->mutable_image(0)[0] = static_cast<uint8_t>(set->image(0)[0] + 100);  // what KCD's mix does
  gpu.begin_epoch(0);
  const std::vector<float> after = gpu.next()->images.to_vector<float>();
  EXPECT_NE(before[0], after[0]);
  EXPECT_EQ(before[1], after[1]);
}

// The first steps from the same weights and batches agree with the CPU to fp32 parity; a short
// run's test accuracy agrees within noise (the paths round differently, so weights drift apart).
TEST_F(CudaTraining, ShortRunMatchesTheCpuAccuracy) {
  if (!have_fashion_mnist()) {
    GTEST_SKIP() << "Fashion-MNIST not found at " << fashion_mnist_dir()
                 << " (set RETORT_FASHION_MNIST)";
  }
  const Data d = fashion_subset(3000, 1000);
  const nn::ModelOptions mo{1, 10, 0};
  Trainer cpu(nn::create_model("resnet8", mo), d.train, d.test,
              std::make_shared<CrossEntropyObjective>(), options("cpu", 3, Device::cpu()));
  Trainer gpu(nn::create_model("resnet8", mo), d.train, d.test,
              std::make_shared<CrossEntropyObjective>(), options("gpu", 3, Device::cuda()));
  const RunReport a = cpu.run(), b = gpu.run();
  ASSERT_EQ(a.history.size(), 3u);
  ASSERT_EQ(b.history.size(), 3u);
  // Epoch 1's mean training loss is dominated by steps taken while both paths still agree.
  EXPECT_NEAR(a.history[0].train_loss, b.history[0].train_loss, 0.02 * a.history[0].train_loss);
  // Seed-to-seed spread of this run is about 1-2 points (docs/results.md); 3 is the noise bar.
  EXPECT_NEAR(a.last_acc, b.last_acc, 3.0);
  EXPECT_GE(b.last_acc, 65.0);  // the CPU end-to-end test's bar
  EXPECT_EQ(a.sample_passes, b.sample_passes);
}

// Two runs in deterministic mode from one seed give the same bits, KD with a folded teacher and
// KCD's mixing included.
TEST_F(CudaTraining, DeterministicModeRepeatsBitForBit) {
  auto train = synthetic(320, 2), test = synthetic(100, 3);
  const nn::ModelOptions mo{1, 10, 4};
  auto run = [&](const std::string& name) {
    auto teacher = nn::create_model("resnet14", mo);
    teacher->to(Device::cuda());
    auto student = nn::create_model("resnet8", mo);
    KcdOptions kcd;
    kcd.period = 1;
    TrainerOptions o = options(name, 2, Device::cuda());
    Trainer t(student, std::make_shared<data::ImageSet>(*train), test,
              std::make_shared<KdObjective>(teacher, KdOptions{}), o);
    t.add_plugin(std::make_shared<KcdPlugin>(kcd));
    const RunReport r = t.run();
    return std::make_pair(test::weight_bytes(*student), r.last_acc);
  };
  const auto first = run("det_a"), second = run("det_b");
  EXPECT_TRUE(first.first == second.first) << "weights differ between two deterministic runs";
  EXPECT_EQ(first.second, second.second);
}

void expect_graph_mode_gives_eager_bits(LrScheduleKind schedule);

// The Trainer's CUDA-graph mode against its eager mode: same bits after KD with KCD (whose kept
// set changes the batch count, so partial batches run eagerly beside the replays), BN counters
// and the optimiser's step count included; with the multistep schedule and with cosine, whose
// rate changes every step (read by the replays from the device).
TEST_F(CudaTraining, GraphModeGivesTheEagerModesBits) {
  for (const LrScheduleKind schedule : {LrScheduleKind::multistep, LrScheduleKind::cosine}) {
    SCOPED_TRACE(schedule == LrScheduleKind::cosine ? "cosine" : "multistep");
    expect_graph_mode_gives_eager_bits(schedule);
  }
}

void expect_graph_mode_gives_eager_bits(LrScheduleKind schedule) {
  auto train = synthetic(330, 5), test = synthetic(100, 6);
  const nn::ModelOptions mo{1, 10, 7};
  auto run = [&](const std::string& name, bool graph) {
    auto teacher = nn::create_model("resnet14", mo);
    teacher->to(Device::cuda());
    auto student = nn::create_model("resnet8", mo);
    KcdOptions kcd;
    kcd.period = 1;
    TrainerOptions o = options(name, 3, Device::cuda());
    o.schedule = schedule;
    o.cuda_graph = graph;
    Trainer t(student, std::make_shared<data::ImageSet>(*train), test,
              std::make_shared<KdObjective>(teacher, KdOptions{}), o);
    t.add_plugin(std::make_shared<KcdPlugin>(kcd));
    const RunReport r = t.run();
    return std::make_tuple(test::weight_bytes(*student), r.last_acc, r.history.back().train_loss);
  };
  const auto eager = run("graph_off", false), graph = run("graph_on", true);
  EXPECT_TRUE(std::get<0>(eager) == std::get<0>(graph)) << "weights differ with --cuda-graph";
  EXPECT_EQ(std::get<1>(eager), std::get<1>(graph));
  EXPECT_EQ(std::get<2>(eager), std::get<2>(graph));
}

TEST(CudaTrainingErrors, GraphModeNeedsCuda) {
  TrainerOptions o = options("graph_cpu", 1, Device::cpu());
  o.cuda_graph = true;
  EXPECT_THROW(Trainer(nn::create_model("resnet8", {1, 10, 0}), synthetic(8, 0), synthetic(8, 1),
                       std::make_shared<CrossEntropyObjective>(), o),
               std::invalid_argument);
}

TEST(CudaTrainingErrors, AskingForCudaWithoutADeviceIsOneLine) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  try {
    Trainer t(nn::create_model("resnet8", {1, 10, 0}), synthetic(8, 0), synthetic(8, 1),
              std::make_shared<CrossEntropyObjective>(), options("none", 1, Device::cuda()));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace retort::distill
