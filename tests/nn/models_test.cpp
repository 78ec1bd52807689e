// Tests of the model zoo: parameter and MAC counts, output shapes, initialisation rules.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd.h"
#include "nn/layers.h"
#include "nn/models/registry.h"
#include "nn/models/summary.h"
#include "tests/nn/nn_test_util.h"

namespace retort::nn {
namespace {

struct Expected {
  const char* name;
  int64_t params;
  int64_t macs;
  double macs_millions;  // as printed in models.md's table (two decimals)
};

// spec/models.md section 4.4 (32x32x3 input, 100 classes). The exact MAC counts come from the
// counting script of its appendix; the rounded column is the table's.
const Expected kTable[] = {
    {"resnet8", 83892, 12507392, 12.51},          {"resnet14", 181108, 26663168, 26.66},
    {"resnet20", 278324, 40818944, 40.82},        {"resnet32", 472756, 69130496, 69.13},
    {"resnet44", 667188, 97442048, 97.44},        {"resnet56", 861620, 125753600, 125.75},
    {"resnet110", 1736564, 253155584, 253.16},    {"resnet8x4", 1233540, 177071104, 177.07},
    {"resnet32x4", 7433860, 1083040768, 1083.04}, {"wrn_16_1", 180916, 26663168, 26.66},
    {"wrn_16_2", 703284, 101118464, 101.12},      {"wrn_40_1", 569780, 83286272, 83.29},
    {"wrn_40_2", 2255156, 327610880, 327.61},     {"MobileNetV2", 812836, 6523648, 6.52},
};

TEST(Models, RegistryListsEveryModelOfTheSpec) {
  std::vector<std::string> expected;
  for (const Expected& e : kTable) expected.push_back(e.name);
  EXPECT_EQ(model_names(), expected);
}

TEST(Models, UnknownNameListsTheKnownOnes) {
  try {
    create_model("resnet9");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unknown model 'resnet9'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("resnet8x4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("MobileNetV2"), std::string::npos) << msg;
  }
  EXPECT_THROW(create_model("resnet8", {.in_channels = 0}), std::invalid_argument);
  EXPECT_THROW(create_model("resnet8", {.num_classes = 0}), std::invalid_argument);
}

TEST(Models, ParameterAndMacCountsMatchModelsMd) {
  for (const Expected& e : kTable) {
    SCOPED_TRACE(e.name);
    const ModelSummary s = model_summary(e.name, {}, 32, 32);
    EXPECT_EQ(s.total_params, e.params);
    EXPECT_EQ(s.total_macs, e.macs);
    EXPECT_NEAR(static_cast<double>(s.total_macs) / 1e6, e.macs_millions, 0.005 + 1e-9);
    EXPECT_EQ(s.output_shape, (Shape{100}));
    int64_t row_params = 0;
    for (const LayerSummary& row : s.layers) row_params += row.params;
    EXPECT_EQ(row_params, e.params);  // every parameterised layer ran exactly once
  }
}

TEST(Models, MobileNetV2PerBlockCountsMatchModelsMd) {
  const ModelSummary s = model_summary("MobileNetV2", {}, 32, 32);
  auto totals = [&](const std::string& prefix) {
    std::pair<int64_t, int64_t> t{0, 0};
    for (const LayerSummary& row : s.layers) {
      if (row.name.rfind(prefix, 0) == 0) {
        t.first += row.params;
        t.second += row.macs;
      }
    }
    return t;
  };
  // models.md 4.3 per-block table (params, MACs).
  EXPECT_EQ(totals("conv1."), std::make_pair(int64_t{464}, int64_t{110592}));
  EXPECT_EQ(totals("blocks.0.0."), std::make_pair(int64_t{608}, int64_t{135168}));
  EXPECT_EQ(totals("blocks.2.0."), std::make_pair(int64_t{2984}, int64_t{336384}));
  EXPECT_EQ(totals("blocks.5.1."), std::make_pair(int64_t{83200}, int64_t{324480}));
  EXPECT_EQ(totals("blocks.6.0."), std::make_pair(int64_t{121760}, int64_t{478080}));
  EXPECT_EQ(totals("conv2."), std::make_pair(int64_t{207360}, int64_t{819200}));
  EXPECT_EQ(totals("classifier."), std::make_pair(int64_t{128100}, int64_t{128000}));
  const std::string table = s.format();
  EXPECT_NE(table.find("blocks.1.0.conv.3"), std::string::npos);
  EXPECT_NE(table.find("812,836 params (0.813 M)"), std::string::npos) << table;
  EXPECT_NE(table.find("(6.52 M)"), std::string::npos) << table;
}

TEST(Models, StagesOfResNet8AndWrn402MatchModelsMd) {
  auto stage = [](const ModelSummary& s, const std::string& prefix) {
    int64_t p = 0;
    for (const LayerSummary& row : s.layers) p += row.name.rfind(prefix, 0) == 0 ? row.params : 0;
    return p;
  };
  const ModelSummary r8 = model_summary("resnet8", {}, 32, 32);
  EXPECT_EQ(stage(r8, "layer1."), 4672);
  EXPECT_EQ(stage(r8, "layer2."), 14528);
  EXPECT_EQ(stage(r8, "layer3."), 57728);
  const ModelSummary w = model_summary("wrn_40_2", {}, 32, 32);
  EXPECT_EQ(stage(w, "block1."), 107232);
  EXPECT_EQ(stage(w, "block2."), 427456);
  EXPECT_EQ(stage(w, "block3."), 1706880);
}

TEST(Models, OutputShapesFor32x32x3And28x28x1) {
  NoGradGuard no_grad;  // shapes only: skip recording the graphs
  for (const std::string& name : model_names()) {
    SCOPED_TRACE(name);
    auto rgb = create_model(name, {.in_channels = 3, .num_classes = 10});
    EXPECT_EQ((*rgb)(Tensor::zeros({2, 3, 32, 32})).shape(), (Shape{2, 10}));
    auto gray = create_model(name, {.in_channels = 1, .num_classes = 10});
    EXPECT_EQ((*gray)(Tensor::zeros({2, 1, 28, 28})).shape(), (Shape{2, 10}));
    // Only the stem and the classifier depend on the input channels and classes.
    EXPECT_EQ(rgb->num_parameters() - gray->num_parameters(),
              rgb->state_dict().front().second.numel() - gray->state_dict().front().second.numel());
  }
}

TEST(Models, SameSeedSameWeightsOtherSeedOtherWeights) {
  auto a = create_model("resnet8", {.seed = 5});
  auto b = create_model("resnet8", {.seed = 5});
  auto c = create_model("resnet8", {.seed = 6});
  const NamedTensors sa = a->state_dict(), sb = b->state_dict(), sc = c->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].second.dtype() != DType::f32) continue;
    EXPECT_EQ(sa[i].second.to_vector<float>(), sb[i].second.to_vector<float>()) << sa[i].first;
  }
  EXPECT_NE(sa[0].second.to_vector<float>(), sc[0].second.to_vector<float>());
}

// Sample mean and standard deviation of a tensor's elements.
std::pair<double, double> moments(const Tensor& t) {
  const std::vector<float> v = t.to_vector<float>();
  double s = 0, s2 = 0;
  for (float x : v) s += x;
  const double mean = s / static_cast<double>(v.size());
  for (float x : v) s2 += (x - mean) * (x - mean);
  return {mean, std::sqrt(s2 / static_cast<double>(v.size()))};
}

Tensor find(const NamedTensors& state, const std::string& name) {
  for (const auto& [n, t] : state) {
    if (n == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  return Tensor::zeros({1});
}

TEST(Models, InitialisationRulesOfEachFamily) {
  // Convs: normal(0, sqrt(2 / (k*k*out))) in all three families.
  const auto r = create_model("resnet32x4")->state_dict();
  auto [m1, s1] = moments(find(r, "layer3.0.conv2.weight"));  // 256x256x3x3
  EXPECT_NEAR(m1, 0.0, 1e-3);
  EXPECT_NEAR(s1, std::sqrt(2.0 / (9 * 256)), 0.01 * std::sqrt(2.0 / (9 * 256)));
  // ResNet fc: PyTorch's default U(-1/sqrt(256), 1/sqrt(256)), bias too.
  auto [m2, s2] = moments(find(r, "fc.weight"));
  EXPECT_NEAR(s2, (1.0 / 16.0) / std::sqrt(3.0), 0.02 * (1.0 / 16.0));
  EXPECT_NE(find(r, "fc.bias").to_vector<float>(), std::vector<float>(100, 0.0f));

  const auto w = create_model("wrn_40_2")->state_dict();
  auto [m3, s3] = moments(find(w, "block3.layer.1.conv1.weight"));  // 128x128x3x3
  EXPECT_NEAR(s3, std::sqrt(2.0 / (9 * 128)), 0.02 * std::sqrt(2.0 / (9 * 128)));
  EXPECT_EQ(find(w, "fc.bias").to_vector<float>(), std::vector<float>(100, 0.0f));
  for (float v : find(w, "fc.weight").to_vector<float>()) {
    EXPECT_LE(std::abs(v), 1.0 / std::sqrt(128.0) + 1e-7);
  }

  const auto m = create_model("MobileNetV2")->state_dict();
  auto [m4, s4] = moments(find(m, "classifier.0.weight"));  // normal(0, 0.01)
  EXPECT_NEAR(m4, 0.0, 2e-4);
  EXPECT_NEAR(s4, 0.01, 2e-4);
  EXPECT_EQ(find(m, "classifier.0.bias").to_vector<float>(), std::vector<float>(100, 0.0f));
  auto [m5, s5] = moments(find(m, "conv2.0.weight"));  // 1280x160x1x1
  EXPECT_NEAR(s5, std::sqrt(2.0 / 1280), 0.02 * std::sqrt(2.0 / 1280));
  // Depthwise: fan-out is k*k*out as well (not divided by groups).
  auto [m6, s6] = moments(find(m, "blocks.5.1.conv.3.weight"));  // 480x1x3x3
  EXPECT_NEAR(s6, std::sqrt(2.0 / (9 * 480)), 0.05 * std::sqrt(2.0 / (9 * 480)));
  // BatchNorm: weight 1, bias 0 everywhere.
  for (const auto& state : {r, w, m}) {
    for (const auto& [name, t] : state) {
      if (name.ends_with("running_mean") || name.ends_with("num_batches_tracked")) continue;
      const bool bn_weight = name.ends_with(".weight") && t.dim() == 1;
      if (bn_weight) {
        EXPECT_EQ(t.to_vector<float>(), std::vector<float>(t.numel(), 1.0f)) << name;
      }
    }
  }
}

}  // namespace
}  // namespace retort::nn
