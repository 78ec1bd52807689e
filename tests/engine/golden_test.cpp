// Golden values from PyTorch: retort's ops in float64 and float32 against the outputs, gradients
// and running statistics stored in tests/fixtures by tools/make_golden.py (no Python needed here).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::test {
namespace {

// Every fixture the generator writes; a missing file fails its test rather than shrinking the
// suite, and FixtureDirectory.EveryGeneratedFileIsListed catches a new one nobody checks.
const std::vector<std::string> kFixtures = {
    "conv2d_plain",
    "conv2d_stride2",
    "conv2d_depthwise",
    "conv2d_projection",
    "conv2d_bias",
    "batch_norm_train",
    "batch_norm_train_2d",
    "batch_norm_eval",
    "max_pool2d_k3s2p1",
    "max_pool2d_ceil",
    "avg_pool2d_k2",
    "avg_pool2d_k3s2p1",
    "avg_pool2d_exclude_pad",
    "avg_pool2d_ceil",
    "avg_pool2d_ceil_exclude_pad",
    "adaptive_avg_pool2d_7x5_to_3x2",
    "softmax_T1",
    "softmax_T4",
    "log_softmax_T1",
    "log_softmax_T4",
    "cross_entropy_mean",
    "kd_loss_T4",
    "kd_loss_T20",
    "kd_loss_extreme",
    "kd_objective_T4",
};

std::string fixture_path(const std::string& name) {
  return std::string(RETORT_FIXTURE_DIR) + "/" + name + ".safetensors";
}

// One fixture seen in the dtype under test: fresh copies of its inputs, its hyper-parameters.
class GoldenCase {
 public:
  GoldenCase(SafetensorsFile file, DType dtype) : file_(std::move(file)), dtype_(dtype) {}

  bool has(const std::string& name) const { return file_.contains(name); }
  // A fresh tensor in the dtype under test (never shares storage with the fixture).
  Tensor input(const std::string& name) const {
    const Tensor& stored = file_.at(name);
    if (stored.dtype() != DType::f64) {
      throw std::runtime_error(file_.path + ": input '" + name + "' is not float64");
    }
    Tensor t = Tensor::empty(stored.shape(), dtype_);
    t.copy_(stored);
    return t;
  }
  Tensor leaf(const std::string& name) const { return input(name).set_requires_grad(true); }
  // Integer tensors (labels) exactly as stored.
  const Tensor& stored(const std::string& name) const { return file_.at(name); }
  int64_t int_param(const std::string& key) const { return std::stoll(file_.metadata_at(key)); }
  double real_param(const std::string& key) const { return std::stod(file_.metadata_at(key)); }
  bool flag(const std::string& key) const { return int_param(key) != 0; }

 private:
  SafetensorsFile file_;
  DType dtype_;
};

using Outputs = std::map<std::string, Tensor>;
using Runner = std::function<Outputs(const GoldenCase&)>;

// Backpropagates sum(y * r) with the fixture's r.
void backward_weighted(const Tensor& y, const GoldenCase& c) {
  sum(y * c.input("r")).backward();
}

Outputs run_conv2d(const GoldenCase& c) {
  Tensor x = c.leaf("x"), w = c.leaf("w");
  Tensor b = c.has("b") ? c.leaf("b") : Tensor();
  const Conv2dOptions options =
      Conv2dOptions::make(c.int_param("stride"), c.int_param("padding"), c.int_param("groups"));
  Tensor y = conv2d(x, w, b, options);
  backward_weighted(y, c);
  Outputs out = {{"y", y}, {"grad_x", x.grad()}, {"grad_w", w.grad()}};
  if (b.defined()) out["grad_b"] = b.grad();
  return out;
}

Outputs run_batch_norm(const GoldenCase& c) {
  Tensor x = c.leaf("x"), weight = c.leaf("weight"), bias = c.leaf("bias");
  Tensor running_mean = c.input("running_mean"), running_var = c.input("running_var");
  const bool training = c.flag("training");
  Tensor y = batch_norm(x, weight, bias, running_mean, running_var, training,
                        c.real_param("momentum"), c.real_param("eps"));
  backward_weighted(y, c);
  Outputs out = {
      {"y", y}, {"grad_x", x.grad()}, {"grad_weight", weight.grad()}, {"grad_bias", bias.grad()}};
  if (training) {
    out["running_mean_out"] = running_mean;
    out["running_var_out"] = running_var;
  }
  return out;
}

Pool2dOptions pool_options(const GoldenCase& c) {
  Pool2dOptions o = Pool2dOptions::make(c.int_param("kernel"), c.int_param("stride"),
                                        c.int_param("padding"), c.flag("ceil_mode"));
  o.count_include_pad = c.flag("count_include_pad");
  return o;
}

Outputs run_max_pool2d(const GoldenCase& c) {
  Tensor x = c.leaf("x");
  Tensor y = max_pool2d(x, pool_options(c));
  backward_weighted(y, c);
  return {{"y", y}, {"grad_x", x.grad()}};
}

Outputs run_avg_pool2d(const GoldenCase& c) {
  Tensor x = c.leaf("x");
  Tensor y = avg_pool2d(x, pool_options(c));
  backward_weighted(y, c);
  return {{"y", y}, {"grad_x", x.grad()}};
}

Outputs run_adaptive_avg_pool2d(const GoldenCase& c) {
  Tensor x = c.leaf("x");
  Tensor y = adaptive_avg_pool2d(x, c.int_param("out_h"), c.int_param("out_w"));
  backward_weighted(y, c);
  return {{"y", y}, {"grad_x", x.grad()}};
}

Outputs run_softmax(const GoldenCase& c) {
  Tensor x = c.leaf("x");
  Tensor y = softmax(x, c.real_param("temperature"));
  backward_weighted(y, c);
  return {{"y", y}, {"grad_x", x.grad()}};
}

Outputs run_log_softmax(const GoldenCase& c) {
  Tensor x = c.leaf("x");
  Tensor y = log_softmax(x, c.real_param("temperature"));
  backward_weighted(y, c);
  return {{"y", y}, {"grad_x", x.grad()}};
}

Outputs run_cross_entropy(const GoldenCase& c) {
  Tensor logits = c.leaf("logits");
  Tensor loss = cross_entropy(logits, c.stored("labels"), Reduction::mean);
  loss.backward();
  return {{"loss", loss}, {"grad_logits", logits.grad()}};
}

Outputs run_kd_loss(const GoldenCase& c) {
  Tensor student = c.leaf("student");
  Tensor loss = kd_loss(student, c.input("teacher"), c.real_param("temperature"));
  loss.backward();
  return {{"loss", loss}, {"grad_student", student.grad()}};
}

Outputs run_kd_objective(const GoldenCase& c) {
  Tensor student = c.leaf("student");
  Tensor loss = add(cross_entropy(student, c.stored("labels")) * c.real_param("gamma"),
                    kd_loss(student, c.input("teacher"), c.real_param("temperature")) *
                        c.real_param("alpha"));
  loss.backward();
  return {{"loss", loss}, {"grad_student", student.grad()}};
}

const std::map<std::string, Runner>& runners() {
  static const std::map<std::string, Runner> table = {
      {"conv2d", run_conv2d},
      {"batch_norm", run_batch_norm},
      {"max_pool2d", run_max_pool2d},
      {"avg_pool2d", run_avg_pool2d},
      {"adaptive_avg_pool2d", run_adaptive_avg_pool2d},
      {"softmax", run_softmax},
      {"log_softmax", run_log_softmax},
      {"cross_entropy", run_cross_entropy},
      {"kd_loss", run_kd_loss},
      {"kd_objective", run_kd_objective},
  };
  return table;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) parts.push_back(part);
  return parts;
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
  const std::vector<double> want = expected.to_vector<double>();
  if (dtype == DType::f64) {
    return all_close(actual.to_vector<double>(), want, kGoldenF64Rel, kGoldenF64Abs);
  }
  return all_close(actual.to_vector<float>(), want, kGoldenF32Rel, kGoldenF32Abs);
}

struct Param {
  std::string fixture;
  DType dtype;
};

void PrintTo(const Param& p, std::ostream* os) {
  *os << p.fixture << " " << dtype_name(p.dtype);
}

class Golden : public ::testing::TestWithParam<Param> {};

TEST_P(Golden, MatchesPyTorch) {
  const auto& [fixture, dtype] = GetParam();
  const SafetensorsFile expected = load_safetensors(fixture_path(fixture));
  const std::string op = expected.metadata_at("op");
  SCOPED_TRACE(fixture + " (" + op + ", " + std::string(dtype_name(dtype)) +
               "): " + expected.metadata_at("torch_call"));
  ASSERT_EQ(runners().count(op), 1u) << "no runner for op '" << op << "'";
  const Outputs actual =
      runners().at(op)(GoldenCase(load_safetensors(fixture_path(fixture)), dtype));

  const std::vector<std::string> names = split_commas(expected.metadata_at("outputs"));
  ASSERT_FALSE(names.empty());
  for (const std::string& name : names) {
    ASSERT_EQ(actual.count(name), 1u) << "the runner does not produce '" << name << "'";
    EXPECT_TRUE(matches(actual.at(name), expected.at(name), dtype)) << "output '" << name << "'";
  }
  for (const auto& entry : actual) {
    EXPECT_NE(std::find(names.begin(), names.end(), entry.first), names.end())
        << "'" << entry.first << "' is computed but the fixture holds no value for it";
  }
}

std::vector<Param> params() {
  std::vector<Param> out;
  for (const std::string& name : kFixtures) {
    for (DType dtype : {DType::f64, DType::f32}) out.push_back({name, dtype});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(params()), [](const auto& info) {
  return info.param.fixture + "_" + std::string(dtype_name(info.param.dtype));
});

// Fixtures from other generators may share the folder; only make_golden.py's must be listed.
TEST(FixtureDirectory, EveryGeneratedFileIsListed) {
  namespace fs = std::filesystem;
  const std::set<std::string> listed(kFixtures.begin(), kFixtures.end());
  for (const auto& entry : fs::directory_iterator(RETORT_FIXTURE_DIR)) {
    if (entry.path().extension() != ".safetensors") continue;
    const SafetensorsFile file = load_safetensors(entry.path().string());
    const auto generator = file.metadata.find("generator");
    if (generator == file.metadata.end() || generator->second != "tools/make_golden.py") continue;
    EXPECT_EQ(listed.count(entry.path().stem().string()), 1u)
        << entry.path() << " is not checked by golden_test.cpp";
  }
}

}  // namespace
}  // namespace retort::test
