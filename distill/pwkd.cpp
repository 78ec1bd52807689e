// PWKD: the slimmable teacher's joint objective, per-width evaluation, and the staged student.
#include "distill/pwkd.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "engine/ops.h"

namespace retort::distill {

SlimmableJointObjective::SlimmableJointObjective(std::shared_ptr<nn::SlimmableModel> model,
                                                 bool inplace_distillation)
    : model_(std::move(model)), inplace_(inplace_distillation) {
  if (!model_) throw std::invalid_argument("slimmable joint training needs a slimmable model");
}

Tensor SlimmableJointObjective::loss(const Tensor& widest_logits, const data::Batch& batch) {
  const int64_t widest = model_->num_widths() - 1;
  if (model_->width_index() != widest) {
    throw std::logic_error("slimmable joint training: the trainer's forward must run the widest "
                           "width first");
  }
  const nn::WidthLossFn width_loss = inplace_ ? nn::inplace_distillation_loss(batch.labels)
                                              : nn::label_cross_entropy_loss(batch.labels);
  Tensor total = width_loss(widest_logits, widest, Tensor());
  const Tensor widest_detached = widest_logits.detach();
  try {
    for (int64_t k = widest - 1; k >= 0; --k) {
      model_->set_width(k);
      total = add(total, width_loss((*model_)(batch.images), k, widest_detached));
    }
  } catch (...) {
    model_->set_width(widest);
    throw;
  }
  model_->set_width(widest);
  return total;
}

void SlimmableEvalPlugin::on_epoch_end(Trainer& trainer, int64_t /*epoch*/) {
  fields_.clear();
  const int64_t active = model_->width_index();
  for (int64_t k = 0; k < model_->num_widths(); ++k) {
    model_->set_width(k);
    const auto [loss, top1, top5] = trainer.evaluate();
    (void)loss;
    (void)top5;
    char key[32];
    std::snprintf(key, sizeof(key), "acc_w%g", model_->widths()[k]);
    fields_.emplace_back(key, top1);
  }
  model_->set_width(active);
}

int64_t pwkd_stage_of(int64_t epoch, int64_t epochs, int64_t stages) {
  for (int64_t k = 0; k < stages; ++k) {
    if (epoch <= pwkd_stage_epochs(k, epochs, stages).second) return k;
  }
  return stages - 1;
}

std::pair<int64_t, int64_t> pwkd_stage_epochs(int64_t stage, int64_t epochs, int64_t stages) {
  return {stage * epochs / stages + 1, (stage + 1) * epochs / stages};
}

double pwkd_lr(const PwkdOptions& o, int64_t epoch, double fraction, int64_t epochs,
               int64_t stages) {
  const int64_t k = pwkd_stage_of(epoch, epochs, stages);
  const auto [first, last] = pwkd_stage_epochs(k, epochs, stages);
  const double length = static_cast<double>(last - first + 1);
  const double t = static_cast<double>(epoch - first) + fraction;
  return o.lr_min + 0.5 * (o.lr_max - o.lr_min) * (1.0 + std::cos(M_PI * t / length));
}

PwkdPlugin::PwkdPlugin(std::shared_ptr<nn::SlimmableModel> teacher, PwkdOptions options)
    : teacher_(std::move(teacher)), options_(options) {
  if (!teacher_) throw std::invalid_argument("PWKD needs a slimmable teacher");
  if (!(options_.lr_max > 0.0) || options_.lr_min < 0.0 || options_.lr_min > options_.lr_max) {
    throw std::invalid_argument("PWKD: need 0 <= lr_min <= lr_max and lr_max > 0");
  }
}

void PwkdPlugin::on_epoch_begin(Trainer& trainer, int64_t epoch) {
  const int64_t epochs = trainer.options().epochs, stages = teacher_->num_widths();
  if (epochs < stages) {
    throw std::invalid_argument("PWKD needs at least one epoch per stage: --epochs " +
                                std::to_string(epochs) + " < " + std::to_string(stages) +
                                " teacher widths");
  }
  const PwkdOptions options = options_;
  trainer.set_lr_function([options, epochs, stages](int64_t e, double fraction) {
    return pwkd_lr(options, e, fraction, epochs, stages);
  });
  stage_ = pwkd_stage_of(epoch, epochs, stages);
  teacher_->set_width(stage_);
  teacher_->eval();
}

std::vector<std::pair<std::string, double>> PwkdPlugin::log_fields() const {
  return {{"stage", static_cast<double>(stage_ + 1)}, {"teacher_width", teacher_->widths()[stage_]}};
}

}  // namespace retort::distill
