// PWKD (Partial-to-Whole KD), retort's reconstruction (spec distillation.md 3.4): joint training of
// a slimmable teacher, and staged distillation from its narrowest to its full sub-network.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "distill/trainer.h"
#include "nn/slimmable_model.h"

namespace retort::distill {

// Teacher training, S-Net rule: every step forwards the batch at every width, widest first (the
// Trainer's own forward is the widest), sums the per-width losses, and one backward + one SGD step
// update the shared weights. Per width: label cross-entropy (default), or in-place distillation
// (narrower widths learn the widest width's detached softmax).
class SlimmableJointObjective final : public Objective {
 public:
  SlimmableJointObjective(std::shared_ptr<nn::SlimmableModel> model, bool inplace_distillation);
  std::string name() const override { return "slimmable-joint"; }
  Tensor loss(const Tensor& widest_logits, const data::Batch& batch) override;

 private:
  std::shared_ptr<nn::SlimmableModel> model_;
  bool inplace_;
};

// Evaluates every narrower sub-network after each epoch (the Trainer evaluates the widest) and
// logs "acc_w<width>" per width, so a report shows each width's test accuracy.
class SlimmableEvalPlugin final : public TrainerPlugin {
 public:
  explicit SlimmableEvalPlugin(std::shared_ptr<nn::SlimmableModel> model) : model_(std::move(model)) {}
  std::string name() const override { return "slimmable-eval"; }
  void on_epoch_end(Trainer& trainer, int64_t epoch) override;
  std::vector<std::pair<std::string, double>> log_fields() const override { return fields_; }

 private:
  std::shared_ptr<nn::SlimmableModel> model_;
  std::vector<std::pair<std::string, double>> fields_;
};

struct PwkdOptions {
  double lr_max = 0.05;  // the cosine restarts at this rate at the start of every stage
  double lr_min = 0.0;
};

// Stage k of K = number of widths covers epochs [floor(k E / K) + 1, floor((k + 1) E / K)]
// (equal stages when K divides E). Returns the 0-based stage of a 1-based epoch.
int64_t pwkd_stage_of(int64_t epoch, int64_t epochs, int64_t stages);
// First and last 1-based epoch of stage k.
std::pair<int64_t, int64_t> pwkd_stage_epochs(int64_t stage, int64_t epochs, int64_t stages);
// The learning rate at (1-based) epoch + fraction of its batches: a cosine from lr_max to lr_min
// over each stage, restarting at every stage.
double pwkd_lr(const PwkdOptions& options, int64_t epoch, double fraction, int64_t epochs,
               int64_t stages);

// Student distillation from partial to whole: at each stage the teacher (used by the base
// objective, e.g. KdObjective) is switched to that stage's sub-network, narrow to wide, and the
// learning rate follows pwkd_lr. The optimiser (and its momentum buffers) carries over between
// stages. Composes with KCD: PWKD picks the teacher of each epoch, KCD the samples.
class PwkdPlugin final : public TrainerPlugin {
 public:
  PwkdPlugin(std::shared_ptr<nn::SlimmableModel> teacher, PwkdOptions options);
  std::string name() const override { return "pwkd"; }
  void on_epoch_begin(Trainer& trainer, int64_t epoch) override;
  std::vector<std::pair<std::string, double>> log_fields() const override;
  int64_t stage() const { return stage_; }

 private:
  std::shared_ptr<nn::SlimmableModel> teacher_;
  PwkdOptions options_;
  int64_t stage_ = 0;
};

}  // namespace retort::distill
