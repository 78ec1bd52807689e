// Tests of slimmable networks: sub-network equivalence, joint gradients, sizes, teacher loading.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "nn/init.h"
#include "nn/models/registry.h"
#include "nn/models/slimmable_registry.h"
#include "nn/models/summary.h"
#include "nn/slimmable.h"
#include "nn/slimmable_model.h"
#include "tests/nn/nn_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::nn {
namespace {

// Every element as a double, whatever the dtype (i64 counters included).
std::vector<double> values(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: {
      const std::vector<float> v = t.to_vector<float>();
      return {v.begin(), v.end()};
    }
    case DType::f64:
      return t.to_vector<double>();
    case DType::i64: {
      const std::vector<int64_t> v = t.to_vector<int64_t>();
      std::vector<double> out;
      for (int64_t x : v) out.push_back(static_cast<double>(x));
      return out;
    }
    default:
      throw std::invalid_argument("values: unsupported dtype");
  }
}

// Both state dicts have the same names in the same order, the same shapes and identical values.
::testing::AssertionResult same_state(const NamedTensors& actual, const NamedTensors& expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << actual.size() << " entries vs " << expected.size() << " expected";
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    if (actual[i].first != expected[i].first) {
      return ::testing::AssertionFailure()
             << "entry " << i << ": " << actual[i].first << " vs " << expected[i].first;
    }
    if (actual[i].second.shape() != expected[i].second.shape() ||
        values(actual[i].second) != values(expected[i].second)) {
      return ::testing::AssertionFailure() << actual[i].first << " differs";
    }
  }
  return ::testing::AssertionSuccess();
}

// Random BN affine parameters and running statistics, so that a wrong BN or a wrong slice shows.
void randomize_batch_norms(Module& model, uint64_t seed) {
  Generator gen(seed);
  for (auto& [name, m] : model.named_modules()) {
    if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) {
      init::uniform_(bn->weight(), 0.5, 1.5, gen);
      init::uniform_(bn->bias(), -0.5, 0.5, gen);
      init::uniform_(bn->running_mean(), -0.5, 0.5, gen);
      init::uniform_(bn->running_var(), 0.5, 2.0, gen);
    }
  }
}

Tensor random_input(uint64_t seed, int64_t batch = 4, int64_t size = 16) {
  Generator gen(seed);
  return Tensor::randn({batch, 3, size, size}, gen, 0.0, 1.0, DType::f64);
}

// The gradients of the parameters that have one, under the parameters' names.
NamedTensors gradients(const Module& m) {
  NamedTensors out;
  for (const auto& [name, p] : m.named_parameters()) {
    if (p.grad().defined()) out.emplace_back(name, p.grad());
  }
  return out;
}

const char* const kEquivalenceModels[] = {"resnet8", "wrn_16_2", "MobileNetV2"};

// (a) The width-w sub-network computes exactly what an independent plain width-w model computes
// with the sliced weights and that width's BN copied in: outputs, parameter gradients and the
// updated running statistics, in training and in evaluation mode.
TEST(Slimmable, SubNetworkMatchesIndependentPlainModelBitForBit) {
  for (const char* name : kEquivalenceModels) {
    auto model = create_slimmable_model(name, {.seed = 1});
    randomize_batch_norms(*model, 11);
    model->to(DType::f64);
    const Tensor x = random_input(21);
    for (int64_t k = 0; k < model->num_widths(); ++k) {
      for (bool training : {false, true}) {
        SCOPED_TRACE(std::string(name) + " width " + std::to_string(model->widths()[k]) +
                     (training ? " train" : " eval"));
        auto plain = create_width_model(name, {.seed = 2}, model->widths()[k]);
        plain->to(DType::f64);
        model->copy_width_to(*plain, k);
        ASSERT_TRUE(same_state(plain->state_dict(), model->width_state_dict(k)));
        model->set_width(k);
        model->train(training);
        plain->train(training);
        model->zero_grad();
        const Tensor y_slim = (*model)(x);
        const Tensor y_plain = (*plain)(x);
        ASSERT_EQ(y_slim.shape(), (Shape{4, 100}));
        EXPECT_EQ(values(y_slim), values(y_plain));
        if (!training) continue;
        // Running statistics moved identically (and only the active width's).
        EXPECT_TRUE(same_state(model->width_state_dict(k), plain->state_dict()));
        Generator gen(31);
        const Tensor r = Tensor::randn(y_slim.shape(), gen, 0.0, 1.0, DType::f64);
        sum(y_slim * r).backward();
        sum(y_plain * r).backward();
        EXPECT_TRUE(same_state(model->slice_for_width(gradients(*model), k), gradients(*plain)));
      }
    }
  }
}

TEST(Slimmable, SwitchingWidthTouchesOnlyTheActiveBatchNorm) {
  auto model = create_slimmable_model("resnet8", {.seed = 1});
  model->to(DType::f64);
  const NamedTensors before = model->width_state_dict(3);
  model->set_width(1);
  (*model)(random_input(5));
  EXPECT_TRUE(same_state(model->width_state_dict(3), before));
  for (const auto& [name, t] : model->width_state_dict(1)) {
    if (name.ends_with("num_batches_tracked")) {
      EXPECT_EQ(t.item(), 1.0) << name;
    }
  }
  for (const auto& [name, t] : model->width_state_dict(0)) {
    if (name.ends_with("num_batches_tracked")) {
      EXPECT_EQ(t.item(), 0.0) << name;
    }
  }
  EXPECT_EQ(model->width_index(), 1);
  EXPECT_EQ(model->width(), 0.5);
}

// (b) Joint training: all widths widest-first on one batch, losses summed, one backward. The
// shared weight's gradient is the sum of the per-width gradients; each width contributes only to
// its leading block, so the leading slice hears from every width and the trailing channels only
// from the wider ones.
TEST(Slimmable, JointBackwardSumsPerWidthGradientsOnTheSharedWeights) {
  auto model = create_slimmable_model("resnet8", {.seed = 3});
  randomize_batch_norms(*model, 13);
  model->to(DType::f64);
  model->train();
  const Tensor x = random_input(23);
  const Tensor labels = Tensor::from_vector<int64_t>({3, 97, 42, 0}, {4});
  const std::string shared = "layer1.0.conv1.weight";  // (16, 16, 3, 3), blocks 4 / 8 / 12 / 16
  auto grad_of = [&](const std::string& param) {
    for (const auto& [name, p] : model->named_parameters()) {
      if (name == param) return values(p.grad());
    }
    throw std::logic_error("no parameter " + param);
  };
  const int64_t n = model->num_widths();

  std::vector<std::vector<double>> alone(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    model->zero_grad();
    model->set_width(k);
    cross_entropy((*model)(x), labels).backward();
    alone[static_cast<size_t>(k)] = grad_of(shared);
  }

  model->zero_grad();
  Tensor total;
  for (int64_t k = n - 1; k >= 0; --k) {
    model->set_width(k);
    const Tensor loss = cross_entropy((*model)(x), labels);
    total = total.defined() ? total + loss : loss;
  }
  total.backward();
  const std::vector<double> joint = grad_of(shared);

  model->zero_grad();
  model->set_width(2);
  const JointBackwardResult helper = joint_backward(*model, x, label_cross_entropy_loss(labels));
  EXPECT_EQ(model->width_index(), 2);  // restored
  const std::vector<double> joint_helper = grad_of(shared);

  const int64_t out_c = 16, in_c = 16, kk = 9;
  const std::vector<int64_t> block = {4, 8, 12, 16};
  std::vector<int64_t> contributors_seen(static_cast<size_t>(n + 1), 0);
  for (int64_t o = 0; o < out_c; ++o) {
    for (int64_t i = 0; i < in_c; ++i) {
      for (int64_t e = 0; e < kk; ++e) {
        const size_t idx = static_cast<size_t>((o * in_c + i) * kk + e);
        double expected = 0.0, magnitude = 0.0;
        int64_t contributors = 0;
        for (int64_t k = 0; k < n; ++k) {
          const double g = alone[static_cast<size_t>(k)][idx];
          const bool inside =
              o < block[static_cast<size_t>(k)] && i < block[static_cast<size_t>(k)];
          if (inside) {
            EXPECT_NE(g, 0.0) << "width " << k << " misses (" << o << ", " << i << ")";
            ++contributors;
          } else {
            EXPECT_EQ(g, 0.0) << "width " << k << " reaches (" << o << ", " << i << ")";
          }
          expected += g;
          magnitude += std::abs(g);
        }
        ++contributors_seen[static_cast<size_t>(contributors)];
        // The widest width reaches every element; the first block of 4 hears from all widths.
        const int64_t edge = std::max(o, i);
        EXPECT_EQ(contributors, edge < 4 ? 4 : edge < 8 ? 3 : edge < 12 ? 2 : 1);
        const double tol = test::kReferenceF64Rel * magnitude + 1e-300;
        ASSERT_NEAR(joint[idx], expected, tol) << "(" << o << ", " << i << ", " << e << ")";
        ASSERT_NEAR(joint_helper[idx], expected, tol) << "(" << o << ", " << i << ", " << e << ")";
      }
    }
  }
  EXPECT_EQ(contributors_seen[0], 0);
  EXPECT_EQ(contributors_seen[4], 4 * 4 * kk);

  // The helper's per-width losses are those of each width alone.
  for (int64_t k = 0; k < n; ++k) {
    model->set_width(k);
    NoGradGuard no_grad;
    EXPECT_NEAR(helper.losses[static_cast<size_t>(k)], cross_entropy((*model)(x), labels).item(),
                1e-12);
  }
}

TEST(Slimmable, InplaceDistillationUsesTheDetachedWidestSoftmax) {
  auto model = create_slimmable_model("resnet8", {.seed = 4});
  model->to(DType::f64);
  const Tensor x = random_input(24);
  const Tensor labels = Tensor::from_vector<int64_t>({1, 2, 3, 4}, {4});
  model->zero_grad();
  const JointBackwardResult r = joint_backward(*model, x, inplace_distillation_loss(labels));
  const Tensor& widest = r.logits.back();
  EXPECT_NEAR(r.losses.back(), cross_entropy(widest, labels).item(), 1e-12);
  for (size_t k = 0; k + 1 < r.logits.size(); ++k) {
    const double soft_ce = -mean(sum(softmax(widest) * log_softmax(r.logits[k]), {1})).item();
    EXPECT_NEAR(r.losses[k], soft_ce, 1e-12);
  }
}

// (c) spec/distillation.md 3.4's table: params incl. the width's own BN (gamma and beta; the
// running statistics are buffers), i.e. the plain sub-network's parameter count, and MACs for
// one 32x32 image. Exact counts from the spec's counting script with int(c*w) channels; the
// table rounds to 0.001 M parameters and 0.1 M MACs.
TEST(Slimmable, SubNetworkSizesMatchTheSpecTable) {
  struct Row {
    const char* name;
    int64_t params[4];
    double params_m[4];
    double macs_m[4];
  };
  const Row rows[] = {
      {"resnet32x4",
       {471532, 1867636, 4188412, 7433860},
       {0.472, 1.868, 4.188, 7.434},
       {67.9, 271.0, 609.4, 1083.0}},
      {"wrn_40_2",
       {144536, 568524, 1272064, 2255156},
       {0.145, 0.569, 1.272, 2.255},
       {20.6, 82.0, 184.4, 327.6}},
      {"resnet56",
       {56024, 218252, 486784, 861620},
       {0.056, 0.218, 0.487, 0.862},
       {7.9, 31.6, 70.8, 125.8}},
      {"resnet110",
       {111464, 437996, 979696, 1736564},
       {0.111, 0.438, 0.980, 1.737},
       {15.9, 63.4, 142.5, 253.2}},
  };
  for (const Row& row : rows) {
    auto model = create_slimmable_model(row.name);
    for (int64_t k = 0; k < 4; ++k) {
      SCOPED_TRACE(std::string(row.name) + " width " + std::to_string(model->widths()[k]));
      const int64_t params = model->num_parameters_at(k);
      EXPECT_EQ(params, row.params[k]);
      EXPECT_NEAR(static_cast<double>(params) / 1e6, row.params_m[k], 0.0005 + 1e-9);
      auto plain = create_width_model(row.name, {}, model->widths()[k]);
      EXPECT_EQ(plain->num_parameters(), params);
      const ModelSummary s = summarize(*plain, {3, 32, 32});
      EXPECT_NEAR(static_cast<double>(s.total_macs) / 1e6, row.macs_m[k], 0.05 + 1e-9);
    }
  }
  // The spec's channel lists.
  auto first_convs = [](const std::string& name, int64_t k) {
    auto m = create_slimmable_model(name);
    std::vector<int64_t> out;
    for (auto& [path, mod] : m->named_modules()) {
      const auto* conv = dynamic_cast<const SlimmableConv2d*>(mod);
      if (conv && (path == "conv1" || path.ends_with(".0.conv1"))) {
        out.push_back(conv->out_channels_at(k));
      }
    }
    return out;
  };
  EXPECT_EQ(first_convs("resnet32x4", 0), (std::vector<int64_t>{8, 16, 32, 64}));
  EXPECT_EQ(first_convs("resnet32x4", 1), (std::vector<int64_t>{16, 32, 64, 128}));
  EXPECT_EQ(first_convs("resnet32x4", 2), (std::vector<int64_t>{24, 48, 96, 192}));
  EXPECT_EQ(first_convs("wrn_40_2", 0), (std::vector<int64_t>{4, 8, 16, 32}));
  EXPECT_EQ(first_convs("wrn_40_2", 2), (std::vector<int64_t>{12, 24, 48, 96}));
}

// Spec 3.4 item 2: every conv and BN has int(c*w) channels of its full count c (MobileNetV2's
// hidden in*t and its 1280 head included); the stem keeps its input, the classifier its classes.
TEST(Slimmable, EveryLayerHasIntCTimesWChannels) {
  for (const std::string& name : slimmable_model_names()) {
    SCOPED_TRACE(name);
    auto model = create_slimmable_model(name);
    for (int64_t k = 0; k < model->num_widths(); ++k) {
      const double w = model->widths()[k];
      for (auto& [path, m] : model->named_modules()) {
        if (const auto* conv = dynamic_cast<const SlimmableConv2d*>(m)) {
          EXPECT_EQ(conv->out_channels_at(k), scale_channels(conv->out_channels(), w)) << path;
          const int64_t in = path == "conv1" || path == "conv1.0"
                                 ? conv->in_channels()
                                 : scale_channels(conv->in_channels(), w);
          EXPECT_EQ(conv->in_channels_at(k), in) << path;
          EXPECT_EQ(conv->groups_at(k), conv->depthwise() ? in : 1) << path;
        } else if (const auto* bn = dynamic_cast<const SwitchableBatchNorm2d*>(m)) {
          EXPECT_EQ(bn->num_features_at(k),
                    scale_channels(bn->num_features_at(model->num_widths() - 1), w))
              << path;
        } else if (const auto* fc = dynamic_cast<const SlimmableLinear*>(m)) {
          EXPECT_EQ(fc->in_features_at(k), scale_channels(fc->in_features(), w)) << path;
          EXPECT_EQ(fc->out_features(), 100) << path;
        }
      }
    }
  }
}

// Same names as the full model, and the same initial weights for the same seed.
TEST(Slimmable, WidestSubNetworkIsTheFullModelAtInitialisation) {
  EXPECT_EQ(slimmable_model_names(), model_names());
  for (const std::string& name : model_names()) {
    SCOPED_TRACE(name);
    auto full = create_model(name, {.seed = 5});
    auto model = create_slimmable_model(name, {.seed = 5});
    EXPECT_TRUE(same_state(model->width_state_dict(model->num_widths() - 1), full->state_dict()));
    EXPECT_TRUE(
        same_state(create_width_model(name, {.seed = 5}, 1.0)->state_dict(), full->state_dict()));
  }
}

TEST(Slimmable, OtherInputsAndClassesChangeOnlyStemAndClassifier) {
  auto model = create_slimmable_model("wrn_16_1", {.in_channels = 1, .num_classes = 10});
  Generator gen(6);
  const Tensor x = Tensor::randn({2, 1, 28, 28}, gen);
  for (int64_t k = 0; k < model->num_widths(); ++k) {
    model->set_width(k);
    EXPECT_EQ((*model)(x).shape(), (Shape{2, 10}));
  }
  model->set_width(0);
  EXPECT_THROW((*model)(Tensor::randn({2, 3, 28, 28}, gen)), std::invalid_argument);
}

// (d) A slimmable model loaded from a trained full-width teacher: the widest width computes
// exactly what the teacher computes; narrower BNs start from the teacher's leading slices.
TEST(Slimmable, LoadFullTeacherMakesTheWidestWidthTheTeacher) {
  for (const char* name : kEquivalenceModels) {
    SCOPED_TRACE(name);
    auto teacher = create_model(name, {.seed = 7});
    randomize_batch_norms(*teacher, 17);
    teacher->to(DType::f64);
    (*teacher)(random_input(26));  // a training step's BN update: counters at 1
    auto model = create_slimmable_model(name, {.seed = 8});
    model->to(DType::f64);
    model->load_full_teacher(teacher->state_dict());
    const int64_t widest = model->num_widths() - 1;
    EXPECT_TRUE(same_state(model->width_state_dict(widest), teacher->state_dict()));
    // Narrower widths: the teacher's BN sliced, counter 0; conv weights are the shared ones.
    const NamedTensors narrow = model->width_state_dict(0);
    std::map<std::string, Tensor> full;
    for (const auto& [n, t] : teacher->state_dict()) full.emplace(n, t);
    for (const auto& [n, t] : narrow) {
      if (n.ends_with("num_batches_tracked")) {
        EXPECT_EQ(t.item(), 0.0) << n;
        continue;
      }
      Tensor source = full.at(n);
      for (int64_t d = 0; d < t.dim(); ++d) source = source.narrow(d, 0, t.size(d));
      EXPECT_EQ(values(t), values(source)) << n;
    }

    model->set_width(widest);
    const Tensor x = random_input(27);
    for (bool training : {false, true}) {
      model->train(training);
      teacher->train(training);
      EXPECT_EQ(values((*model)(x)), values((*teacher)(x))) << (training ? "train" : "eval");
    }
    EXPECT_TRUE(same_state(model->width_state_dict(widest), teacher->state_dict()));
  }
}

TEST(Slimmable, LoadFullTeacherRejectsAMismatchedStateWithoutWriting) {
  auto model = create_slimmable_model("resnet8", {.seed = 9});
  const NamedTensors before = model->width_state_dict(0);
  auto teacher = create_model("resnet8", {.seed = 10});

  NamedTensors missing = teacher->state_dict();
  missing.erase(missing.begin() + 1);  // bn1.weight
  try {
    model->load_full_teacher(missing);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("missing keys: bn1.weight"), std::string::npos)
        << e.what();
  }
  NamedTensors extra = teacher->state_dict();
  extra.emplace_back("head.weight", Tensor::zeros({2}));
  try {
    model->load_full_teacher(extra);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected keys: head.weight"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(model->load_full_teacher(create_model("resnet8x4")->state_dict()),
               std::invalid_argument);
  EXPECT_THROW(model->load_full_teacher(create_model("wrn_16_1")->state_dict()),
               std::invalid_argument);
  EXPECT_TRUE(same_state(model->width_state_dict(0), before));
}

// (e) Width indices outside the list, and width lists that cannot work, are clear errors.
TEST(Slimmable, BadWidthsAreClearErrors) {
  auto model = create_slimmable_model("resnet8");
  EXPECT_EQ(model->widths(), kDefaultSlimmableWidths);
  EXPECT_EQ(model->width_index(), 3);  // starts at the widest
  for (int64_t bad : {int64_t{4}, int64_t{-1}}) {
    try {
      model->set_width(bad);
      FAIL() << "no exception for " << bad;
    } catch (const std::out_of_range& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("width index " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("[0.25, 0.5, 0.75, 1]"), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(model->width_index(), 3);  // unchanged
  EXPECT_THROW(model->width_state_dict(4), std::out_of_range);
  EXPECT_THROW(model->num_parameters_at(-1), std::out_of_range);
  EXPECT_EQ(model->width_index_of(0.75), 2);
  EXPECT_THROW(model->width_index_of(0.3), std::invalid_argument);

  const std::vector<std::vector<double>> bad_lists = {
      {}, {0.5, 0.25, 1.0}, {0.5, 0.75}, {0.0, 1.0}, {0.5, 1.5}, {0.5, 0.5, 1.0}};
  for (const auto& widths : bad_lists) {
    EXPECT_THROW(create_slimmable_model("resnet8", {}, widths), std::invalid_argument);
  }
  // int(16 * 0.05) = 0 channels.
  EXPECT_THROW(create_slimmable_model("resnet8", {}, {0.05, 1.0}), std::invalid_argument);
  // int(8 * 0.15) = int(12 * 0.15) = 1: blocks.1.0 (8 -> 12, stride 1) would become residual.
  try {
    create_slimmable_model("MobileNetV2", {}, {0.15, 1.0});
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("residual structure"), std::string::npos) << e.what();
  }
  // Other lists work: the spec's fallback for 16-channel ResNets.
  auto three = create_slimmable_model("resnet56", {}, {0.5, 0.75, 1.0});
  EXPECT_EQ(three->num_widths(), 3);
  EXPECT_EQ(three->num_parameters_at(0), 218252);
  EXPECT_THROW(create_slimmable_model("resnet9"), std::invalid_argument);
  EXPECT_THROW(create_width_model("resnet8", {}, 0.0), std::invalid_argument);
}

}  // namespace
}  // namespace retort::nn
