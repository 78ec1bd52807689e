// Conv -> BN -> ReLU units (nn/units.h): which ops the fused paths run, and that they compute what
// the plain ops compute (a forward hook on every module forces the plain ops).
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "nn/fold.h"
#include "nn/layers.h"
#include "nn/models/registry.h"
#include "nn/models/slimmable_registry.h"
#include "nn/slimmable_model.h"
#include "tests/nn/nn_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::nn {
namespace {

// How many nodes of each op the autograd graph behind y holds.
std::map<std::string, int> op_counts(const Tensor& y) {
  std::map<std::string, int> counts;
  std::set<const Node*> seen;
  std::vector<std::shared_ptr<Node>> stack{y.grad_fn()};
  while (!stack.empty()) {
    const std::shared_ptr<Node> node = stack.back();
    stack.pop_back();
    if (!node || !seen.insert(node.get()).second) continue;
    ++counts[std::string(node->name())];
    for (const Edge& e : node->next_edges) {
      if (e.node) stack.push_back(e.node);
    }
  }
  return counts;
}

// A no-op forward hook on every module while it lives: the units then run the plain ops.
class HookEverything {
 public:
  explicit HookEverything(Module& model) {
    for (auto& [name, m] : model.named_modules()) {
      ids_.emplace_back(m, m->add_forward_hook([](Module&, const Tensor&, const Tensor&) {}));
    }
  }
  ~HookEverything() {
    for (auto& [m, id] : ids_) m->remove_forward_hook(id);
  }

 private:
  std::vector<std::pair<Module*, int64_t>> ids_;
};

std::vector<float> grads(const Module& model) {
  std::vector<float> out;
  for (const Tensor& p : model.parameters()) {
    const std::vector<float> g = p.grad().to_vector<float>();
    out.insert(out.end(), g.begin(), g.end());
  }
  return out;
}

std::vector<float> buffers(const Module& model) {
  std::vector<float> out;
  for (const auto& [name, t] : model.state_dict()) {
    if (t.dtype() != DType::f32) continue;
    const std::vector<float> v = t.to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

Tensor input(uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn({4, 3, 8, 8}, gen);
}

// Training: every BasicBlock ends in one batch_norm_add_relu, every conv-BN-ReLU unit in one
// batch_norm_relu; outputs and running statistics bit for bit those of the plain ops, gradients
// within the tolerance of a changed summation order.
TEST(Units, TrainingResNetRunsFusedBatchNormOpsAndMatchesThePlainOps) {
  auto fused = create_model("resnet8", {.seed = 5});
  auto plain = create_model("resnet8", {.seed = 5});
  HookEverything hooks(*plain);
  const Tensor x = input(11);
  const Tensor y_fused = (*fused)(x);
  const Tensor y_plain = (*plain)(x);

  const std::map<std::string, int> ops = op_counts(y_fused);
  EXPECT_EQ(ops.count("batch_norm_add_relu") ? ops.at("batch_norm_add_relu") : 0, 3);  // 3 blocks
  EXPECT_EQ(ops.count("batch_norm_relu") ? ops.at("batch_norm_relu") : 0, 4);  // stem + 3 conv1
  EXPECT_EQ(ops.count("add"), 0u);
  const std::map<std::string, int> plain_ops = op_counts(y_plain);
  EXPECT_EQ(plain_ops.count("batch_norm_add_relu"), 0u);
  EXPECT_EQ(plain_ops.at("add"), 3);

  EXPECT_EQ(y_fused.to_vector<float>(), y_plain.to_vector<float>());
  EXPECT_EQ(buffers(*fused), buffers(*plain));
  sum(y_fused).backward();
  sum(y_plain).backward();
  EXPECT_TRUE(test::all_close(grads(*fused), grads(*plain), test::kReferenceF32Rel,
                              test::kReferenceF32Abs));
}

// A hook on a block's second BN still sees that BN's own output (before the shortcut and the
// ReLU, so with negative values), as in the unfused block.
TEST(Units, AHookedBatchNormSeesItsOwnOutput) {
  auto model = create_model("resnet8", {.seed = 6});
  Module* bn2 = nullptr;
  for (auto& [name, m] : model->named_modules()) {
    if (name == "layer1.0.bn2") bn2 = m;
  }
  ASSERT_NE(bn2, nullptr);
  bool saw_negative = false;
  bn2->add_forward_hook([&](Module&, const Tensor&, const Tensor& out) {
    for (float v : out.to_vector<float>()) saw_negative = saw_negative || v < 0.0f;
  });
  (*model)(input(12));
  EXPECT_TRUE(saw_negative);
}

// Moves the running statistics away from 0 and 1 so that folding changes the weights.
void warm_statistics(Module& model) {
  model.train();
  NoGradGuard no_grad;
  for (uint64_t s = 0; s < 3; ++s) model(input(100 + s));
  model.eval();
}

void freeze(Module& model) {
  for (Tensor p : model.parameters()) p.set_requires_grad(false);
}

// Folded and unhooked, a frozen resnet runs one conv2d_fused per conv-BN-ReLU unit (the
// projection shortcuts stay conv2d with the folded bias) and no BN op; the result is bit for bit
// the folded plain ops' and within path tolerance of the unfolded model.
TEST(Units, FoldedResNetRunsOneConvPerUnit) {
  std::shared_ptr<Module> fused = create_model("resnet8", {.seed = 7});
  std::shared_ptr<Module> plain = create_model("resnet8", {.seed = 7});
  std::shared_ptr<Module> unfolded = create_model("resnet8", {.seed = 7});
  for (Module* m : {fused.get(), plain.get(), unfolded.get()}) {
    warm_statistics(*m);
    freeze(*m);
  }
  BatchNormFold fold_fused(fused), fold_plain(plain);
  HookEverything hooks(*plain);
  // Inputs that require grad, so that the graph shows which ops ran.
  Tensor x_fused = input(13), x_plain = input(13);
  x_fused.set_requires_grad(true);
  x_plain.set_requires_grad(true);
  const Tensor y_fused = (*fused)(x_fused);
  const Tensor y_plain = (*plain)(x_plain);
  const Tensor y_unfolded = (*unfolded)(input(13));

  const std::map<std::string, int> ops = op_counts(y_fused);
  EXPECT_EQ(ops.at("conv2d_fused"), 7);  // stem + 2 per block
  EXPECT_EQ(ops.at("conv2d"), 2);        // the two projection shortcuts
  for (const char* bn : {"batch_norm", "batch_norm_relu", "batch_norm_add_relu", "add", "relu"}) {
    EXPECT_EQ(ops.count(bn), 0u) << bn;
  }
  EXPECT_EQ(op_counts(y_plain).count("conv2d_fused"), 0u);
  EXPECT_EQ(y_fused.to_vector<float>(), y_plain.to_vector<float>());
  EXPECT_TRUE(test::all_close(y_fused.to_vector<float>(), y_unfolded.to_vector<float>(),
                              test::kParityF32Rel, test::kParityF32Abs));

  // The input's gradient flows through the fused convs as through the plain ones.
  sum(y_fused).backward();
  sum(y_plain).backward();
  EXPECT_TRUE(test::all_close(x_fused.grad().to_vector<float>(), x_plain.grad().to_vector<float>(),
                              test::kReferenceF32Rel, test::kReferenceF32Abs));
}

// The slimmable twin at each width: fused units folded, the same result as its plain ops.
TEST(Units, FoldedSlimmableResNetRunsOneConvPerUnitAtEveryWidth) {
  std::shared_ptr<SlimmableModel> fused = create_slimmable_model("resnet8", {.seed = 8});
  std::shared_ptr<SlimmableModel> plain = create_slimmable_model("resnet8", {.seed = 8});
  for (SlimmableModel* m : {fused.get(), plain.get()}) {
    for (int64_t w = 0; w < m->num_widths(); ++w) {
      m->set_width(w);
      warm_statistics(*m);
    }
    freeze(*m);
  }
  BatchNormFold fold_fused(fused), fold_plain(plain);
  HookEverything hooks(*plain);
  for (int64_t w = 0; w < fused->num_widths(); ++w) {
    SCOPED_TRACE("width index " + std::to_string(w));
    fused->set_width(w);
    plain->set_width(w);
    Tensor x = input(14);
    x.set_requires_grad(true);
    const Tensor y_fused = (*fused)(x);
    const Tensor y_plain = (*plain)(x);
    EXPECT_EQ(op_counts(y_fused).at("conv2d_fused"), 7);
    EXPECT_EQ(y_fused.to_vector<float>(), y_plain.to_vector<float>());
  }
}

int count_modules(Module& model, const std::string& type) {
  int n = 0;
  for (auto& [name, m] : model.named_modules()) n += m->type_name() == type;
  return n;
}

int count(const std::map<std::string, int>& ops, const std::string& op) {
  const auto it = ops.find(op);
  return it == ops.end() ? 0 : it->second;
}

// MobileNetV2 (plain and slimmable) holds its conv -> BN -> ReLU units as Sequential children:
// each runs as batch_norm_relu in training and as one conv2d_fused folded, with the plain ops'
// results, and no ReLU runs on its own.
TEST(Units, MobileNetV2SequentialUnitsRunFused) {
  for (const bool slimmable : {false, true}) {
    SCOPED_TRACE(slimmable ? "slimmable" : "plain");
    auto make = [slimmable]() -> std::shared_ptr<Module> {
      if (slimmable) return create_slimmable_model("MobileNetV2", {.seed = 9});
      return create_model("MobileNetV2", {.seed = 9});
    };
    std::shared_ptr<Module> fused = make(), plain = make();
    const int units = count_modules(*fused, "ReLU");
    ASSERT_GT(units, 2);
    HookEverything hooks(*plain);

    const Tensor y_fused = (*fused)(input(15));
    const Tensor y_plain = (*plain)(input(15));
    const std::map<std::string, int> ops = op_counts(y_fused);
    EXPECT_EQ(count(ops, "batch_norm_relu"), units);
    EXPECT_EQ(count(ops, "relu"), 0);
    EXPECT_EQ(count(op_counts(y_plain), "relu"), units);
    EXPECT_EQ(y_fused.to_vector<float>(), y_plain.to_vector<float>());
    EXPECT_EQ(buffers(*fused), buffers(*plain));

    for (Module* m : {fused.get(), plain.get()}) {
      warm_statistics(*m);
      freeze(*m);
    }
    BatchNormFold fold_fused(fused), fold_plain(plain);
    Tensor x_fused = input(16), x_plain = input(16);
    x_fused.set_requires_grad(true);
    x_plain.set_requires_grad(true);
    const Tensor z_fused = (*fused)(x_fused);
    const Tensor z_plain = (*plain)(x_plain);
    const std::map<std::string, int> folded_ops = op_counts(z_fused);
    EXPECT_EQ(count(folded_ops, "conv2d_fused"), units);
    EXPECT_EQ(count(folded_ops, "relu") + count(folded_ops, "batch_norm_relu"), 0);
    EXPECT_EQ(z_fused.to_vector<float>(), z_plain.to_vector<float>());
  }
}

}  // namespace
}  // namespace retort::nn
