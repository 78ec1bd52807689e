// Losses: cross-entropy, the KD divergence and KD loss, and the per-sample softmax entropy.
#include "kernels/loss.h"

#include "engine/ops/common.h"

namespace retort {
namespace {

using ops_detail::check_floating;
using ops_detail::check_rank;
using ops_detail::record;

void check_logits(const Tensor& logits, const char* op, const char* arg) {
  check_floating(logits, op, arg);
  check_rank(logits, 2, op, arg);
  if (logits.size(1) < 1) {
    throw std::invalid_argument(std::string(op) + ": " + arg + " has no classes: " +
                                shape_str(logits.shape()));
  }
}

void check_temperature(double temperature, const char* op) {
  if (!(temperature > 0.0)) {
    throw std::invalid_argument(std::string(op) + ": temperature must be > 0, got " +
                                std::to_string(temperature));
  }
}

struct CrossEntropyBackward final : Node {
  Tensor log_prob, labels;
  std::string_view name() const override { return "cross_entropy"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gx = Tensor::empty(log_prob.shape(), log_prob.dtype(), log_prob.device());
    dispatch<OpId::cross_entropy>(gx.device(), gx.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::cross_entropy_backward(ctx, gx.size(0), gx.size(1), log_prob.data<T>(),
                                      labels.data<int64_t>(), g.data<T>(), gx.data<T>());
    });
    return {gx, Tensor()};
  }
  void release_saved() override { log_prob = labels = Tensor(); }
};

struct KdDivergenceBackward final : Node {
  Tensor student_log_prob, teacher_prob;
  double temperature = 1.0;
  std::string_view name() const override { return "kd_divergence"; }
  std::vector<Tensor> apply(const Tensor& g_in) override {
    Tensor g = g_in.contiguous();
    Tensor gs = Tensor::empty(student_log_prob.shape(), student_log_prob.dtype(),
                              student_log_prob.device());
    dispatch<OpId::kd_divergence>(gs.device(), gs.dtype(), [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::kd_divergence_backward(ctx, gs.size(0), gs.size(1), static_cast<T>(temperature),
                                      student_log_prob.data<T>(), teacher_prob.data<T>(),
                                      g.data<T>(), gs.data<T>());
    });
    return {gs, Tensor()};
  }
  void release_saved() override { student_log_prob = teacher_prob = Tensor(); }
};

}  // namespace

Tensor cross_entropy(const Tensor& logits_in, const Tensor& labels_in, Reduction reduction) {
  check_logits(logits_in, "cross_entropy", "logits");
  check_defined(labels_in, "cross_entropy", "labels");
  if (labels_in.dtype() != DType::i64 || labels_in.dim() != 1 ||
      labels_in.size(0) != logits_in.size(0)) {
    throw std::invalid_argument("cross_entropy: labels must be i64 of shape [" +
                                std::to_string(logits_in.size(0)) + "], got " + labels_in.str());
  }
  if (labels_in.device() != logits_in.device()) {
    throw std::invalid_argument("cross_entropy: logits on " + logits_in.device().str() +
                                " but labels on " + labels_in.device().str());
  }
  const int64_t rows = logits_in.size(0), cols = logits_in.size(1);
  Tensor labels = labels_in.contiguous();
  // CPU labels are checked here (an out-of-range label would read outside its row). Device
  // labels are not copied back for a check, which would synchronise the step; the CUDA kernel
  // yields NaN for them instead.
  if (labels.device().is_cpu()) {
    const int64_t* label = labels.data<int64_t>();
    for (int64_t i = 0; i < rows; ++i) {
      if (label[i] < 0 || label[i] >= cols) {
        throw std::invalid_argument("cross_entropy: label " + std::to_string(label[i]) +
                                    " of sample " + std::to_string(i) + " is outside [0, " +
                                    std::to_string(cols) + ")");
      }
    }
  }
  Tensor logits = logits_in.contiguous();
  Tensor loss = Tensor::empty({rows}, logits.dtype(), logits.device());
  Tensor log_prob = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  dispatch<OpId::cross_entropy>(logits.device(), logits.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::cross_entropy_forward(ctx, rows, cols, logits.data<T>(), labels.data<int64_t>(),
                                   loss.data<T>(), log_prob.data<T>());
  });
  record<CrossEntropyBackward>(loss, {&logits_in, &labels_in}, [&] {
    auto node = std::make_shared<CrossEntropyBackward>();
    node->log_prob = log_prob;
    node->labels = labels.detach();
    return node;
  });
  switch (reduction) {
    case Reduction::none: return loss;
    case Reduction::sum: return sum(loss);
    case Reduction::mean: return mean(loss);
  }
  return loss;
}

Tensor kd_divergence(const Tensor& student_in, const Tensor& teacher_in, double temperature) {
  check_logits(student_in, "kd_divergence", "student_logits");
  check_logits(teacher_in, "kd_divergence", "teacher_logits");
  check_same_device_dtype(student_in, teacher_in, "kd_divergence");
  check_temperature(temperature, "kd_divergence");
  if (student_in.shape() != teacher_in.shape()) {
    throw std::invalid_argument("kd_divergence: student logits " + shape_str(student_in.shape()) +
                                " and teacher logits " + shape_str(teacher_in.shape()) +
                                " differ in shape");
  }
  if (grad_mode_enabled() && teacher_in.requires_grad()) {
    throw std::invalid_argument(
        "kd_divergence: the teacher's logits require grad; run the teacher under NoGradGuard or "
        "pass teacher_logits.detach()");
  }
  const int64_t rows = student_in.size(0), cols = student_in.size(1);
  Tensor student = student_in.contiguous(), teacher = teacher_in.contiguous();
  Tensor kl = Tensor::empty({rows}, student.dtype(), student.device());
  Tensor student_log_prob = Tensor::empty(student.shape(), student.dtype(), student.device());
  Tensor teacher_prob = Tensor::empty(student.shape(), student.dtype(), student.device());
  dispatch<OpId::kd_divergence>(student.device(), student.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::kd_divergence_forward(ctx, rows, cols, static_cast<T>(temperature),
                                   student.data<T>(), teacher.data<T>(), kl.data<T>(),
                                   student_log_prob.data<T>(), teacher_prob.data<T>());
  });
  record<KdDivergenceBackward>(kl, {&student_in, &teacher_in}, [&] {
    auto node = std::make_shared<KdDivergenceBackward>();
    node->student_log_prob = student_log_prob;
    node->teacher_prob = teacher_prob;
    node->temperature = temperature;
    return node;
  });
  return kl;
}

Tensor kd_loss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature) {
  Tensor kl = kd_divergence(student_logits, teacher_logits, temperature);
  const double scale = temperature * temperature / static_cast<double>(student_logits.size(0));
  return affine(sum(kl), scale, 0.0);
}

Tensor softmax_entropy(const Tensor& logits_in, double temperature) {
  check_logits(logits_in, "softmax_entropy", "logits");
  check_temperature(temperature, "softmax_entropy");
  Tensor logits = logits_in.contiguous();
  Tensor entropy = Tensor::empty({logits.size(0)}, logits.dtype(), logits.device());
  dispatch<OpId::softmax_entropy>(logits.device(), logits.dtype(), [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::softmax_entropy(ctx, logits.size(0), logits.size(1), static_cast<T>(temperature),
                             logits.data<T>(), entropy.data<T>());
  });
  return entropy;
}

}  // namespace retort
