// The KD objective: teacher forward without gradients, then cross-entropy plus the KD divergence.
#include "distill/kd.h"

#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace retort::distill {

KdObjective::KdObjective(std::shared_ptr<nn::Module> teacher, KdOptions options)
    : options_(options) {
  if (!(options_.temperature > 0.0)) throw std::invalid_argument("--kd-temperature must be > 0");
  if (options_.gamma < 0.0 || options_.alpha < 0.0) {
    throw std::invalid_argument("--gamma and --alpha must be >= 0");
  }
  set_teacher(std::move(teacher));
}

void KdObjective::set_teacher(std::shared_ptr<nn::Module> teacher) {
  if (!teacher) throw std::invalid_argument("KD needs a teacher model");
  // Fold the new teacher before releasing the old fold, so a refusal leaves the objective as it
  // was.
  nn::BatchNormFold fold =
      options_.fold_teacher_bn ? nn::BatchNormFold(teacher) : nn::BatchNormFold();
  teacher->eval();
  teacher_fold_ = std::move(fold);
  teacher_ = std::move(teacher);
}

nn::Module& KdObjective::teacher() {
  teacher_fold_.invalidate();
  return *teacher_;
}

void KdObjective::on_epoch_begin(int64_t /*epoch*/) { teacher_->eval(); }

Tensor KdObjective::loss(const Tensor& logits, const data::Batch& batch) {
  Tensor teacher_logits;
  {
    NoGradGuard no_grad;
    teacher_logits = (*teacher_)(batch.images);
  }
  if (teacher_logits.shape() != logits.shape()) {
    throw std::invalid_argument("KD: teacher logits " + shape_str(teacher_logits.shape()) +
                                " do not match student logits " + shape_str(logits.shape()) +
                                " (do both models have the same number of classes?)");
  }
  Tensor kd = kd_loss(logits, teacher_logits, options_.temperature);
  if (options_.gamma == 0.0) return kd * options_.alpha;
  return add(cross_entropy(logits, batch.labels) * options_.gamma, kd * options_.alpha);
}

}  // namespace retort::distill
