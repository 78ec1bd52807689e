// SGD over named parameters (PyTorch's rule via the engine's sgd_step), with exportable state.
#pragma once

#include <cstdint>
#include <string>

#include "engine/ops.h"
#include "nn/module.h"

namespace retort::nn {

struct SgdOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening = 0, as torch.optim.SGD
};

// What an exact resume needs besides the weights: the momentum buffer of every parameter that
// has taken a step (by parameter name) and the number of steps taken.
struct SgdState {
  int64_t step_count = 0;
  NamedTensors momentum_buffers;

  // For a checkpoint file: "<prefix>step" (i64 scalar) and "<prefix>momentum_buffer.<name>".
  NamedTensors to_named_tensors(const std::string& prefix = "optimizer.") const;
  // The inverse; entries without the prefix are ignored. Throws when "<prefix>step" is absent.
  static SgdState from_named_tensors(const NamedTensors& tensors,
                                     const std::string& prefix = "optimizer.");
};

// torch.optim.SGD with one parameter group, per parameter p with gradient g:
//   d = g + weight_decay * p
//   buf = d on p's first step, else momentum * buf + (1 - dampening) * d
//   d = nesterov ? d + momentum * buf : buf        (when momentum != 0)
//   p -= lr * d
// Parameters whose gradient is undefined are skipped (their buffer does not move), as PyTorch.
class SGD {
 public:
  // `params` usually module.named_parameters(); names must be unique, tensors f32/f64 leaves.
  SGD(NamedTensors params, const SgdOptions& options);

  // Sets every parameter's gradient to undefined (PyTorch's set_to_none).
  void zero_grad();
  void step();

  void set_lr(double lr);
  double lr() const { return options_.lr; }
  // With on, the learning rate also lives in a one-value tensor per device and dtype of the
  // parameters, which each parameter's update reads when it runs on the device (sgd_step's
  // lr_scalar), and set_lr rewrites those tensors: a step captured in a CUDA graph then follows
  // set_lr between replays. The tensors are made here and by the first step on a new device or
  // dtype, which must therefore run eagerly (before a capture). Off by default.
  void set_lr_in_tensor(bool on);
  bool lr_in_tensor() const { return lr_in_tensor_; }
  const SgdOptions& options() const { return options_; }
  int64_t step_count() const { return step_count_; }
  // For a step replayed from a CUDA graph, whose host-side count did not move.
  void set_step_count(int64_t count) { step_count_ = count; }
  const NamedTensors& params() const { return params_; }

  // Handles to the live momentum buffers (not copies: a later step() changes them; clone what
  // must outlive the next step). Parameters without a buffer yet are absent.
  SgdState state() const;
  // Replaces the state: buffers are copied into new tensors on each parameter's device and
  // dtype. Throws (changing nothing) on an unknown name, a shape mismatch, or a negative count.
  void load_state(const SgdState& state);

 private:
  NamedTensors params_;
  std::vector<Tensor> buffers_;  // parallel to params_; undefined until a param's first step
  SgdOptions options_;
  int64_t step_count_ = 0;
  bool lr_in_tensor_ = false;
  std::vector<Tensor> lr_scalars_;  // with lr_in_tensor_: one (1) per device and dtype

  // The learning-rate tensor on p's device and in its dtype, made when missing.
  const Tensor& lr_scalar_for(const Tensor& p);
};

}  // namespace retort::nn
