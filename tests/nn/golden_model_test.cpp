// Golden model test: a resnet8 and a wrn_16_2 training step in float64 and float32 against the
// PyTorch logits, loss, gradients and BN statistics of tools/make_golden_models.py's fixtures.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "nn/models/registry.h"
#include "tests/nn/nn_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::test {
namespace {

using nn::NamedTensors;

const char kGenerator[] = "tools/make_golden_models.py";

// Every fixture the generator writes; a missing file fails its test rather than shrinking the
// suite, and FixtureDirectory.EveryModelFixtureIsListed catches a new one nobody checks.
const std::vector<std::string> kFixtures = {"model_resnet8", "model_wrn_16_2"};

std::string fixture_path(const std::string& name) {
  return std::string(RETORT_FIXTURE_DIR) + "/" + name + ".safetensors";
}

int64_t int_metadata(const SafetensorsFile& file, const std::string& key) {
  return std::stoll(file.metadata_at(key));
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// The model's initial state dict as the fixture stores it: "init.NAME" as is, or, for the large
// parameters of a compact fixture, uint8 codes "init_q.NAME" and a power-of-two scale
// "init_scale.NAME" meaning (code - 128) * scale (exact in float32 and float64).
NamedTensors initial_state(const SafetensorsFile& file) {
  NamedTensors state;
  for (const auto& [key, stored] : file.tensors) {
    if (starts_with(key, "init.")) {
      state.emplace_back(key.substr(5), stored);
    } else if (starts_with(key, "init_q.")) {
      const std::string name = key.substr(7);
      const double scale = file.at("init_scale." + name).item();
      std::vector<double> values;
      for (uint8_t code : stored.to_vector<uint8_t>()) values.push_back((code - 128) * scale);
      state.emplace_back(name, Tensor::from_vector(values, stored.shape()));
    }
  }
  return state;
}

// A fresh copy of a stored floating tensor in `dtype`.
Tensor converted(const Tensor& stored, DType dtype) {
  Tensor t = Tensor::empty(stored.shape(), dtype);
  t.copy_(stored);
  return t;
}

std::vector<double> as_doubles(const Tensor& t) {
  if (t.dtype() == DType::f64) return t.to_vector<double>();
  const std::vector<float> v = t.to_vector<float>();
  return std::vector<double>(v.begin(), v.end());
}

// retort's float64 path matches PyTorch's float64 to rounding; the float32 path to float32
// precision over the summation lengths of these models (a conv weight gradient or a BN statistic
// sums up to 4 * 32 * 32 = 4096 terms, a forward dot product up to 128 * 9 = 1152).
::testing::AssertionResult close_values(const std::vector<double>& actual,
                                        const std::vector<double>& expected, DType dtype) {
  if (dtype == DType::f64) return all_close(actual, expected, kGoldenF64Rel, kGoldenF64Abs);
  return all_close(actual, expected, kGoldenF32Rel, kGoldenF32Abs);
}

::testing::AssertionResult matches(const Tensor& actual, const Tensor& expected, DType dtype) {
  if (!actual.defined()) return ::testing::AssertionFailure() << "retort produced no tensor";
  if (actual.dtype() != dtype) {
    return ::testing::AssertionFailure() << "dtype " << dtype_name(actual.dtype());
  }
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure() << "shape " << shape_str(actual.shape()) << " vs expected "
                                         << shape_str(expected.shape());
  }
  return close_values(as_doubles(actual), expected.to_vector<double>(), dtype);
}

// A gradient the fixture stores whole ("grad.NAME"), or as its 2-norm ("grad_norm.NAME") and its
// values at fixed flat indices ("grad_index.NAME", "grad_sample.NAME").
void expect_gradient(const SafetensorsFile& file, const std::string& name, const Tensor& grad,
                     DType dtype) {
  SCOPED_TRACE("gradient of " + name);
  ASSERT_TRUE(grad.defined()) << "backward left no gradient";
  if (file.contains("grad." + name)) {
    EXPECT_TRUE(matches(grad, file.at("grad." + name), dtype));
    return;
  }
  ASSERT_TRUE(file.contains("grad_sample." + name)) << "the fixture holds no gradient";
  ASSERT_EQ(grad.dtype(), dtype);
  const std::vector<double> values = as_doubles(grad);
  double sum_squares = 0;
  for (double v : values) sum_squares += v * v;
  EXPECT_TRUE(close_values({std::sqrt(sum_squares)}, {file.at("grad_norm." + name).item()}, dtype))
      << "2-norm";
  std::vector<double> sampled;
  for (int32_t index : file.at("grad_index." + name).to_vector<int32_t>()) {
    ASSERT_TRUE(index >= 0 && static_cast<size_t>(index) < values.size()) << index;
    sampled.push_back(values[static_cast<size_t>(index)]);
  }
  EXPECT_TRUE(close_values(sampled, file.at("grad_sample." + name).to_vector<double>(), dtype))
      << "sampled elements";
}

struct Param {
  std::string fixture;
  DType dtype;
};

void PrintTo(const Param& p, std::ostream* os) {
  *os << p.fixture << " " << dtype_name(p.dtype);
}

class GoldenModel : public ::testing::TestWithParam<Param> {};

// The fixture's step, in retort: train-mode forward, mean cross-entropy, backward; the BN buffers
// after it; then an eval-mode forward, which uses the running statistics the step updated.
TEST_P(GoldenModel, TrainingStepMatchesPyTorch) {
  const auto& [fixture, dtype] = GetParam();
  const SafetensorsFile file = load_safetensors(fixture_path(fixture));
  ASSERT_EQ(file.metadata_at("generator"), kGenerator);
  const std::string model_name = file.metadata_at("model");
  SCOPED_TRACE(fixture + " (" + model_name + ", " + std::string(dtype_name(dtype)) + "), torch " +
               file.metadata_at("torch_version"));

  auto model =
      nn::create_model(model_name, {.in_channels = int_metadata(file, "in_channels"),
                                    .num_classes = int_metadata(file, "num_classes"),
                                    .seed = static_cast<uint64_t>(int_metadata(file, "seed"))});
  model->to(dtype);
  model->load_state_dict(initial_state(file), /*strict=*/true);

  const Tensor x = converted(file.at("x"), dtype);  // (N, C, 32, 32), float32 values
  const Tensor& labels = file.at("labels");         // (N) int64
  model->train();
  const Tensor logits_train = (*model)(x);  // (N, classes)
  const Tensor loss = cross_entropy(logits_train, labels, Reduction::mean);
  loss.backward();
  EXPECT_TRUE(matches(logits_train, file.at("logits_train"), dtype)) << "train-mode logits";
  EXPECT_TRUE(matches(loss, file.at("loss"), dtype)) << "loss";

  std::set<std::string> checked;
  for (const auto& [name, param] : model->named_parameters()) {
    expect_gradient(file, name, param.grad(), dtype);
    checked.insert(name);
  }
  for (const auto& [key, stored] : file.tensors) {
    for (const char* prefix : {"grad.", "grad_sample."}) {
      if (starts_with(key, prefix)) {
        EXPECT_EQ(checked.count(key.substr(std::string(prefix).size())), 1u)
            << "the fixture's " << key << " names no parameter of retort's " << model_name;
      }
    }
  }

  for (const auto& [name, buffer] : model->named_buffers()) {
    SCOPED_TRACE("buffer " + name + " after the step");
    ASSERT_TRUE(file.contains("after." + name)) << "the fixture holds no value";
    const Tensor& expected = file.at("after." + name);
    if (buffer.dtype() == DType::i64) {
      EXPECT_EQ(buffer.to_vector<int64_t>(), expected.to_vector<int64_t>());
    } else {
      EXPECT_TRUE(matches(buffer, expected, dtype));
    }
  }

  model->eval();
  NoGradGuard no_grad;
  EXPECT_TRUE(matches((*model)(x), file.at("logits_eval"), dtype)) << "eval-mode logits";
}

std::vector<Param> params() {
  std::vector<Param> out;
  for (const std::string& name : kFixtures) {
    for (DType dtype : {DType::f64, DType::f32}) out.push_back({name, dtype});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenModel, ::testing::ValuesIn(params()),
                         [](const auto& info) {
                           return info.param.fixture + "_" +
                                  std::string(dtype_name(info.param.dtype));
                         });

// Fixtures from other generators share the folder; only make_golden_models.py's must be listed.
TEST(FixtureDirectory, EveryModelFixtureIsListed) {
  namespace fs = std::filesystem;
  const std::set<std::string> listed(kFixtures.begin(), kFixtures.end());
  for (const auto& entry : fs::directory_iterator(RETORT_FIXTURE_DIR)) {
    if (entry.path().extension() != ".safetensors") continue;
    const SafetensorsFile file = load_safetensors(entry.path().string());
    const auto generator = file.metadata.find("generator");
    if (generator == file.metadata.end() || generator->second != kGenerator) continue;
    EXPECT_EQ(listed.count(entry.path().stem().string()), 1u)
        << entry.path() << " is not checked by golden_model_test.cpp";
  }
}

}  // namespace
}  // namespace retort::test
