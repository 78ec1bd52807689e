// The classic KD objective (Hinton et al.) as RepDistiller computes it: gamma*CE + alpha*KL_T*T^2.
#pragma once

#include <memory>

#include "distill/trainer.h"

namespace retort::distill {

struct KdOptions {
  double gamma = 0.1;        // weight of the label cross-entropy (RepDistiller's -r)
  double alpha = 0.9;        // weight of the KD divergence (-a)
  double temperature = 4.0;  // --kd_T
};

// loss = gamma * CE(z_s, y) + alpha * T^2 * batchmean KL(softmax(z_t/T) || softmax(z_s/T)).
// The teacher runs in eval mode (running BN statistics) under NoGradGuard on the same
// (augmented) images as the student, as RepDistiller's train_distill does.
class KdObjective final : public Objective {
 public:
  KdObjective(std::shared_ptr<nn::Module> teacher, KdOptions options);
  std::string name() const override { return "kd"; }
  Tensor loss(const Tensor& logits, const data::Batch& batch) override;
  void on_epoch_begin(int64_t epoch) override;
  // PWKD swaps or reconfigures the teacher between stages.
  nn::Module& teacher() { return *teacher_; }
  const KdOptions& options() const { return options_; }

 private:
  std::shared_ptr<nn::Module> teacher_;
  KdOptions options_;
};

}  // namespace retort::distill
