// The KD objective against RepDistiller's loss computed by PyTorch, and its teacher handling.
#include <gtest/gtest.h>

#include "distill/kd.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
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

}  // namespace
}  // namespace retort::distill
