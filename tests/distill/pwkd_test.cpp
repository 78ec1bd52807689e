// PWKD: stage schedule and restarts, the joint teacher objective, and resume of every method
// (KD, KCD, PWKD, PWKD+KCD) against an uninterrupted run.
#include <gtest/gtest.h>

#include <filesystem>

#include "distill/kcd.h"
#include "distill/kd.h"
#include "distill/pwkd.h"
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "nn/models/registry.h"
#include "tests/distill/distill_test_util.h"
#include "nn/models/slimmable_registry.h"

namespace retort::distill {
namespace {

namespace fs = std::filesystem;

// Images whose class decides a coarse pattern, so a few epochs learn something (1x10x10).
std::shared_ptr<data::ImageSet> pattern_set(int64_t n, uint64_t salt) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n * 100));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 10;
    for (int64_t p = 0; p < 100; ++p) {
      const int64_t row = p / 10, col = p % 10;
      const bool on = (row + col * (labels[i] + 1)) % 7 < 3;
      pixels[i * 100 + p] = static_cast<uint8_t>((on ? 180 : 40) + (i * 31 + p * 17 + salt) % 50);
    }
  }
  return std::make_shared<data::ImageSet>(n, 1, 10, 10, pixels, labels, 10);
}

TrainerOptions options(const fs::path& dir, int64_t epochs) {
  TrainerOptions o;
  o.run_dir = dir.string();
  o.epochs = epochs;
  o.batch_size = 16;
  o.eval_batch_size = 32;
  o.seed = 3;
  o.quiet = true;
  o.augment.crop_padding = 1;
  o.augment.horizontal_flip = true;
  return o;
}

fs::path fresh(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("retort_pwkd_test_" + name);
  fs::remove_all(dir);
  return dir;
}

class PwkdTest : public ::testing::Test {
 protected:
  void SetUp() override { set_num_threads(1); }
  void TearDown() override { set_num_threads(0); }
};

TEST_F(PwkdTest, StagesAreEqualAndNarrowToWide) {
  EXPECT_EQ(pwkd_stage_epochs(0, 8, 4), (std::pair<int64_t, int64_t>{1, 2}));
  EXPECT_EQ(pwkd_stage_epochs(3, 8, 4), (std::pair<int64_t, int64_t>{7, 8}));
  EXPECT_EQ(pwkd_stage_epochs(0, 240, 4), (std::pair<int64_t, int64_t>{1, 60}));
  EXPECT_EQ(pwkd_stage_epochs(2, 240, 4), (std::pair<int64_t, int64_t>{121, 180}));
  const std::vector<int64_t> expected = {0, 0, 1, 1, 2, 2, 3, 3};
  for (int64_t e = 1; e <= 8; ++e) EXPECT_EQ(pwkd_stage_of(e, 8, 4), expected[e - 1]) << e;
  // Uneven counts: stages differ by at most one epoch.
  EXPECT_EQ(pwkd_stage_epochs(0, 6, 4), (std::pair<int64_t, int64_t>{1, 1}));
  EXPECT_EQ(pwkd_stage_epochs(1, 6, 4), (std::pair<int64_t, int64_t>{2, 3}));
}

TEST_F(PwkdTest, LearningRateRestartsAtEveryStage) {
  const PwkdOptions o{0.05, 0.001};
  for (int64_t stage_start : {1, 61, 121, 181}) {
    EXPECT_DOUBLE_EQ(pwkd_lr(o, stage_start, 0.0, 240, 4), 0.05) << stage_start;
  }
  // Halfway through a stage the cosine is at the midpoint; at its end it reaches lr_min.
  EXPECT_NEAR(pwkd_lr(o, 31, 0.0, 240, 4), 0.5 * (0.05 + 0.001), 1e-12);
  EXPECT_NEAR(pwkd_lr(o, 60, 1.0, 240, 4), 0.001, 1e-12);
  double previous = 1.0;
  for (int64_t e = 61; e <= 120; ++e) {
    const double lr = pwkd_lr(o, e, 0.5, 240, 4);
    EXPECT_LT(lr, previous);
    previous = lr;
  }
}

TEST_F(PwkdTest, StudentSeesEachTeacherWidthInTurnWithRestartingRates) {
  auto teacher = nn::create_slimmable_model("resnet8", {1, 10, 1});
  auto student = nn::create_model("resnet8", {1, 10, 2});
  Trainer t(student, pattern_set(64, 0), pattern_set(32, 9),
            std::make_shared<KdObjective>(teacher, KdOptions{}), options(fresh("stages"), 8));
  t.add_plugin(std::make_shared<PwkdPlugin>(teacher, PwkdOptions{0.05, 0.0}));
  const RunReport r = t.run();
  ASSERT_EQ(r.history.size(), 8u);
  const std::vector<double> widths = {0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0};
  for (size_t e = 0; e < 8; ++e) {
    double width = -1.0;
    for (const auto& [key, value] : r.history[e].extra) {
      if (key == "teacher_width") width = value;
    }
    EXPECT_EQ(width, widths[e]) << "epoch " << e + 1;
    // Odd epochs open a stage: the rate restarts at lr_max.
    if (e % 2 == 0) {
      EXPECT_DOUBLE_EQ(r.history[e].lr, 0.05);
    } else {
      EXPECT_LT(r.history[e].lr, 0.05);
    }
  }
}

TEST_F(PwkdTest, JointTeacherTrainingRunsEveryWidthEveryStep) {
  auto teacher = nn::create_slimmable_model("resnet8", {1, 10, 4});
  Trainer t(teacher, pattern_set(48, 0), pattern_set(32, 9),
            std::make_shared<SlimmableJointObjective>(teacher, false), options(fresh("joint"), 1));
  t.add_plugin(std::make_shared<SlimmableEvalPlugin>(teacher));
  const RunReport r = t.run();
  // 48 samples in batches of 16: every width's own BN counted 3 training batches.
  for (const auto& [name, value] : teacher->state_dict()) {
    if (name.find("num_batches_tracked") != std::string::npos) {
      EXPECT_EQ(value.item(), 3.0) << name;
    }
  }
  int widths_reported = 0;
  for (const auto& [key, value] : r.history.back().extra) {
    widths_reported += key.rfind("acc_w", 0) == 0;
  }
  EXPECT_EQ(widths_reported, 4);
  EXPECT_EQ(teacher->width_index(), 3) << "the widest width is active after training";
}

TEST_F(PwkdTest, JointLossIsTheSumOfPerWidthCrossEntropies) {
  auto model = nn::create_slimmable_model("resnet8", {1, 10, 5});
  model->to(DType::f64);
  Generator gen(8);
  data::Batch batch{Tensor::randn({4, 1, 10, 10}, gen, 0.0, 1.0, DType::f64),
                    Tensor::from_vector<int64_t>({1, 2, 3, 4}, {4}), Tensor()};
  SlimmableJointObjective objective(model, false);
  const double joint = objective.loss((*model)(batch.images), batch).item();
  double sum = 0.0;
  for (int64_t k = 0; k < 4; ++k) {
    model->set_width(k);
    NoGradGuard no_grad;
    sum += cross_entropy((*model)(batch.images), batch.labels).item();
  }
  // Training-mode BN uses batch statistics, so the per-width passes are deterministic.
  EXPECT_NEAR(joint, sum, 1e-12 * std::abs(sum));
}

// Every method: stop after epoch 3 of 8 and resume in fresh objects; the final weights must equal
// those of an uninterrupted run bit for bit.
enum class Combo { kd, kcd, pwkd, pwkd_kcd };

std::vector<std::vector<uint8_t>> run_combo(Combo combo, const fs::path& dir,
                                            std::optional<int64_t> stop, bool resume) {
  auto teacher = nn::create_slimmable_model("resnet8", {1, 10, 11});
  teacher->eval();
  auto student = nn::create_model("resnet8", {1, 10, resume ? 99u : 12u});
  TrainerOptions o = options(dir, 8);
  o.resume = resume;
  Trainer t(student, pattern_set(64, 0), pattern_set(32, 9),
            std::make_shared<KdObjective>(teacher, KdOptions{}), o);
  if (combo == Combo::pwkd || combo == Combo::pwkd_kcd) {
    t.add_plugin(std::make_shared<PwkdPlugin>(teacher, PwkdOptions{0.05, 0.0}));
  }
  if (combo == Combo::kcd || combo == Combo::pwkd_kcd) {
    KcdOptions k;
    k.period = 2;
    t.add_plugin(std::make_shared<KcdPlugin>(k));
  }
  t.run(stop);
  return test::weight_bytes(*student);
}

TEST_F(PwkdTest, EveryMethodResumesBitIdentically) {
  for (Combo combo : {Combo::kd, Combo::kcd, Combo::pwkd, Combo::pwkd_kcd}) {
    const std::string name = "combo" + std::to_string(static_cast<int>(combo));
    const auto straight = run_combo(combo, fresh(name + "_a"), std::nullopt, false);
    const fs::path dir = fresh(name + "_b");
    run_combo(combo, dir, 3, false);
    const auto resumed = run_combo(combo, dir, std::nullopt, true);
    EXPECT_EQ(straight, resumed) << "method " << static_cast<int>(combo);
  }
}

}  // namespace
}  // namespace retort::distill
