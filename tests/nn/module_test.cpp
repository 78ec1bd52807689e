// Tests of nn::Module: registration order and names, modes, in-place placement, hooks, zero_grad.
#include <gtest/gtest.h>

#include "engine/device.h"
#include "engine/ops.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "tests/nn/nn_test_util.h"

namespace retort::nn {
namespace {

std::vector<std::string> names_of(const NamedTensors& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors) out.push_back(name);
  return out;
}

// A parameter, a buffer and two children, registered in an order unlike alphabetical.
class Toy : public Module {
 public:
  explicit Toy(Generator& gen) {
    scale_ = register_parameter("scale", Tensor::ones({3}));
    register_buffer("steps", Tensor::zeros({1}));
    register_module("zeta", std::make_shared<Linear>(3, 2, gen));
    register_module("alpha", std::make_shared<BatchNorm2d>(2));
  }
  Tensor forward(const Tensor& x) override { return x * scale_; }
  std::string type_name() const override { return "Toy"; }
  void reregister_scale() { register_parameter("scale", Tensor::ones({1})); }
  void register_dotted() { register_buffer("a.b", Tensor::ones({1})); }

 private:
  Tensor scale_;
};

TEST(Module, NamesFollowRegistrationOrderAsPyTorch) {
  Generator gen(1);
  Toy toy(gen);
  EXPECT_EQ(names_of(toy.named_parameters()),
            (std::vector<std::string>{"scale", "zeta.weight", "zeta.bias", "alpha.weight",
                                      "alpha.bias"}));
  EXPECT_EQ(names_of(toy.named_buffers()),
            (std::vector<std::string>{"steps", "alpha.running_mean", "alpha.running_var",
                                      "alpha.num_batches_tracked"}));
  // Own parameters, own buffers, then each child in turn.
  EXPECT_EQ(names_of(toy.state_dict()),
            (std::vector<std::string>{"scale", "steps", "zeta.weight", "zeta.bias", "alpha.weight",
                                      "alpha.bias", "alpha.running_mean", "alpha.running_var",
                                      "alpha.num_batches_tracked"}));
  EXPECT_EQ(toy.num_parameters(), 3 + 6 + 2 + 2 + 2);
  std::vector<std::string> modules;
  for (auto& [name, m] : toy.named_modules()) modules.push_back(name + ":" + m->type_name());
  EXPECT_EQ(modules, (std::vector<std::string>{":Toy", "zeta:Linear", "alpha:BatchNorm2d"}));
  for (const Tensor& p : toy.parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(Module, RejectsDuplicateAndDottedNames) {
  Generator gen(1);
  Toy toy(gen);
  EXPECT_THROW(toy.reregister_scale(), std::invalid_argument);
  EXPECT_THROW(toy.register_dotted(), std::invalid_argument);
}

TEST(Module, TrainAndEvalAreRecursive) {
  Generator gen(1);
  Sequential seq({std::make_shared<Sequential>(
                      std::vector<std::shared_ptr<Module>>{std::make_shared<BatchNorm2d>(2)}),
                  std::make_shared<ReLU>()});
  for (auto& [name, m] : seq.named_modules()) EXPECT_TRUE(m->is_training()) << name;
  seq.eval();
  for (auto& [name, m] : seq.named_modules()) EXPECT_FALSE(m->is_training()) << name;
  seq.train();
  for (auto& [name, m] : seq.named_modules()) EXPECT_TRUE(m->is_training()) << name;
}

TEST(Module, ToDTypeIsVisibleThroughHandlesFetchedBefore) {
  Generator gen(3);
  Linear fc(4, 2, gen);
  const std::vector<Tensor> before = fc.parameters();
  const std::vector<float> w32 = before[0].to_vector<float>();
  fc.to(DType::f64);
  EXPECT_EQ(before[0].dtype(), DType::f64);
  EXPECT_EQ(fc.weight().dtype(), DType::f64);
  const std::vector<double> w64 = before[0].to_vector<double>();
  ASSERT_EQ(w32.size(), w64.size());
  for (size_t i = 0; i < w32.size(); ++i) EXPECT_EQ(static_cast<double>(w32[i]), w64[i]);
  EXPECT_TRUE(before[0].requires_grad());
  // A forward in f64 reaches the gradients of the old handles.
  Tensor x = Tensor::ones({3, 4}, DType::f64);
  sum(fc(x)).backward();
  ASSERT_TRUE(before[0].grad().defined());
  EXPECT_EQ(before[0].grad().dtype(), DType::f64);
  EXPECT_EQ(before[1].grad().to_vector<double>(), (std::vector<double>{3.0, 3.0}));
}

TEST(Module, IntegerBuffersKeepTheirDtypeAndStayOnTheHost) {
  BatchNorm2d bn(2);
  bn.to(DType::f64);
  for (const auto& [name, t] : bn.named_buffers()) {
    EXPECT_EQ(t.dtype(), name == "num_batches_tracked" ? DType::i64 : DType::f64) << name;
  }
  bn.to(Device::cpu());  // a no-op move must keep everything in place
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  EXPECT_THROW(bn.to(DType::i64), std::invalid_argument);
}

TEST(Module, ToUnavailableDeviceIsAClearError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present: nothing to refuse";
  Generator gen(7);
  Linear fc(2, 2, gen);
  EXPECT_THROW(fc.to(Device::cuda()), std::runtime_error);
  EXPECT_EQ(fc.weight().device(), Device::cpu());
}

TEST(Module, ToCudaMovesParametersAndBuffersInPlace) {
  if (cuda_device_count() == 0) {
    GTEST_SKIP() << (cuda_compiled() ? "no CUDA device present" : "built without CUDA");
  }
  Generator gen(8);
  Sequential seq({std::make_shared<Conv2d>(2, 3, 3, gen), std::make_shared<BatchNorm2d>(3)});
  const NamedTensors before = seq.state_dict();
  std::vector<std::vector<float>> values;
  for (const auto& [name, t] : before) {
    if (t.dtype() == DType::f32) values.push_back(t.to_vector<float>());
  }
  seq.to(Device::cuda());
  size_t k = 0;
  for (const auto& [name, t] : before) {
    if (name.ends_with("num_batches_tracked")) {
      EXPECT_EQ(t.device(), Device::cpu()) << name;  // host counter
      continue;
    }
    EXPECT_EQ(t.device(), Device::cuda()) << name;  // handle fetched before the move
    EXPECT_EQ(t.to_vector<float>(), values[k++]) << name;
  }
  seq.to(Device::cpu());
  for (const auto& [name, t] : before) EXPECT_EQ(t.device(), Device::cpu()) << name;
}

TEST(Module, ZeroGradResetsToUndefined) {
  Generator gen(4);
  Linear fc(3, 2, gen);
  sum(fc(Tensor::ones({1, 3}))).backward();
  for (const Tensor& p : fc.parameters()) EXPECT_TRUE(p.grad().defined());
  fc.zero_grad();
  for (const Tensor& p : fc.parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(Module, ForwardHooksSeeInputAndOutputAndCanBeRemoved) {
  Generator gen(5);
  auto relu_layer = std::make_shared<ReLU>();
  Sequential seq({std::make_shared<Linear>(3, 4, gen), relu_layer});
  std::vector<Shape> seen;
  const int64_t id =
      relu_layer->add_forward_hook([&](Module& m, const Tensor& in, const Tensor& out) {
        EXPECT_EQ(m.type_name(), "ReLU");
        seen.push_back(in.shape());
        seen.push_back(out.shape());
      });
  seq(Tensor::ones({2, 3}));
  EXPECT_EQ(seen, (std::vector<Shape>{{2, 4}, {2, 4}}));
  relu_layer->remove_forward_hook(id);
  seq(Tensor::ones({2, 3}));
  EXPECT_EQ(seen.size(), 2u);
}

TEST(Module, SequentialNamesChildrenByIndex) {
  Generator gen(6);
  Sequential seq;
  seq.push_back(std::make_shared<Conv2d>(1, 2, 3, gen));
  seq.push_back(std::make_shared<ReLU>());
  seq.push_back(std::make_shared<BatchNorm2d>(2));
  EXPECT_EQ(names_of(seq.state_dict()),
            (std::vector<std::string>{"0.weight", "2.weight", "2.bias", "2.running_mean",
                                      "2.running_var", "2.num_batches_tracked"}));
  EXPECT_EQ(seq.at(1)->type_name(), "ReLU");
  EXPECT_THROW(seq.at(3), std::out_of_range);
  ModuleList list;
  list.push_back(std::make_shared<ReLU>());
  EXPECT_THROW(list(Tensor::ones({1})), std::logic_error);
}

}  // namespace
}  // namespace retort::nn
