// KCD: the schedule, the score and mixing arithmetic, the plugin's E/M-steps, and exact resume.
#include "distill/kcd.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <set>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "nn/models/registry.h"
#include "tests/distill/distill_test_util.h"

namespace retort::distill {
namespace {

namespace fs = std::filesystem;

// --- schedule (spec 2.2 (c), (e)) ----------------------------------------------------------------

TEST(KcdSchedule, DefaultPeriodScalesTheCodes40Of240) {
  EXPECT_EQ(kcd_default_period(240), 40);
  EXPECT_EQ(kcd_default_period(30), 5);
  EXPECT_EQ(kcd_default_period(8), 1);
  EXPECT_EQ(kcd_default_period(3), 1);
  EXPECT_EQ(kcd_default_period(1), 1);
  const KcdOptions r = kcd_resolve(KcdOptions{}, 240);
  EXPECT_EQ(r.period, 40);
  EXPECT_EQ(r.f_ref, 40.0);  // the code's hard-coded 40
  KcdOptions set;
  set.period = 7;
  set.f_ref = 40.0;
  EXPECT_EQ(kcd_resolve(set, 30).period, 7);
  EXPECT_EQ(kcd_resolve(set, 30).f_ref, 40.0);
}

TEST(KcdSchedule, RejectsBadOptions) {
  auto bad = [](auto change) {
    KcdOptions o;
    change(o);
    EXPECT_THROW(kcd_resolve(o, 10), std::invalid_argument);
  };
  bad([](KcdOptions& o) { o.threshold = 0.0; });
  bad([](KcdOptions& o) { o.threshold = 1.5; });
  bad([](KcdOptions& o) { o.n_steps = 0; });
  bad([](KcdOptions& o) { o.eps_max = -0.1; });
  bad([](KcdOptions& o) { o.period = -1; });
  bad([](KcdOptions& o) { o.warmup = -1; });
  EXPECT_THROW(KcdPlugin(KcdOptions{.threshold = 2.0}), std::invalid_argument);
}

TEST(KcdSchedule, ReadmeSettingKeeps50000To37500) {
  EXPECT_EQ(kcd_step_size(50000, 0.7, 6), 2500);
  EXPECT_EQ(kcd_floor_size(50000, 0.7), 35000);
  const auto sizes = kcd_kept_sizes(50000, 240, 40, 0.7, 6);
  ASSERT_EQ(sizes.size(), 240u);
  const int64_t expected[6] = {50000, 47500, 45000, 42500, 40000, 37500};
  for (int stage = 0; stage < 6; ++stage) {
    for (int64_t e = 40 * stage + 1; e <= 40 * (stage + 1); ++e) {
      ASSERT_EQ(sizes[e - 1], expected[stage]) << "epoch " << e;
    }
  }
  // Condensations after epochs 40..200; the code's wasted one after 240 is skipped.
  for (int64_t e = 1; e <= 240; ++e) {
    EXPECT_EQ(kcd_condenses_after(e, 240, 40), e % 40 == 0 && e < 240) << e;
  }
  // Other thresholds (spec 2.2 (e)).
  EXPECT_EQ(kcd_step_size(50000, 0.5, 6), 4166);
  EXPECT_EQ(kcd_floor_size(50000, 0.5), 25000);
  EXPECT_EQ(kcd_step_size(50000, 0.6, 6), 3333);
  EXPECT_EQ(kcd_floor_size(50000, 0.6), 30000);
  EXPECT_EQ(kcd_step_size(50000, 0.8, 6), 1666);
  EXPECT_EQ(kcd_floor_size(50000, 0.8), 40000);
  EXPECT_EQ(kcd_step_size(50000, 0.9, 6), 833);
  EXPECT_EQ(kcd_floor_size(50000, 0.9), 45000);
}

TEST(KcdSchedule, FloorStopsTheShrinkAndWarmupDelaysIt) {
  // 12 periods: six steps of 2500 reach the floor 35000, which then holds.
  const auto sizes = kcd_kept_sizes(50000, 480, 40, 0.7, 6);
  EXPECT_EQ(sizes[40 * 6], 35000);
  EXPECT_EQ(sizes.back(), 35000);
  EXPECT_EQ(*std::min_element(sizes.begin(), sizes.end()), 35000);
  EXPECT_EQ(kcd_next_kept(35000, 50000, 0.7, 6), 35000);
  EXPECT_EQ(kcd_next_kept(36000, 50000, 0.7, 6), 35000);
  // Warmup 100: the first condensation is after epoch 120.
  const auto warm = kcd_kept_sizes(50000, 240, 40, 0.7, 6, 100);
  EXPECT_EQ(warm[119], 50000);
  EXPECT_EQ(warm[120], 47500);
  EXPECT_EQ(warm.back(), 42500);
}

TEST(KcdSchedule, SamplePassesAre87Point5PercentOfKd) {
  const int64_t kcd = kcd_sample_passes(50000, 240, 40, 0.7, 6);
  const int64_t kd = int64_t{50000} * 240;
  EXPECT_EQ(kcd, 10'500'000);
  EXPECT_EQ(kd, 12'000'000);
  EXPECT_DOUBLE_EQ(static_cast<double>(kcd) / kd, 0.875);
  // Optimiser steps with batch 64, last partial batch kept: 164,200 vs 187,680.
  int64_t steps = 0;
  for (int64_t size : kcd_kept_sizes(50000, 240, 40, 0.7, 6)) steps += (size + 63) / 64;
  EXPECT_EQ(steps, 164'200);
  EXPECT_EQ(240 * ((50000 + 63) / 64), 187'680);
}

// --- score (spec 2.2 (d)) ------------------------------------------------------------------------

TEST(KcdScore, CostFactorValues) {
  // ET = (F / 40)^0.03 for F = 40..240: 1, 1.0210, 1.0335, 1.0425, 1.0495, 1.0552.
  const std::vector<int64_t> counts = {40, 80, 120, 160, 200, 240};
  const std::vector<double> sums(counts.begin(), counts.end());  // mean entropy 1 for all
  const auto scores = kcd_scores(sums, counts, 40.0, 0.03);
  const double et[6] = {1.0, 1.0210, 1.0335, 1.0425, 1.0495, 1.0552};
  for (int k = 0; k < 6; ++k) EXPECT_NEAR(scores[k], et[k], 5e-5) << "F = " << counts[k];
}

TEST(KcdScore, HandValues) {
  // S, F -> (S / F) * (F / 40)^0.03; F = 0 (never seen) scores 0 instead of the code's NaN.
  const std::vector<double> s = {80.0, 80.0, 0.0, 60.0, 1.5};
  const std::vector<int64_t> f = {40, 80, 0, 120, 3};
  const auto scores = kcd_scores(s, f, 40.0, 0.03);
  EXPECT_DOUBLE_EQ(scores[0], 2.0);
  EXPECT_DOUBLE_EQ(scores[1], 1.0 * std::pow(2.0, 0.03));
  EXPECT_EQ(scores[2], 0.0);
  EXPECT_DOUBLE_EQ(scores[3], 0.5 * std::pow(3.0, 0.03));
  EXPECT_DOUBLE_EQ(scores[4], 0.5 * std::pow(3.0 / 40.0, 0.03));
  EXPECT_NEAR(scores[1], 1.0210, 5e-5);
  EXPECT_NEAR(scores[3], 0.5 * 1.0335, 5e-5);
  // alpha 0 is the plain mean entropy; f_ref rescales every score alike, so the order is kept.
  const auto plain = kcd_scores(s, f, 40.0, 0.0);
  EXPECT_DOUBLE_EQ(plain[1], 1.0);
  std::vector<int64_t> all(s.size());
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(kcd_rank(kcd_scores(s, f, 40.0, 0.03), all),
            kcd_rank(kcd_scores(s, f, 5.0, 0.03), all));
  EXPECT_EQ(kcd_rank(scores, all), (std::vector<int64_t>{0, 1, 3, 4, 2}));
}

TEST(KcdScore, RankIsDescendingWithTiesByIndex) {
  const std::vector<double> scores = {0.5, 0.9, 0.5, NAN, 0.9, 0.1};
  EXPECT_EQ(kcd_rank(scores, {0, 1, 2, 3, 4, 5}), (std::vector<int64_t>{1, 4, 0, 2, 5, 3}));
  EXPECT_EQ(kcd_rank(scores, {5, 2, 0}), (std::vector<int64_t>{0, 2, 5}));
}

// --- condensation and mixing (spec 2.2 (d)-(f), 2.4 item 2) -------------------------------------

TEST(KcdCondense, ReRankingLetsADroppedSampleComeBackNestedCannot) {
  // 10 samples; 8 and 9 were dropped earlier, and 9 now scores highest of all.
  const std::vector<double> scores = {0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 1.0};
  const std::vector<int64_t> keep = {0, 1, 2, 3, 4, 5, 6, 7};
  // threshold 0.4, 3 steps: step int(10 * 0.6 / 3) = 2, floor 4: 8 -> 6.
  const KcdCondensation all = kcd_condense(scores, keep, 0.4, 3, /*nested=*/false);
  EXPECT_EQ(all.keep, (std::vector<int64_t>{9, 0, 1, 2, 3, 4}));
  EXPECT_EQ(all.lost, (std::vector<int64_t>{5, 6}));  // ranks 6..7 of all ten
  EXPECT_EQ(all.tail, (std::vector<int64_t>{3, 4}));
  const KcdCondensation nested = kcd_condense(scores, keep, 0.4, 3, /*nested=*/true);
  EXPECT_EQ(nested.keep, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(nested.lost, (std::vector<int64_t>{6, 7}));
  EXPECT_EQ(nested.tail, (std::vector<int64_t>{4, 5}));
  // Re-ranking: "lost" are the ranks below the new cut and above the old size, so with 9 back in
  // and 8 still out, 7 is neither kept nor lost.
  const KcdCondensation again = kcd_condense(scores, all.keep, 0.4, 3, false);
  EXPECT_EQ(again.keep, (std::vector<int64_t>{9, 0, 1, 2}));
  EXPECT_EQ(again.lost, (std::vector<int64_t>{3, 4}));
}

TEST(KcdCondense, NothingDroppedAtTheFloorMeansNothingToMix) {
  const std::vector<double> scores = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
  const KcdCondensation c = kcd_condense(scores, {0, 1, 2, 3, 4, 5, 6}, 0.7, 6, false);
  EXPECT_EQ(c.keep, (std::vector<int64_t>{9, 8, 7, 6, 5, 4, 3}));  // floor 7 reached: same size
  EXPECT_TRUE(c.lost.empty());
  EXPECT_TRUE(c.tail.empty());  // the code's remain[-0:] would be the whole kept set
}

TEST(KcdMix, WeightsRampFromOneTo0Point70012OverA2500Tail) {
  const auto w = kcd_mix_weights(2500, 0.3);
  ASSERT_EQ(w.size(), 2500u);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_NEAR(w[2499], 0.70012, 1e-6);
  EXPECT_NEAR(1.0f - w[2499], 0.29988, 1e-6);
  EXPECT_NEAR(w[1250], 0.85, 1e-6);
  for (size_t j = 1; j < w.size(); ++j) ASSERT_LE(w[j], w[j - 1]) << j;
  // The code's float32 expression, each step kept apart by volatile.
  for (int64_t j = 0; j < 2500; j += 7) {
    volatile float ratio = (2500.0f - static_cast<float>(j)) / 2500.0f;
    volatile float scaled = 0.3f * ratio;
    volatile float expected = scaled + 0.7f;
    ASSERT_EQ(w[j], expected) << j;
  }
  EXPECT_TRUE(kcd_mix_weights(0, 0.3).empty());
  const auto half = kcd_mix_weights(4, 0.5);  // 1, 0.875, 0.75, 0.625
  EXPECT_EQ(half, (std::vector<float>{1.0f, 0.875f, 0.75f, 0.625f}));
}

// --- the plugin, driven by hand ------------------------------------------------------------------

// N images of 1x4x4 with distinct pixel patterns, and a tiny test set.
std::shared_ptr<data::ImageSet> pattern_set(int64_t n, int64_t side = 4, uint32_t salt = 0) {
  std::vector<uint8_t> pixels(static_cast<size_t>(n * side * side));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 10;
    for (int64_t p = 0; p < side * side; ++p) {
      pixels[i * side * side + p] =
          static_cast<uint8_t>((37 * i + 11 * p + 3 * (i * p % 7) + salt) % 256);
    }
  }
  return std::make_shared<data::ImageSet>(n, 1, side, side, pixels, labels, 10);
}

TrainerOptions plain_options(const std::string& dir, int64_t epochs) {
  TrainerOptions o;
  o.run_dir = dir;
  o.epochs = epochs;
  o.batch_size = 16;
  o.eval_batch_size = 64;
  o.seed = 3;
  o.quiet = true;
  o.prefetch_batches = 0;
  return o;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("retort_kcd_test_" + name);
  fs::remove_all(dir);
  return dir;
}

// One hand-fed epoch: sample i of `indices` gets two-class logits (0, gap[i]).
void feed_epoch(KcdPlugin& kcd, Trainer& trainer, int64_t epoch,
                const std::vector<int64_t>& indices, const std::vector<float>& gaps) {
  kcd.on_epoch_begin(trainer, epoch);
  std::vector<float> logits;
  for (float g : gaps) logits.insert(logits.end(), {0.0f, g});
  const int64_t b = static_cast<int64_t>(indices.size());
  data::Batch batch{Tensor(), Tensor::from_vector<int64_t>({}, {0}),
                    Tensor::from_vector(indices, {b})};
  kcd.on_step(trainer, batch, Tensor::from_vector(logits, {b, 2}));
  kcd.on_epoch_end(trainer, epoch);
}

// The expected result of mixing, one byte at a time in float32 (no FMA), on a copy.
void reference_mix(std::vector<uint8_t>& pixels, int64_t numel, int64_t dst, int64_t src, float wd,
                   float ws) {
  for (int64_t k = 0; k < numel; ++k) {
    volatile float a = wd * static_cast<float>(pixels[dst * numel + k]);
    volatile float b = ws * static_cast<float>(pixels[src * numel + k]);
    volatile float sum = a + b;
    pixels[dst * numel + k] = static_cast<uint8_t>(std::min(static_cast<float>(sum), 255.0f));
  }
}

struct HandRun {
  std::shared_ptr<data::ImageSet> set;
  std::unique_ptr<Trainer> trainer;
};

HandRun hand_run(int64_t n, int64_t epochs) {
  HandRun r;
  r.set = pattern_set(n);
  r.trainer = std::make_unique<Trainer>(nn::create_model("resnet8", {1, 10, 0}), r.set,
                                        pattern_set(4), std::make_shared<CrossEntropyObjective>(),
                                        plain_options(fresh_dir("hand").string(), epochs));
  return r;
}

TEST(KcdPlugin, EStepRecordsEntropyPerOriginalIndex) {
  HandRun r = hand_run(6, 10);
  KcdOptions o;
  o.period = 5;
  KcdPlugin kcd(o);
  kcd.on_epoch_begin(*r.trainer, 1);
  // Sample 4 twice (the last value wins), 3 and 5 never; 2 gets a large gap, so a tiny entropy
  // (counted as seen only when it is above 0, as the code's R > 0).
  const std::vector<int64_t> idx = {0, 4, 1, 4, 2};
  const Tensor logits = Tensor::from_vector<float>({0, 0, 0, 9, 0, 1, 0, 0, 0, 30}, {5, 2});
  kcd.on_step(*r.trainer, data::Batch{Tensor(), Tensor(), Tensor::from_vector(idx, {5})}, logits);
  const auto h = softmax_entropy(logits).to_vector<float>();
  const auto& column = kcd.current_column();
  EXPECT_EQ(column[0], h[0]);
  EXPECT_NEAR(column[0], std::log(2.0), 1e-6);
  EXPECT_EQ(column[1], h[2]);
  EXPECT_EQ(column[4], h[3]);  // last write
  EXPECT_EQ(column[2], h[4]);
  EXPECT_EQ(column[3], -1.0f);
  EXPECT_EQ(column[5], -1.0f);
  kcd.on_epoch_end(*r.trainer, 1);
  EXPECT_EQ(kcd.seen_counts(), (std::vector<int64_t>{1, 1, h[4] > 0 ? 1 : 0, 0, 1, 0}));
  EXPECT_DOUBLE_EQ(kcd.value_sums()[0], static_cast<double>(h[0]));
  EXPECT_EQ(kcd.value_sums()[3], 0.0);
  EXPECT_TRUE(std::all_of(column.begin(), column.end(), [](float v) { return v == -1.0f; }));
  EXPECT_EQ(kcd.kept().size(), 6u);  // period 5: no condensation yet
}

// 12 samples, threshold 0.5, 2 steps: step 3, floor 6. Period 1 over 10 epochs. Sample i's gap is
// 0.5 i, so entropy falls with i and the rank is 0, 1, 2, ...
TEST(KcdPlugin, CondensesMixesTheTailAndStopsAtTheFloor) {
  HandRun r = hand_run(12, 10);
  KcdOptions o;
  o.period = 1;
  o.threshold = 0.5;
  o.n_steps = 2;
  KcdPlugin kcd(o);
  std::vector<uint8_t> expected = r.set->pixels();
  const int64_t numel = r.set->image_numel();
  auto gaps_of = [](const std::vector<int64_t>& idx) {
    std::vector<float> g;
    for (int64_t i : idx) g.push_back(0.5f * static_cast<float>(i));
    return g;
  };

  std::vector<int64_t> all(12);
  std::iota(all.begin(), all.end(), 0);
  feed_epoch(kcd, *r.trainer, 1, all, gaps_of(all));
  EXPECT_EQ(kcd.kept(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(r.trainer->train_loader().indices(), kcd.kept());
  // Tail 6, 7, 8 mixed with lost 9, 10, 11, weights 1, 0.9, 0.8 on the kept image.
  const auto w = kcd_mix_weights(3, 0.3);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_NEAR(w[1], 0.9, 1e-6);
  EXPECT_NEAR(w[2], 0.8, 1e-6);
  for (int j = 0; j < 3; ++j) reference_mix(expected, numel, 6 + j, 9 + j, w[j], 1.0f - w[j]);
  EXPECT_EQ(r.set->pixels(), expected);
  EXPECT_NE(r.set->pixels(), pattern_set(12)->pixels());
  EXPECT_EQ(kcd.mix_count(), 3);
  EXPECT_EQ(kcd.mix_destinations(), (std::vector<int64_t>{6, 7, 8}));

  // Epoch 2 sees the kept nine only: kept samples now have F = 2 and outrank the dropped ones.
  const std::vector<int64_t> kept1 = kcd.kept();
  feed_epoch(kcd, *r.trainer, 2, kept1, gaps_of(kept1));
  EXPECT_EQ(kcd.kept(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  // Lost 6, 7, 8 (already mixed themselves) go into tail 3, 4, 5.
  for (int j = 0; j < 3; ++j) reference_mix(expected, numel, 3 + j, 6 + j, w[j], 1.0f - w[j]);
  EXPECT_EQ(r.set->pixels(), expected);
  EXPECT_EQ(kcd.mix_count(), 6);
  EXPECT_EQ(kcd.seen_counts()[9], 1);
  EXPECT_EQ(kcd.seen_counts()[3], 2);

  // Floor reached: epoch 3's condensation drops nothing and mixes nothing.
  const std::vector<int64_t> kept2 = kcd.kept();
  feed_epoch(kcd, *r.trainer, 3, kept2, gaps_of(kept2));
  EXPECT_EQ(kcd.kept().size(), 6u);
  EXPECT_EQ(kcd.mix_count(), 6);
  EXPECT_EQ(r.set->pixels(), expected);
  EXPECT_EQ(kcd.condensations(), 3);
  const auto fields = kcd.log_fields();
  ASSERT_EQ(fields.size(), 2u);
  EXPECT_EQ(fields[0], (std::pair<std::string, double>{"kept", 6.0}));
  EXPECT_EQ(fields[1], (std::pair<std::string, double>{"mixed", 6.0}));
}

TEST(KcdPlugin, AdditiveVariantAddsTheLostImage) {
  HandRun r = hand_run(12, 10);
  KcdOptions o;
  o.period = 1;
  o.threshold = 0.5;
  o.n_steps = 2;
  o.additive = true;
  KcdPlugin kcd(o);
  // Image 8 (the bottom of the tail, eps 0.2) is bright, so the sum overflows and must clamp.
  std::fill_n(r.set->mutable_pixels().begin() + 8 * 16, 16, uint8_t{250});
  const std::vector<uint8_t> before = r.set->pixels();
  std::vector<uint8_t> expected = before;
  std::vector<int64_t> all(12);
  std::iota(all.begin(), all.end(), 0);
  std::vector<float> gaps;
  for (int64_t i : all) gaps.push_back(0.5f * static_cast<float>(i));
  feed_epoch(kcd, *r.trainer, 1, all, gaps);
  // x_tail + eps x_lost with eps = 1 - w: 0, 0.1, 0.2, clamped to 255.
  const auto w = kcd_mix_weights(3, 0.3);
  for (int j = 0; j < 3; ++j) reference_mix(expected, 16, 6 + j, 9 + j, 1.0f, 1.0f - w[j]);
  EXPECT_EQ(r.set->pixels(), expected);
  // Hand check: image 7 byte 0 is (37 * 7) % 256 = 3, image 10 byte 0 is 114; eps about 0.1.
  EXPECT_EQ(r.set->pixels()[7 * 16], 14);
  // Image 8 plus 0.2 of image 11 clamps to 255 wherever image 11's byte is at least 25.
  int64_t clamped = 0;
  for (int64_t k = 0; k < 16; ++k) {
    const uint8_t lost = before[11 * 16 + k];
    EXPECT_EQ(r.set->pixels()[8 * 16 + k], lost >= 25 ? 255 : 250 + static_cast<int>(0.2f * lost))
        << "byte " << k;
    clamped += lost >= 25;
  }
  EXPECT_GT(clamped, 8);
}

TEST(KcdPlugin, WithoutMixingOnlyDrops) {
  HandRun r = hand_run(12, 10);
  KcdOptions o;
  o.period = 1;
  o.threshold = 0.5;
  o.n_steps = 2;
  o.mixing = false;  // the code's v2
  KcdPlugin kcd(o);
  std::vector<int64_t> all(12);
  std::iota(all.begin(), all.end(), 0);
  feed_epoch(kcd, *r.trainer, 1, all, std::vector<float>(12, 1.0f));
  EXPECT_EQ(kcd.kept(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));  // ties: by index
  EXPECT_EQ(kcd.mix_count(), 0);
  EXPECT_EQ(r.set->pixels(), pattern_set(12)->pixels());
  const auto state = kcd.state();
  EXPECT_TRUE(
      std::none_of(state.begin(), state.end(), [](const auto& e) { return e.first == "mix_dst"; }));
}

// --- the plugin in a real Trainer ----------------------------------------------------------------

// 96 images of 1x12x12, 4 epochs with period 1, threshold 0.5 over 4 steps: step 12, floor 48,
// so the epochs train on 96, 84, 72 and 60 samples.
KcdOptions trainer_kcd_options() {
  KcdOptions o;
  o.period = 1;
  o.threshold = 0.5;
  o.n_steps = 4;
  return o;
}

struct TrainerRun {
  std::shared_ptr<nn::Module> model;
  std::shared_ptr<data::ImageSet> train;
  std::shared_ptr<KcdPlugin> kcd;
  std::unique_ptr<Trainer> trainer;
};

TrainerRun make_run(const fs::path& dir, bool resume, KcdOptions o = trainer_kcd_options(),
                    uint64_t model_seed = 0) {
  TrainerRun r;
  r.model = nn::create_model("resnet8", {1, 10, model_seed});
  r.train = pattern_set(96, 12);
  r.kcd = std::make_shared<KcdPlugin>(o);
  TrainerOptions t = plain_options(dir.string(), 4);
  t.resume = resume;
  t.augment.crop_padding = 1;
  t.augment.horizontal_flip = true;
  r.trainer = std::make_unique<Trainer>(r.model, r.train, pattern_set(32, 12, 5),
                                        std::make_shared<CrossEntropyObjective>(), t);
  r.trainer->add_plugin(r.kcd);
  return r;
}

TEST(KcdPlugin, TrainerRunShrinksOnScheduleAndResumesBitIdentically) {
  set_num_threads(1);
  const fs::path straight = fresh_dir("straight"), resumed = fresh_dir("resumed");
  TrainerRun a = make_run(straight, false);
  const RunReport full = a.trainer->run();

  ASSERT_EQ(full.history.size(), 4u);
  const int64_t sizes[4] = {96, 84, 72, 60};
  for (int e = 0; e < 4; ++e) {
    EXPECT_EQ(full.history[e].samples, sizes[e]) << "epoch " << e + 1;
    ASSERT_EQ(full.history[e].extra.size(), 2u);
    EXPECT_EQ(full.history[e].extra[0].second, e < 3 ? sizes[e + 1] : 60);  // kept
    EXPECT_EQ(full.history[e].extra[1].second, 12 * std::min(e + 1, 3));    // mixed
  }
  EXPECT_EQ(full.sample_passes, kcd_sample_passes(96, 4, 1, 0.5, 4));
  EXPECT_EQ(a.trainer->train_loader().indices(), a.kcd->kept());
  EXPECT_EQ(a.kcd->kept().size(), 60u);
  // Pixels: only mixed tail images changed, and some did.
  const auto original = pattern_set(96, 12)->pixels();
  const std::set<int64_t> dsts(a.kcd->mix_destinations().begin(), a.kcd->mix_destinations().end());
  int64_t changed = 0;
  for (int64_t i = 0; i < 96; ++i) {
    const bool differs = !std::equal(original.begin() + i * 144, original.begin() + (i + 1) * 144,
                                     a.train->pixels().begin() + i * 144);
    if (differs) {
      ++changed;
      EXPECT_TRUE(dsts.count(i)) << "image " << i << " changed but was never a mix target";
    }
  }
  EXPECT_GT(changed, 12);

  // Interrupted after epoch 2, resumed with a fresh model, plugin and unmixed training set.
  {
    TrainerRun first = make_run(resumed, false);
    first.trainer->run(/*stop_after_epoch=*/2);
    EXPECT_EQ(first.kcd->kept().size(), 72u);
  }
  TrainerRun b = make_run(resumed, true, trainer_kcd_options(), /*model_seed=*/99);
  const RunReport rest = b.trainer->run();
  EXPECT_EQ(test::weight_bytes(*a.model), test::weight_bytes(*b.model));
  EXPECT_EQ(a.kcd->kept(), b.kcd->kept());
  EXPECT_EQ(a.train->pixels(), b.train->pixels());
  EXPECT_EQ(a.kcd->value_sums(), b.kcd->value_sums());
  EXPECT_EQ(a.kcd->seen_counts(), b.kcd->seen_counts());
  EXPECT_EQ(a.kcd->mix_count(), b.kcd->mix_count());
  EXPECT_EQ(b.trainer->train_loader().indices(), b.kcd->kept());
  EXPECT_EQ(rest.sample_passes, full.sample_passes);
  EXPECT_EQ(rest.last_acc, full.last_acc);
}

TEST(KcdPlugin, ResumeRefusesOtherPixelsOrOptions) {
  set_num_threads(1);
  const fs::path dir = fresh_dir("refuse");
  {
    TrainerRun first = make_run(dir, false);
    first.trainer->run(/*stop_after_epoch=*/1);
    ASSERT_EQ(first.kcd->mix_count(), 12);
  }
  {
    // Handed the already-mixed pixels instead of the original ones.
    TrainerRun mixed = make_run(dir, true);
    for (auto& p : mixed.train->mutable_pixels()) p = static_cast<uint8_t>(p ^ 1);
    EXPECT_THROW(mixed.trainer->run(2), std::runtime_error);
  }
  {
    KcdOptions o = trainer_kcd_options();
    o.threshold = 0.6;
    TrainerRun other = make_run(dir, true, o);
    try {
      other.trainer->run(2);
      FAIL() << "expected an error";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("threshold"), std::string::npos) << e.what();
    }
  }
  TrainerRun same = make_run(dir, true);
  EXPECT_NO_THROW(same.trainer->run(2));
  EXPECT_EQ(same.kcd->kept().size(), 72u);
}

}  // namespace
}  // namespace retort::distill
