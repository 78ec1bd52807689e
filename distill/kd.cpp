// The KD objective: teacher forward without gradients, then cross-entropy plus the KD divergence.
#include "distill/kd.h"

#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace retort::distill {

KdObjective::KdObjective(std::shared_ptr<nn::Module> teacher, KdOptions options)
    : teacher_(std::move(teacher)), options_(options) {
  if (!teacher_) throw std::invalid_argument("KD needs a teacher model");
  if (!(options_.temperature > 0.0)) throw std::invalid_argument("--kd-temperature must be > 0");
  if (options_.gamma < 0.0 || options_.alpha < 0.0) {
    throw std::invalid_argument("--gamma and --alpha must be >= 0");
  }
  teacher_->eval();
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
