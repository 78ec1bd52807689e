// Tests of state dicts: PyTorch names and order of the reference models, round trips, load errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "engine/autograd.h"
#include "engine/rng.h"
#include "engine/safetensors.h"
#include "nn/models/registry.h"
#include "tests/nn/nn_test_util.h"

namespace retort::nn {
namespace {

using Names = std::vector<std::string>;

// The keys torch.nn.Conv2d(bias=False) / BatchNorm2d / Linear put in a state dict under `p`.
Names conv(const std::string& p) {
  return {p + ".weight"};
}
Names bn(const std::string& p) {
  return {p + ".weight", p + ".bias", p + ".running_mean", p + ".running_var",
          p + ".num_batches_tracked"};
}
Names fc(const std::string& p) {
  return {p + ".weight", p + ".bias"};
}
Names cat(std::initializer_list<Names> parts) {
  Names out;
  for (const Names& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Names keys(const Module& m) {
  Names out;
  for (const auto& [name, t] : m.state_dict()) out.push_back(name);
  return out;
}

// RepDistiller models/resnet.py, resnet8: BasicBlock registers conv1, bn1, relu, conv2, bn2,
// downsample (Sequential(conv, bn)); layer1 (16 -> 16, stride 1) has no downsample.
TEST(StateDict, ResNet8NamesAndOrderMatchThePyTorchReference) {
  const Names expected = cat({
      conv("conv1"),
      bn("bn1"),
      conv("layer1.0.conv1"),
      bn("layer1.0.bn1"),
      conv("layer1.0.conv2"),
      bn("layer1.0.bn2"),
      conv("layer2.0.conv1"),
      bn("layer2.0.bn1"),
      conv("layer2.0.conv2"),
      bn("layer2.0.bn2"),
      conv("layer2.0.downsample.0"),
      bn("layer2.0.downsample.1"),
      conv("layer3.0.conv1"),
      bn("layer3.0.bn1"),
      conv("layer3.0.conv2"),
      bn("layer3.0.bn2"),
      conv("layer3.0.downsample.0"),
      bn("layer3.0.downsample.1"),
      fc("fc"),
  });
  EXPECT_EQ(keys(*create_model("resnet8")), expected);
  // resnet8x4: layer1's first block has a projection too (32 -> 64).
  const Names x4 = keys(*create_model("resnet8x4"));
  EXPECT_NE(std::find(x4.begin(), x4.end(), "layer1.0.downsample.0.weight"), x4.end());
}

// RepDistiller models/wrn.py, wrn_16_2 (n = 2): BasicBlock registers bn1, relu1, conv1, bn2,
// relu2, conv2, convShortcut (only when in != out); the head is bn1, relu, fc.
TEST(StateDict, Wrn162NamesAndOrderMatchThePyTorchReference) {
  auto block = [](const std::string& p, bool shortcut) {
    Names b = cat({bn(p + ".bn1"), conv(p + ".conv1"), bn(p + ".bn2"), conv(p + ".conv2")});
    if (shortcut) b.push_back(p + ".convShortcut.weight");
    return b;
  };
  const Names expected = cat({
      conv("conv1"),
      block("block1.layer.0", true),
      block("block1.layer.1", false),
      block("block2.layer.0", true),
      block("block2.layer.1", false),
      block("block3.layer.0", true),
      block("block3.layer.1", false),
      bn("bn1"),
      fc("fc"),
  });
  EXPECT_EQ(keys(*create_model("wrn_16_2")), expected);
  // wrn_40_1: block1's first block is 16 -> 16 and has no shortcut conv.
  const Names w401 = keys(*create_model("wrn_40_1"));
  EXPECT_EQ(std::find(w401.begin(), w401.end(), "block1.layer.0.convShortcut.weight"), w401.end());
  EXPECT_NE(std::find(w401.begin(), w401.end(), "block2.layer.0.convShortcut.weight"), w401.end());
}

// RepDistiller models/mobilenetv2.py (mobile_half): conv1 = conv_bn (Sequential conv, bn, relu);
// blocks = ModuleList of Sequentials of InvertedResidual, each holding `conv` = Sequential(conv,
// bn, relu, conv(dw), bn, relu, conv, bn) -> indices 0, 1, 3, 4, 6, 7 hold state; conv2 =
// conv_1x1_bn; classifier = Sequential(Linear).
TEST(StateDict, MobileNetV2NamesAndOrderMatchThePyTorchReference) {
  Names expected = cat({conv("conv1.0"), bn("conv1.1")});
  const int blocks_per_stage[7] = {1, 2, 3, 4, 3, 3, 1};
  for (int i = 0; i < 7; ++i) {
    for (int j = 0; j < blocks_per_stage[i]; ++j) {
      const std::string p = "blocks." + std::to_string(i) + "." + std::to_string(j) + ".conv.";
      expected = cat({expected, conv(p + "0"), bn(p + "1"), conv(p + "3"), bn(p + "4"),
                      conv(p + "6"), bn(p + "7")});
    }
  }
  expected = cat({expected, conv("conv2.0"), bn("conv2.1"), fc("classifier.0")});
  auto model = create_model("MobileNetV2");
  const Names got = keys(*model);
  EXPECT_EQ(got.size(), 320u);
  EXPECT_EQ(got, expected);
  // Spot checks spelled out in full, with shapes.
  const NamedTensors state = model->state_dict();
  EXPECT_EQ(state[0].first, "conv1.0.weight");
  EXPECT_EQ(state[0].second.shape(), (Shape{16, 3, 3, 3}));
  EXPECT_EQ(state[6].first, "blocks.0.0.conv.0.weight");
  EXPECT_EQ(state[6].second.shape(), (Shape{16, 16, 1, 1}));
  EXPECT_EQ(state[12].first, "blocks.0.0.conv.3.weight");
  EXPECT_EQ(state[12].second.shape(), (Shape{16, 1, 3, 3}));
  EXPECT_EQ(state[18].first, "blocks.0.0.conv.6.weight");
  EXPECT_EQ(state[18].second.shape(), (Shape{8, 16, 1, 1}));
  EXPECT_EQ(state[318].first, "classifier.0.weight");
  EXPECT_EQ(state[318].second.shape(), (Shape{100, 1280}));
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ha = a.contiguous().to(Device::cpu()), hb = b.contiguous().to(Device::cpu());
  return std::memcmp(ha.raw_data(), hb.raw_data(), ha.numel() * dtype_size(ha.dtype())) == 0;
}

// Trains BN statistics a little so the buffers are not at their initial values.
void touch_buffers(Module& m, uint64_t seed) {
  Generator gen(seed);
  NoGradGuard no_grad;
  m(Tensor::randn({4, 3, 16, 16}, gen));
}

TEST(StateDict, RoundTripIsBitExact) {
  for (const char* name : {"resnet8", "wrn_16_1", "MobileNetV2"}) {
    SCOPED_TRACE(name);
    auto source = create_model(name, {.seed = 1});
    touch_buffers(*source, 2);
    auto target = create_model(name, {.seed = 99});
    target->load_state_dict(source->state_dict());
    const NamedTensors a = source->state_dict(), b = target->state_dict();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(bit_equal(a[i].second, b[i].second)) << a[i].first;
    source->eval();
    target->eval();
    Generator gen(3);
    const Tensor x = Tensor::randn({2, 3, 32, 32}, gen);
    NoGradGuard no_grad;
    EXPECT_TRUE(bit_equal((*source)(x), (*target)(x)));
  }
}

TEST(StateDict, RoundTripThroughASafetensorsFile) {
  auto source = create_model("resnet8", {.seed = 4});
  touch_buffers(*source, 5);
  const std::string path =
      (std::filesystem::temp_directory_path() / "retort_nn_state_dict_test.safetensors").string();
  save_safetensors(path, source->state_dict());
  const SafetensorsFile file = load_safetensors(path);
  std::filesystem::remove(path);
  auto target = create_model("resnet8", {.seed = 6});
  target->load_state_dict(file.tensors);
  const NamedTensors a = source->state_dict(), b = target->state_dict();
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(bit_equal(a[i].second, b[i].second)) << a[i].first;
  EXPECT_EQ(b[5].first, "bn1.num_batches_tracked");
  EXPECT_EQ(b[5].second.item(), 1.0);
}

std::string load_error(Module& m, const NamedTensors& state, bool strict = true) {
  try {
    m.load_state_dict(state, strict);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(StateDict, LoadErrorsNameMissingUnexpectedAndMismatchedKeys) {
  auto model = create_model("resnet8", {.num_classes = 100});
  NamedTensors state = create_model("resnet8", {.num_classes = 10})->state_dict();
  // Drop one key, rename one, and the classifier already has the wrong shape.
  state.erase(state.begin() + 1);  // bn1.weight
  state[0].first = "stem.weight";  // conv1.weight -> unexpected + missing
  const std::vector<float> before = model->state_dict()[2].second.to_vector<float>();
  const std::string msg = load_error(*model, state);
  EXPECT_NE(msg.find("missing keys (2): conv1.weight, bn1.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys (1): stem.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fc.weight: checkpoint [10, 64] vs model [100, 64]"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("fc.bias: checkpoint [10] vs model [100]"), std::string::npos) << msg;
  // A failed load writes nothing.
  EXPECT_EQ(model->state_dict()[2].second.to_vector<float>(), before);

  // strict = false ignores missing and unexpected keys but never a shape mismatch.
  const std::string lenient = load_error(*model, state, /*strict=*/false);
  EXPECT_EQ(lenient.find("missing"), std::string::npos) << lenient;
  EXPECT_NE(lenient.find("fc.weight: checkpoint [10, 64] vs model [100, 64]"), std::string::npos);
  NamedTensors partial = {state[1]};  // bn1.bias only
  EXPECT_EQ(load_error(*model, partial, /*strict=*/false), "");

  // A dtype that cannot hold the value (a float counter) is reported too.
  NamedTensors counter = {{"bn1.num_batches_tracked", Tensor::zeros({})}};
  EXPECT_NE(load_error(*model, counter, false).find("checkpoint dtype f32 vs model i64"),
            std::string::npos);
}

TEST(StateDict, LoadConvertsFloatDtypes) {
  auto source = create_model("resnet8", {.seed = 7});
  auto target = create_model("resnet8", {.seed = 8});
  target->to(DType::f64);
  target->load_state_dict(source->state_dict());
  EXPECT_EQ(target->state_dict()[0].second.dtype(), DType::f64);
  const std::vector<float> a = source->state_dict()[0].second.to_vector<float>();
  const std::vector<double> b = target->state_dict()[0].second.to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(static_cast<double>(a[i]), b[i]);
}

}  // namespace
}  // namespace retort::nn
