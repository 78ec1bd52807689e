// SlimmableModel: a model-wide width switch, sub-network state, teacher loading, joint steps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "nn/slimmable.h"

namespace retort::nn {

// Base of the slimmable models (nn/models/slimmable_*.h). One WidthSwitch, created here with the
// width list, is shared by all of the model's slimmable layers: set_width(i) switches every
// layer (and every switchable BN) at once. A new model starts at the widest width.
//
// Naming: the model's state dict is the full model's, except that each BatchNorm2d of the full
// model is a SwitchableBatchNorm2d whose per-width BNs are named `<bn>.bn.<i>.<tensor>`
// (slimmable_networks' naming): `bn1.weight` of resnet8 becomes `bn1.bn.0.weight` ...
// `bn1.bn.3.weight` with the default widths. Convolution and linear weights keep the full
// model's names and shapes. The plain names of width i are those of the full model (the
// width-i BN under `<bn>.<tensor>`), so width_state_dict(i) loads into a plain model of that
// width (create_width_model in nn/models/slimmable_registry.h) and, for the widest width, into
// create_model(name) itself.
class SlimmableModel : public Module {
 public:
  const std::vector<double>& widths() const { return widths_->widths(); }
  int64_t num_widths() const { return widths_->size(); }
  int64_t width_index() const { return widths_->index(); }
  double width() const { return widths_->width(); }
  // Selects the sub-network of widths()[index] for the following forwards. Throws
  // std::out_of_range naming the index and the width list.
  void set_width(int64_t index) { widths_->set_index(index); }
  // The index of `width` in widths() (exact match); throws std::invalid_argument otherwise.
  int64_t width_index_of(double width) const;
  std::shared_ptr<const WidthSwitch> width_switch() const { return widths_; }

  // --- sub-networks ------------------------------------------------------------------------------
  // Maps tensors named as this model's (its state dict, its parameters, or their gradients) to
  // the plain names and leading slices of width `index`: conv weights -> [:out_i, :in_i/groups_i],
  // linear weights -> [:, :in_i], the BN tensors of width i -> `<bn>.<tensor>`; other widths'
  // BN tensors are dropped. Views without autograd history (not copies).
  NamedTensors slice_for_width(const NamedTensors& entries, int64_t index) const;
  // Contiguous copies of the state of width `index` under plain names.
  NamedTensors width_state_dict(int64_t index) const;
  // Loads width `index` (by default the active one) into `plain`, a plain model of that width:
  // its state dict must have exactly the plain names and shapes (strict load_state_dict).
  void copy_width_to(Module& plain, int64_t index) const;
  void copy_width_to(Module& plain) const { copy_width_to(plain, width_index()); }
  // Learnable elements of the sub-network of width `index`: its conv / linear slices and its own
  // BN's gamma and beta (spec 3.4's table counts these; running statistics are not parameters).
  int64_t num_parameters_at(int64_t index) const;

  // --- initialisation from a trained full-width teacher (spec 3.4 item 4, alternative) ---------
  // `full_state` is the state dict of the full model (create_model(name) names and shapes).
  // Conv / linear weights -> the shared full weights; the full model's BN -> the widest width's
  // BN, counter included. Each narrower width's BN starts from the leading slice of the teacher's
  // BN: gamma, beta, running mean and running var [:c_i], with num_batches_tracked 0. Those
  // running statistics are only a starting point: the narrower sub-networks see different
  // pre-BN activations, so they become meaningful after joint fine-tuning (training-mode
  // forwards refresh them) or a BN re-calibration pass. The widest sub-network then computes
  // exactly what the teacher computes. Throws std::invalid_argument listing missing, unexpected
  // and mis-shaped keys; nothing is written unless the whole load is valid.
  void load_full_teacher(const NamedTensors& full_state);

 protected:
  explicit SlimmableModel(std::vector<double> widths);
  // The switch to hand to the layers.
  const std::shared_ptr<WidthSwitch>& shared_widths() const { return widths_; }

 private:
  std::shared_ptr<WidthSwitch> widths_;
};

// Throws std::invalid_argument when truncation makes a block's residual structure differ between
// widths: the full model's block has an identity shortcut exactly when in == out (with stride 1),
// so every width must agree on in_i == out_i (spec 3.4 item 2 claims int(c*w) preserves it).
void check_residual_structure(const std::vector<int64_t>& in, const std::vector<int64_t>& out,
                              const WidthSwitch& widths, const std::string& block);

// --- joint training (S-Net rule, spec 3.4 item 4) ------------------------------------------------

// The loss of one width: `logits` of width `index`, and the detached logits of the widest width
// (undefined while the widest width itself runs, which always runs first).
using WidthLossFn =
    std::function<Tensor(const Tensor& logits, int64_t index, const Tensor& widest_logits)>;

struct JointBackwardResult {
  std::vector<double> losses;  // per width index, in list order
  std::vector<Tensor> logits;  // detached, per width index
};

// One joint step without the optimiser: for every width, widest first, set_width, forward `x`,
// loss_fn, backward. Gradients add into the shared parameters' .grad (a backward per width frees
// each width's graph; the sum equals one backward of the summed losses up to rounding). The
// caller zeroes gradients before and steps the optimiser after; the active width is restored
// afterwards, also when an exception escapes.
JointBackwardResult joint_backward(SlimmableModel& model, const Tensor& x,
                                   const WidthLossFn& loss_fn);

// The S-Net default: label cross-entropy (mean over the batch) at every width.
WidthLossFn label_cross_entropy_loss(const Tensor& labels);
// In-place distillation: label cross-entropy for the widest width; every narrower width uses the
// soft cross-entropy -mean_n sum_c q_c log p_c to the widest width's detached softmax (T = 1).
WidthLossFn inplace_distillation_loss(const Tensor& labels);

}  // namespace retort::nn
