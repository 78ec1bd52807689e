// The classic KD objective (Hinton et al.) as RepDistiller computes it: gamma*CE + alpha*KL_T*T^2.
#pragma once

#include <memory>

#include "distill/trainer.h"
#include "nn/fold.h"

namespace retort::distill {

struct KdOptions {
  double gamma = 0.1;        // weight of the label cross-entropy (RepDistiller's -r)
  double alpha = 0.9;        // weight of the KD divergence (-a)
  double temperature = 4.0;  // --kd_T
  // Run the teacher's no-grad evaluation forward with its BNs folded into the convs before them
  // (nn/fold.h): the same logits up to rounding, one conv op instead of conv + batch_norm.
  bool fold_teacher_bn = true;
};

// loss = gamma * CE(z_s, y) + alpha * T^2 * batchmean KL(softmax(z_t/T) || softmax(z_s/T)).
// The teacher runs in eval mode (running BN statistics) under NoGradGuard on the same
// (augmented) images as the student, as RepDistiller's train_distill does.
//
// With fold_teacher_bn the objective holds a BatchNormFold on the teacher for its lifetime. The
// fold follows the teacher by itself: a width switch (PWKD's stages), a move to another device or
// dtype, load_state_dict, training-mode passes and SGD steps all make it recompute at the next
// loss(). The teacher is meant to be frozen while folded; a write into its tensors through a raw
// handle is the one change the fold cannot see (call teacher(), which marks the fold for
// recomputation, or Module::mark_state_changed()).
class KdObjective final : public Objective {
 public:
  KdObjective(std::shared_ptr<nn::Module> teacher, KdOptions options);
  std::string name() const override { return "kd"; }
  Tensor loss(const Tensor& logits, const data::Batch& batch) override;
  void on_epoch_begin(int64_t epoch) override;
  // PWKD swaps or reconfigures the teacher between stages. Handing out the teacher for changes
  // marks the fold for recomputation at the next loss().
  nn::Module& teacher();
  // Replaces the teacher (in eval mode, folded when the options say so); the old one is unfolded.
  void set_teacher(std::shared_ptr<nn::Module> teacher);
  const KdOptions& options() const { return options_; }
  // The teacher's BN fold (inactive when fold_teacher_bn is off).
  const nn::BatchNormFold& teacher_fold() const { return teacher_fold_; }

 private:
  std::shared_ptr<nn::Module> teacher_;
  KdOptions options_;
  nn::BatchNormFold teacher_fold_;  // after teacher_: released first
};

}  // namespace retort::distill
