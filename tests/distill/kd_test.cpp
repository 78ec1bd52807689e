// The KD objective against RepDistiller's loss computed by PyTorch, and its teacher handling.
#include <gtest/gtest.h>

#include "distill/kd.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/models/registry.h"
#include "nn/models/slimmable_registry.h"
#include "tests/distill/distill_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::distill {
namespace {

// A teacher that returns fixed logits and records how it was called.
class FixedTeacher final : public nn::Module {
 public:
  explicit FixedTeacher(Tensor logits) : logits_(std::move(logits)) {}
  Tensor forward(const Tensor&) override {
    called_in_training_mode = is_training();
    called_with_grad = grad_mode_enabled();
    return logits_;
  }
  std::string type_name() const override { return "FixedTeacher"; }
  bool called_in_training_mode = true;
  bool called_with_grad = true;

 private:
  Tensor logits_;
};

TEST(KdObjective, MatchesRepDistillersLossAndGradient) {
  const SafetensorsFile f = load_safetensors(std::string(RETORT_FIXTURE_DIR) + "/kd_objective_T4.safetensors");
  for (DType dtype : {DType::f64, DType::f32}) {
    auto teacher = std::make_shared<FixedTeacher>(f.at("teacher").to(dtype));
    KdObjective objective(teacher, KdOptions{0.1, 0.9, 4.0});
    Tensor student = f.at("student").to(dtype).set_requires_grad(true);
    data::Batch batch{Tensor::zeros({8, 1, 2, 2}, dtype), f.at("labels"), Tensor()};
    teacher->train();  // the objective must switch it to eval mode itself
    objective.on_epoch_begin(1);
    Tensor loss = objective.loss(student, batch);
    loss.backward();
    const bool f64 = dtype == DType::f64;
    const double rel = f64 ? test::kGoldenF64Rel : test::kGoldenF32Rel;
    const double abs = f64 ? test::kGoldenF64Abs : test::kGoldenF32Abs;
    EXPECT_TRUE(test::all_close(std::vector<double>{loss.to(DType::f64).item()},
                                f.at("loss").to_vector<double>(), rel, abs));
    EXPECT_TRUE(test::all_close(student.grad().to(DType::f64).to_vector<double>(),
                                f.at("grad_student").to_vector<double>(), rel, abs));
    EXPECT_FALSE(teacher->called_in_training_mode) << "the teacher must run in eval mode";
    EXPECT_FALSE(teacher->called_with_grad) << "the teacher must run under NoGradGuard";
  }
}

TEST(KdObjective, RejectsMismatchedClassCounts) {
  auto teacher = std::make_shared<FixedTeacher>(Tensor::zeros({4, 100}));
  KdObjective objective(teacher, KdOptions{});
  Tensor student = Tensor::zeros({4, 10}).set_requires_grad(true);
  data::Batch batch{Tensor::zeros({4, 1, 2, 2}), Tensor::zeros({4}, DType::i64), Tensor()};
  try {
    objective.loss(student, batch);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 100]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(KdObjective(teacher, KdOptions{0.1, 0.9, 0.0}), std::invalid_argument);
}

// --- the teacher's BN fold (nn/fold.h) -----------------------------------------------------------

constexpr int64_t kClasses = 10;

// Random BN affine parameters and running statistics (every width's, for a slimmable teacher),
// so a fold that gets any of them wrong changes the teacher's logits.
void randomize_batch_norms(nn::Module& model, uint64_t seed) {
  Generator gen(seed);
  for (auto& [name, m] : model.named_modules()) {
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(m)) {
      nn::init::uniform_(bn->weight(), 0.5, 1.5, gen);
      nn::init::uniform_(bn->bias(), -0.5, 0.5, gen);
      nn::init::uniform_(bn->running_mean(), -0.5, 0.5, gen);
      nn::init::uniform_(bn->running_var(), 0.5, 2.0, gen);
    }
  }
}

std::shared_ptr<nn::Module> random_teacher(DType dtype, uint64_t seed = 3) {
  auto teacher = nn::create_model("resnet8", {.num_classes = kClasses, .seed = seed});
  randomize_batch_norms(*teacher, seed + 10);
  teacher->to(dtype);
  return teacher;
}

struct KdCase {
  Tensor student;  // (B, classes) logits, requires grad
  data::Batch batch;
};

KdCase kd_case(DType dtype, uint64_t seed) {
  Generator gen(seed);
  KdCase c;
  c.student = Tensor::randn({3, kClasses}, gen, 0.0, 2.0, dtype).set_requires_grad(true);
  c.batch.images = Tensor::randn({3, 3, 16, 16}, gen, 0.0, 1.0, dtype);
  c.batch.labels = Tensor::from_vector<int64_t>({1, 7, 4}, {3});
  return c;
}

// The loss and the student's gradient, as doubles (loss first).
std::vector<double> loss_and_gradient(KdObjective& objective, const KdCase& c) {
  Tensor student = c.student.detach().clone().set_requires_grad(true);
  Tensor loss = objective.loss(student, c.batch);
  loss.backward();
  std::vector<double> out{loss.to(DType::f64).item()};
  for (double g : student.grad().to(DType::f64).to_vector<double>()) out.push_back(g);
  return out;
}

::testing::AssertionResult same_up_to_folding(const std::vector<double>& folded,
                                              const std::vector<double>& plain, DType dtype) {
  const bool f64 = dtype == DType::f64;
  return test::all_close(folded, plain, f64 ? test::kPathF64Rel : test::kParityF32Rel,
                         f64 ? test::kPathF64Abs : test::kParityF32Abs);
}

// Whether an evaluation forward of `model` skips any BN op (a BN hands back its input).
bool runs_folded(nn::Module& model, DType dtype) {
  bool skipped = false;
  std::vector<std::pair<nn::Module*, int64_t>> hooks;
  for (auto& [name, m] : model.named_modules()) {
    if (dynamic_cast<nn::BatchNorm2d*>(m) == nullptr) continue;
    hooks.emplace_back(m,
                       m->add_forward_hook([&](nn::Module&, const Tensor& in, const Tensor& out) {
                         skipped = skipped || in.impl() == out.impl();
                       }));
  }
  {
    NoGradGuard no_grad;
    model.eval();
    Generator gen(1);
    model(Tensor::randn({1, 3, 8, 8}, gen, 0.0, 1.0, dtype));
  }
  for (auto& [m, id] : hooks) m->remove_forward_hook(id);
  return skipped;
}

TEST(KdObjective, FoldingTheTeacherBatchNormLeavesTheLossUnchanged) {
  for (DType dtype : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto folded_teacher = random_teacher(dtype);
    auto plain_teacher = random_teacher(dtype);
    const auto bytes = test::weight_bytes(*folded_teacher);
    KdObjective folded(folded_teacher, KdOptions{});
    KdObjective plain(plain_teacher, KdOptions{.fold_teacher_bn = false});
    EXPECT_TRUE(folded.options().fold_teacher_bn) << "folding is the default";
    EXPECT_TRUE(folded.teacher_fold().active());
    EXPECT_EQ(folded.teacher_fold().pairs().size(), 9u);  // every conv -> BN unit of resnet8
    EXPECT_FALSE(plain.teacher_fold().active());
    for (uint64_t step = 0; step < 2; ++step) {
      const KdCase c = kd_case(dtype, 20 + step);
      folded_teacher->train();  // the objective must switch it back to eval, as before
      plain_teacher->train();
      folded.on_epoch_begin(1);
      plain.on_epoch_begin(1);
      EXPECT_TRUE(
          same_up_to_folding(loss_and_gradient(folded, c), loss_and_gradient(plain, c), dtype));
    }
    EXPECT_TRUE(runs_folded(*folded_teacher, dtype));
    EXPECT_FALSE(runs_folded(*plain_teacher, dtype));
    EXPECT_EQ(test::weight_bytes(*folded_teacher), bytes) << "folding must not touch the teacher";
  }
}

// PWKD switches the teacher's width between stages (directly on the slimmable model, or through
// teacher()): the fold must follow, never serving another width's folded weights.
TEST(KdObjective, TeacherFoldFollowsPwkdWidthSwitches) {
  for (DType dtype : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto make = [&] {
      auto t = nn::create_slimmable_model("resnet8", {.num_classes = kClasses, .seed = 4});
      randomize_batch_norms(*t, 14);
      t->to(dtype);
      return t;
    };
    auto folded_teacher = make();
    auto plain_teacher = make();
    KdObjective folded(folded_teacher, KdOptions{});
    KdObjective plain(plain_teacher, KdOptions{.fold_teacher_bn = false});
    const KdCase c = kd_case(dtype, 30);
    for (int64_t k : {0, 1, 2, 3, 1}) {
      SCOPED_TRACE("width index " + std::to_string(k));
      if (k % 2 == 0) {
        folded_teacher->set_width(k);  // as PwkdPlugin does
      } else {
        dynamic_cast<nn::SlimmableModel&>(folded.teacher()).set_width(k);
      }
      plain_teacher->set_width(k);
      EXPECT_TRUE(
          same_up_to_folding(loss_and_gradient(folded, c), loss_and_gradient(plain, c), dtype));
    }
  }
}

// New weights loaded into the teacher after the objective folded it are used at once.
TEST(KdObjective, TeacherFoldFollowsALoadedState) {
  auto folded_teacher = random_teacher(DType::f64, 3);
  auto plain_teacher = random_teacher(DType::f64, 3);
  KdObjective folded(folded_teacher, KdOptions{});
  KdObjective plain(plain_teacher, KdOptions{.fold_teacher_bn = false});
  const KdCase c = kd_case(DType::f64, 40);
  loss_and_gradient(folded, c);
  const nn::NamedTensors other = random_teacher(DType::f64, 8)->state_dict();
  folded_teacher->load_state_dict(other);
  plain_teacher->load_state_dict(other);
  EXPECT_TRUE(
      same_up_to_folding(loss_and_gradient(folded, c), loss_and_gradient(plain, c), DType::f64));
}

// Swapping the teacher moves the fold: the old teacher runs its BNs again, the new one is folded,
// and destroying the objective releases the fold.
TEST(KdObjective, SetTeacherMovesTheFold) {
  auto first = random_teacher(DType::f64, 3);
  auto second = random_teacher(DType::f64, 5);
  auto plain_second = random_teacher(DType::f64, 5);
  {
    KdObjective objective(first, KdOptions{});
    EXPECT_TRUE(runs_folded(*first, DType::f64));
    second->train();
    objective.set_teacher(second);
    EXPECT_FALSE(second->is_training()) << "a new teacher is put in eval mode";
    EXPECT_FALSE(runs_folded(*first, DType::f64));
    EXPECT_TRUE(runs_folded(*second, DType::f64));
    KdObjective plain(plain_second, KdOptions{.fold_teacher_bn = false});
    const KdCase c = kd_case(DType::f64, 50);
    EXPECT_TRUE(same_up_to_folding(loss_and_gradient(objective, c), loss_and_gradient(plain, c),
                                   DType::f64));
    EXPECT_THROW(objective.set_teacher(nullptr), std::invalid_argument);
    EXPECT_TRUE(runs_folded(*second, DType::f64)) << "a refused swap changes nothing";
  }
  EXPECT_FALSE(runs_folded(*second, DType::f64));
}

}  // namespace
}  // namespace retort::distill
