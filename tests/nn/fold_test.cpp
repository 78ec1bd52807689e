// Batch-norm folding: folded vs plain evaluation forwards of every model, state untouched,
// training unchanged, slimmable widths, staleness, the declared pairs, and the CUDA variant.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "nn/fold.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/models/registry.h"
#include "nn/models/slimmable_registry.h"
#include "nn/optim.h"
#include "nn/slimmable.h"
#include "nn/slimmable_model.h"
#include "tests/cuda_test.h"
#include "tests/nn/nn_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::nn {
namespace {

constexpr int64_t kClasses = 10;

// Every state-dict tensor's bytes, in state-dict order: equal vectors mean bit-identical state.
std::vector<std::vector<uint8_t>> state_bytes(const Module& model) {
  std::vector<std::vector<uint8_t>> out;
  for (const auto& [name, t] : model.state_dict()) {
    const Tensor c = t.detach().contiguous().to(Device::cpu());  // host-readable
    const auto* p = static_cast<const uint8_t*>(c.raw_data());
    out.emplace_back(p, p + c.numel() * dtype_size(c.dtype()));
  }
  return out;
}

// Random BN affine parameters and running statistics (of every width's BN for slimmable
// models), so that a fold that ignores any of them, or uses another width's, changes the output.
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

Tensor random_input(uint64_t seed, DType dtype, int64_t batch = 2, int64_t size = 16) {
  Generator gen(seed);
  return Tensor::randn({batch, 3, size, size}, gen, 0.0, 1.0, dtype);
}

// The evaluation forward without gradients (how a teacher runs), as doubles.
std::vector<double> eval_logits(Module& model, const Tensor& x) {
  NoGradGuard no_grad;
  model.eval();
  return model(x).to(Device::cpu()).to(DType::f64).to_vector<double>();
}

// Folded against plain evaluation: float64 to rounding (kPathF64*), float32 within the f32
// parity tolerances. The absolute floor scales with the largest logit: deep models with random
// BN statistics reach logits of 1e6 (resnet110), and a logit near zero then carries the rounding
// of the large terms it was summed from.
// `differences` counts independent sources of f32 rounding (2: folding and another device).
::testing::AssertionResult folded_close(const std::vector<double>& folded,
                                        const std::vector<double>& plain, DType dtype,
                                        double differences = 1.0) {
  double largest = 1.0;
  for (double v : plain) largest = std::max(largest, std::abs(v));
  const bool f64 = dtype == DType::f64;
  return test::all_close(folded, plain,
                         differences * (f64 ? test::kPathF64Rel : test::kParityF32Rel),
                         differences * (f64 ? test::kPathF64Abs : test::kParityF32Abs) * largest);
}

std::shared_ptr<Module> prepared_model(const std::string& name, DType dtype, uint64_t seed = 1) {
  auto model = create_model(name, {.num_classes = kClasses, .seed = seed});
  randomize_batch_norms(*model, seed + 100);
  model->to(dtype);
  model->eval();
  return model;
}

bool is_batch_norm(const Module* m) {
  return dynamic_cast<const BatchNorm2d*>(m) != nullptr ||
         dynamic_cast<const SwitchableBatchNorm2d*>(m) != nullptr;
}

// Forward hooks on every BN-like module (BatchNorm2d outside switchable BNs, and
// SwitchableBatchNorm2d) that record, per module path, whether the BN handed its input back
// unchanged: the observable sign that it ran no batch_norm op.
class BatchNormProbe {
 public:
  explicit BatchNormProbe(Module& model) {
    std::set<const Module*> inner;  // the per-width BNs inside switchable BNs
    for (auto& [path, m] : model.named_modules()) {
      if (auto* sbn = dynamic_cast<SwitchableBatchNorm2d*>(m)) {
        for (auto& [sub, child] : sbn->named_modules()) {
          if (child != sbn) inner.insert(child);
        }
      }
    }
    for (auto& [path, m] : model.named_modules()) {
      if (!is_batch_norm(m) || inner.count(m)) continue;
      const std::string key = path;
      ids_.emplace_back(
          m, m->add_forward_hook([this, key](Module&, const Tensor& in, const Tensor& out) {
            (out.impl() == in.impl() ? skipped : ran).insert(key);
          }));
    }
  }
  ~BatchNormProbe() {
    for (auto& [m, id] : ids_) m->remove_forward_hook(id);
  }
  void clear() {
    skipped.clear();
    ran.clear();
  }
  std::set<std::string> skipped, ran;

 private:
  std::vector<std::pair<Module*, int64_t>> ids_;
};

std::set<std::string> bn_paths(const std::vector<ConvBnPairName>& pairs) {
  std::set<std::string> out;
  for (const auto& p : pairs) out.insert(p.bn);
  return out;
}

// --- path equivalence: every model of the registry ----------------------------------------------

TEST(Fold, FoldedEvalForwardEqualsPlainEvalForwardForEveryModel) {
  for (const std::string& name : model_names()) {
    for (DType dtype : {DType::f64, DType::f32}) {
      SCOPED_TRACE(name + " " + std::string(dtype_name(dtype)));
      auto model = prepared_model(name, dtype);
      const Tensor x = random_input(7, dtype);
      const std::vector<double> plain = eval_logits(*model, x);
      BatchNormProbe probe(*model);
      {
        BatchNormFold fold(model);
        ASSERT_FALSE(fold.pairs().empty());
        probe.clear();
        const std::vector<double> folded = eval_logits(*model, x);
        EXPECT_TRUE(folded_close(folded, plain, dtype));
        // Exactly the folded BNs skipped their op; every other BN ran it.
        EXPECT_EQ(probe.skipped, bn_paths(fold.pairs()));
        for (const std::string& bn : probe.ran) EXPECT_EQ(bn_paths(fold.pairs()).count(bn), 0u);
      }
      probe.clear();
      EXPECT_EQ(eval_logits(*model, x), plain) << "unfolding must restore the plain path exactly";
      EXPECT_TRUE(probe.skipped.empty());
    }
  }
}

TEST(Fold, FoldingLeavesTheStateDictBitIdentical) {
  for (const char* name : {"resnet8", "wrn_16_2", "MobileNetV2"}) {
    SCOPED_TRACE(name);
    auto model = prepared_model(name, DType::f32);
    const NamedTensors before = model->state_dict();
    const auto bytes = state_bytes(*model);
    {
      BatchNormFold fold(model);
      eval_logits(*model, random_input(3, DType::f32));
      fold.refresh();
      const NamedTensors during = model->state_dict();
      ASSERT_EQ(during.size(), before.size());
      for (size_t i = 0; i < before.size(); ++i) {
        EXPECT_EQ(during[i].first, before[i].first);
        EXPECT_EQ(during[i].second.impl(), before[i].second.impl()) << during[i].first;
      }
      EXPECT_EQ(state_bytes(*model), bytes);
    }
    EXPECT_EQ(state_bytes(*model), bytes);
    EXPECT_EQ(model->state_dict().size(), before.size());
  }
}

// Training mode ignores the fold: batch statistics, the same running-statistic updates and the
// same gradients as an unfolded twin, bit for bit; back in evaluation the fold picks up the new
// running statistics.
TEST(Fold, TrainingModeAfterFoldingBehavesAsUnfolded) {
  for (const char* name : {"resnet8", "wrn_16_2", "MobileNetV2"}) {
    SCOPED_TRACE(name);
    auto folded_model = prepared_model(name, DType::f64);
    auto plain_model = prepared_model(name, DType::f64);
    const Tensor x = random_input(9, DType::f64, 3);
    BatchNormFold fold(folded_model);
    eval_logits(*folded_model, x);  // the fold is computed
    folded_model->train();
    plain_model->train();
    const Tensor y_folded = (*folded_model)(x);
    const Tensor y_plain = (*plain_model)(x);
    EXPECT_EQ(y_folded.to_vector<double>(), y_plain.to_vector<double>());
    sum(y_folded).backward();
    sum(y_plain).backward();
    const NamedTensors pf = folded_model->named_parameters(), pp = plain_model->named_parameters();
    for (size_t i = 0; i < pf.size(); ++i) {
      ASSERT_TRUE(pf[i].second.grad().defined()) << pf[i].first;
      EXPECT_EQ(pf[i].second.grad().to_vector<double>(), pp[i].second.grad().to_vector<double>())
          << pf[i].first;
    }
    EXPECT_EQ(state_bytes(*folded_model), state_bytes(*plain_model));
    // Evaluation again: the running statistics moved, so the fold must be recomputed.
    EXPECT_TRUE(
        folded_close(eval_logits(*folded_model, x), eval_logits(*plain_model, x), DType::f64));
  }
}

// In evaluation with gradients on, folded weights would cut the parameters' gradients: the fold
// stands aside and the plain path runs.
TEST(Fold, EvaluationWithGradientsRunsThePlainPath) {
  auto model = prepared_model("resnet8", DType::f64);
  const Tensor x = random_input(4, DType::f64);
  BatchNormFold fold(model);
  BatchNormProbe probe(*model);
  model->eval();
  const Tensor y = (*model)(x);
  EXPECT_TRUE(probe.skipped.empty());
  sum(y).backward();
  for (const auto& [name, p] : model->named_parameters()) {
    EXPECT_TRUE(p.grad().defined()) << name;
  }
}

// --- slimmable models ----------------------------------------------------------------------------

TEST(Fold, SlimmableModelsFoldAtEveryWidthAndRefoldOnASwitch) {
  for (const char* name : {"resnet8", "resnet8x4", "wrn_16_2", "wrn_16_1", "MobileNetV2"}) {
    for (DType dtype : {DType::f64, DType::f32}) {
      SCOPED_TRACE(std::string(name) + " " + std::string(dtype_name(dtype)));
      auto model = create_slimmable_model(name, {.num_classes = kClasses, .seed = 2});
      randomize_batch_norms(*model, 12);
      model->to(dtype);
      const Tensor x = random_input(8, dtype);
      std::vector<std::vector<double>> plain;
      for (int64_t k = 0; k < model->num_widths(); ++k) {
        model->set_width(k);
        plain.push_back(eval_logits(*model, x));
      }
      BatchNormFold fold(model);
      BatchNormProbe probe(*model);
      // Narrow to wide and back: every switch must refold, never reuse another width's weights.
      for (int64_t k : {1, 0, 3, 2, 0}) {
        SCOPED_TRACE("width " + std::to_string(model->widths()[k]));
        model->set_width(k);
        probe.clear();
        EXPECT_TRUE(folded_close(eval_logits(*model, x), plain[k], dtype));
        EXPECT_EQ(probe.skipped, bn_paths(fold.pairs()));
      }
    }
  }
}

// The slimmable twin declares the same pairs as the plain model, with the same module paths.
TEST(Fold, SlimmableTwinsDeclareThePlainModelsPairs) {
  for (const std::string& name : model_names()) {
    SCOPED_TRACE(name);
    auto plain = create_model(name);
    auto slim = create_slimmable_model(name);
    EXPECT_EQ(conv_bn_pair_names(*slim), conv_bn_pair_names(*plain));
  }
}

// --- staleness -----------------------------------------------------------------------------------

TEST(Fold, ChangedWeightsOrStatisticsAreNeverServedStale) {
  auto model = prepared_model("resnet8", DType::f64, 1);
  auto other = prepared_model("resnet8", DType::f64, 5);  // different weights and statistics
  const Tensor x = random_input(6, DType::f64);
  BatchNormFold fold(model);
  auto expect_plain = [&](const char* what) {
    SCOPED_TRACE(what);
    std::vector<double> folded = eval_logits(*model, x);
    fold.unfold();
    const std::vector<double> plain = eval_logits(*model, x);
    fold = BatchNormFold(model);
    EXPECT_TRUE(folded_close(folded, plain, DType::f64));
  };
  expect_plain("initial");

  eval_logits(*model, x);
  model->load_state_dict(other->state_dict());
  expect_plain("after load_state_dict");

  eval_logits(*model, x);
  randomize_batch_norms(*model, 77);  // nn::init writes report themselves
  expect_plain("after re-initialising the BNs");

  // An optimiser step while the model stays in evaluation (frozen-BN fine-tuning).
  eval_logits(*model, x);
  SGD sgd(model->named_parameters(), {.lr = 0.5});
  sum((*model)(x)).backward();  // grad mode on: the plain path, with parameter gradients
  sgd.step();
  expect_plain("after an SGD step");

  // A dtype conversion replaces every storage.
  eval_logits(*model, x);
  model->to(DType::f32);
  {
    const Tensor x32 = x.to(DType::f32);
    const std::vector<double> folded = eval_logits(*model, x32);
    fold.unfold();
    const std::vector<double> plain = eval_logits(*model, x32);
    fold = BatchNormFold(model);
    EXPECT_TRUE(folded_close(folded, plain, DType::f32));
  }
  model->to(DType::f64);

  // A write through a raw handle is invisible until announced.
  eval_logits(*model, x);
  auto* bn = dynamic_cast<BatchNorm2d*>(model->named_modules()[2].second);
  ASSERT_NE(bn, nullptr);
  Tensor(bn->running_var()).fill_(4.0);
  model->mark_state_changed();
  expect_plain("after a raw write and mark_state_changed");
  eval_logits(*model, x);
  Tensor(bn->running_mean()).fill_(0.25);
  fold.invalidate();
  expect_plain("after a raw write and invalidate");
}

// --- the pairs each family folds -----------------------------------------------------------------

TEST(Fold, ResNetAndMobileNetV2FoldEveryBatchNorm) {
  for (const std::string& name : model_names()) {
    if (name.rfind("wrn", 0) == 0) continue;
    SCOPED_TRACE(name);
    auto model = create_model(name);
    std::set<std::string> all_bns;
    for (auto& [path, m] : model->named_modules()) {
      if (is_batch_norm(m)) all_bns.insert(path);
    }
    const auto pairs = conv_bn_pair_names(*model);
    EXPECT_EQ(bn_paths(pairs), all_bns);
    for (const auto& p : pairs) {
      // The conv and its BN are siblings with the same owner.
      EXPECT_EQ(p.conv.substr(0, p.conv.rfind('.') + 1), p.bn.substr(0, p.bn.rfind('.') + 1));
    }
  }
}

TEST(Fold, ResNet8PairsAreTheConvBnUnits) {
  auto model = create_model("resnet8");
  const std::vector<ConvBnPairName> expected = {
      {"conv1", "bn1"},
      {"layer1.0.conv1", "layer1.0.bn1"},
      {"layer1.0.conv2", "layer1.0.bn2"},
      {"layer2.0.conv1", "layer2.0.bn1"},
      {"layer2.0.conv2", "layer2.0.bn2"},
      {"layer2.0.downsample.0", "layer2.0.downsample.1"},
      {"layer3.0.conv1", "layer3.0.bn1"},
      {"layer3.0.conv2", "layer3.0.bn2"},
      {"layer3.0.downsample.0", "layer3.0.downsample.1"},
  };
  EXPECT_EQ(conv_bn_pair_names(*model), expected);
}

// Pre-activation WRN: only conv1 -> bn2 inside each block, plus the stem when the first block
// has a projection shortcut (its raw input then reaches bn1 alone).
TEST(Fold, WideResNetFoldsOnlyConvsThatFeedABatchNormAlone) {
  const std::vector<ConvBnPairName> wrn_16_2 = {
      {"conv1", "block1.layer.0.bn1"},
      {"block1.layer.0.conv1", "block1.layer.0.bn2"},
      {"block1.layer.1.conv1", "block1.layer.1.bn2"},
      {"block2.layer.0.conv1", "block2.layer.0.bn2"},
      {"block2.layer.1.conv1", "block2.layer.1.bn2"},
      {"block3.layer.0.conv1", "block3.layer.0.bn2"},
      {"block3.layer.1.conv1", "block3.layer.1.bn2"},
  };
  EXPECT_EQ(conv_bn_pair_names(*create_model("wrn_16_2")), wrn_16_2);
  // Widen factor 1: block1.layer.0 has an identity shortcut, so the stem's output is also added
  // to the block's output and its bn1 cannot absorb the stem.
  std::vector<ConvBnPairName> wrn_16_1(wrn_16_2.begin() + 1, wrn_16_2.end());
  EXPECT_EQ(conv_bn_pair_names(*create_model("wrn_16_1")), wrn_16_1);
  // Never folded: the final bn1 and every bn1 that reads a residual sum.
  for (const char* name : {"wrn_40_1", "wrn_40_2"}) {
    const std::set<std::string> folded = bn_paths(conv_bn_pair_names(*create_model(name)));
    EXPECT_EQ(folded.count("bn1"), 0u);
    EXPECT_EQ(folded.count("block2.layer.0.bn1"), 0u);
    EXPECT_EQ(folded.count("block1.layer.3.bn1"), 0u);
    EXPECT_EQ(folded.size(), name == std::string("wrn_40_2") ? 19u : 18u);
  }
}

TEST(Fold, MobileNetV2FoldsTheDepthwiseConvsToo) {
  auto model = create_model("MobileNetV2");
  const auto pairs = conv_bn_pair_names(*model);
  EXPECT_EQ(pairs.size(), 1u + 17u * 3u + 1u);
  const ConvBnPairName depthwise{"blocks.1.0.conv.3", "blocks.1.0.conv.4"};
  EXPECT_NE(std::find(pairs.begin(), pairs.end(), depthwise), pairs.end());
}

// A conv with its own bias folds too: the bias is scaled by s and lands in the folded bias.
TEST(Fold, ConvBiasIsFoldedIntoTheBias) {
  Generator gen(3);
  auto model = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
      std::make_shared<Conv2d>(3, 5, 3, gen, Conv2dConfig{.padding = 1, .bias = true}),
      std::make_shared<BatchNorm2d>(5), std::make_shared<ReLU>()});
  randomize_batch_norms(*model, 4);
  model->to(DType::f64);
  const Tensor x = random_input(5, DType::f64);
  const std::vector<double> plain = eval_logits(*model, x);
  BatchNormFold fold(model);
  EXPECT_EQ(fold.pairs(), (std::vector<ConvBnPairName>{{"0", "1"}}));
  EXPECT_TRUE(folded_close(eval_logits(*model, x), plain, DType::f64));
}

// --- the guard -----------------------------------------------------------------------------------

TEST(Fold, GuardsNestMoveAndUnfold) {
  auto model = prepared_model("resnet8", DType::f64);
  const Tensor x = random_input(2, DType::f64);
  const std::vector<double> plain = eval_logits(*model, x);
  BatchNormProbe probe(*model);
  auto folded_now = [&] {
    probe.clear();
    eval_logits(*model, x);
    return !probe.skipped.empty();
  };
  BatchNormFold outer(model);
  {
    BatchNormFold inner(model);  // overlapping guards share the pairs
    EXPECT_TRUE(folded_now());
  }
  EXPECT_TRUE(folded_now()) << "the outer guard still holds the pairs";
  BatchNormFold moved(std::move(outer));
  EXPECT_FALSE(outer.active());
  EXPECT_TRUE(moved.active());
  EXPECT_TRUE(folded_now());
  moved.unfold();
  moved.unfold();  // idempotent
  EXPECT_FALSE(folded_now());
  EXPECT_EQ(eval_logits(*model, x), plain);
}

// A module whose declaration is wrong is refused with the module paths, and nothing is folded.
class BadPairs : public Module {
 public:
  explicit BadPairs(bool repeat) : repeat_(repeat) {
    Generator gen(1);
    conv_ = register_module("conv", std::make_shared<Conv2d>(3, 4, 3, gen));
    bn_ = register_module("bn", std::make_shared<BatchNorm2d>(5));
    bn4_ = register_module("bn4", std::make_shared<BatchNorm2d>(4));
  }
  Tensor forward(const Tensor& x) override { return (*bn4_)((*conv_)(x)); }
  std::string type_name() const override { return "BadPairs"; }
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override {
    if (repeat_) {
      out.push_back({conv_.get(), bn4_.get()});
      out.push_back({conv_.get(), bn4_.get()});
    } else {
      out.push_back({conv_.get(), bn_.get()});  // 4 channels into a 5-feature BN
    }
  }

 private:
  bool repeat_;
  std::shared_ptr<Conv2d> conv_;
  std::shared_ptr<BatchNorm2d> bn_, bn4_;
};

TEST(Fold, WrongDeclarationsAreClearErrors) {
  auto mismatched = std::make_shared<BadPairs>(false);
  try {
    BatchNormFold fold(mismatched);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'conv' -> 'bn'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("4 output channels"), std::string::npos) << msg;
  }
  auto repeated = std::make_shared<BadPairs>(true);
  try {
    BatchNormFold fold(repeated);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("two conv -> BN pairs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BatchNormFold(nullptr), std::invalid_argument);
}

// --- CUDA ----------------------------------------------------------------------------------------

TEST(Fold, CudaFoldedEvalForwardEqualsPlainEvalForward) {
  if (cuda_device_count() == 0) {
    GTEST_SKIP() << (cuda_compiled() ? "no CUDA device present" : "built without CUDA");
  }
  // Full fp32 and pinned algorithms: the parity tolerances assume them (TF32 rounds the folded
  // and the plain weights differently, about 2e-4 per layer).
  test::ScopedCudaMath math({.allow_tf32 = false, .deterministic = true});
  for (const std::string& name : model_names()) {
    SCOPED_TRACE(name);
    auto model = prepared_model(name, DType::f32);
    const Tensor x_cpu = random_input(7, DType::f32);
    const std::vector<double> cpu_plain = eval_logits(*model, x_cpu);
    model->to(Device::cuda());
    const Tensor x = x_cpu.to(Device::cuda());
    const std::vector<double> plain = eval_logits(*model, x);
    BatchNormFold fold(model);
    fold.refresh();
    for (const auto& [path, m] : model->named_modules()) {
      if (auto* conv = dynamic_cast<Conv2d*>(m)) {
        EXPECT_EQ(conv->weight().device(), Device::cuda()) << path;
      }
    }
    const std::vector<double> folded = eval_logits(*model, x);
    EXPECT_TRUE(folded_close(folded, plain, DType::f32));
    // Against the CPU's plain path: folding and the device each add their f32 rounding.
    EXPECT_TRUE(folded_close(folded, cpu_plain, DType::f32, 2.0));
    // Back to the CPU: the fold follows the storages.
    model->to(Device::cpu());
    EXPECT_TRUE(folded_close(eval_logits(*model, x_cpu), cpu_plain, DType::f32));
  }
}

}  // namespace
}  // namespace retort::nn
