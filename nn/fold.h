// Batch-norm folding for inference: conv -> eval-mode BN pairs run as one conv with a bias.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "nn/module.h"

namespace retort::nn {

class BatchNorm2d;
class SlimmableConv2d;
class SwitchableBatchNorm2d;

// In evaluation a BN is an affine map per channel, so BN(conv(x)) = conv(x) * s + (beta - mean*s)
// with s = gamma / sqrt(running_var + eps): one conv with weight W * s (per output channel) and
// bias beta - mean * s (+ s * conv bias). This is that conv, for the pair's current width, on the
// conv's device and in its dtype.
struct FoldedConv {
  Tensor weight;  // (C_out, C_in / groups, k, k)
  Tensor bias;    // (C_out)
  Conv2dOptions options;
};

// The fold of one conv -> BN pair, shared by the two layers while a BatchNormFold holds it. The
// layers call it from forward; everything else goes through BatchNormFold.
//
// When it applies: both layers in evaluation mode and no gradient can reach the pair's tensors
// (grad mode off, or none of them requires grad: folded weights would cut the parameters'
// gradients). Then the conv runs the folded conv and the BN returns its input unchanged (no
// batch_norm op). Otherwise both run as if unfolded; a training-mode forward computes batch
// statistics and updates the running ones exactly as before.
//
// Staleness: the folded tensors are recomputed at the conv's next folded forward when anything
// they were made from changed: the active width (slimmable), a source tensor's storage, offset or
// dtype (Module::to), the conv's or the BN's state_version (load_state_dict, to, entering
// training mode, a training BN forward, mark_state_changed), or a write noted by
// note_tensor_written (SGD::step, nn::init) into a source's storage. A write through a raw
// tensor handle (Tensor::copy_, fill_) is invisible: call Module::mark_state_changed() or
// BatchNormFold::invalidate() after one. A folded model is meant to be frozen (a KD teacher).
class ConvBnFold {
 public:
  // Throws std::invalid_argument unless `bn` can follow `conv`: a BatchNorm2d with conv's output
  // channels after a Conv2d, or a SwitchableBatchNorm2d on the same width switch with the conv's
  // output channels at every width after a SlimmableConv2d.
  ConvBnFold(Conv2d& conv, Module& bn);
  ~ConvBnFold();
  ConvBnFold(const ConvBnFold&) = delete;
  ConvBnFold& operator=(const ConvBnFold&) = delete;

  Conv2d& conv() const { return *conv_; }
  Module& bn() const { return *bn_; }
  bool applies() const;
  // True when the next folded forward will recompute the folded tensors first.
  bool stale() const;
  void invalidate() { valid_ = false; }
  // Recomputes now when stale (whatever the mode); returns the folded conv.
  const FoldedConv& refresh();

  // --- for the layers' forward ---------------------------------------------------------------
  // The conv's forward: the folded conv when the fold applies (refreshed when stale), else null.
  // Remembers the answer for the BN's forward that follows.
  const FoldedConv* conv_forward();
  // The BN's forward: true when the conv before it ran folded, so the BN must return its input.
  bool bn_forward_is_identity();

  // --- for a whole unit run as one op (nn/units.h) --------------------------------------------
  // The folded conv (refreshed when stale) when the fold applies and no forward hook is set on
  // the conv, the BN or the active width's BN, else null. The layers' forwards are not called:
  // the caller runs the unit (conv, BN and what follows) as one conv2d_fused.
  const FoldedConv* unit_forward();

 private:
  friend class BatchNormFold;
  struct Source;

  BatchNorm2d& active_bn() const;
  int64_t width_index() const;  // -1 for a plain conv
  std::array<const Tensor*, 6> source_tensors() const;
  void recompute();
  void watch_sources();
  void unwatch_sources();
  // Sets (or clears, with null) the layers' pointers to this fold.
  static void link(ConvBnFold* fold, const std::shared_ptr<ConvBnFold>& ptr);
  // The folds the conv and the BN of this pair are linked to now (null when none).
  std::pair<std::shared_ptr<ConvBnFold>, std::shared_ptr<ConvBnFold>> links() const;

  Conv2d* conv_;
  SlimmableConv2d* slimmable_conv_ = nullptr;
  Module* bn_;
  BatchNorm2d* plain_bn_ = nullptr;
  SwitchableBatchNorm2d* switchable_bn_ = nullptr;

  FoldedConv folded_;
  bool valid_ = false;
  bool conv_ran_folded_ = false;
  int64_t width_index_ = -1;
  uint64_t conv_version_ = 0, bn_version_ = 0, write_epoch_ = 0;
  std::vector<Source> sources_;       // parallel to source_tensors()
  std::shared_ptr<void> watch_;       // the write registry, kept alive while this fold lives
  std::vector<const void*> watched_;  // storages registered with note_tensor_written
  int holders_ = 0;                   // BatchNormFold guards holding this fold
};

// A pair by module path, as named_modules() names them ("layer1.0.conv1", "layer1.0.bn1").
struct ConvBnPairName {
  std::string conv, bn;
  bool operator==(const ConvBnPairName&) const = default;
};

// Folds every conv -> BN pair `model` declares (Module::collect_conv_bn_pairs) for its
// evaluation forwards while the guard lives; destruction or unfold() restores the plain forward.
// Parameters, buffers, state_dict and training behaviour are untouched: the folded tensors are
// extra tensors held by the fold, computed with engine ops on the model's device, lazily at the
// first folded forward and again whenever their sources change (see ConvBnFold). Guards may
// nest or overlap on the same model: a pair stays folded while any guard holds it.
//
// Forward hooks: while folded, a hook on a folded conv sees the BN's output, and a hook on a
// folded BN sees its input returned unchanged.
class BatchNormFold {
 public:
  BatchNormFold() = default;  // holds nothing
  // Throws std::invalid_argument (folding nothing) when a declared pair is invalid (see
  // ConvBnFold), names a module outside `model`, or repeats a conv or a BN, or when a layer is
  // already folded with a different partner by another guard.
  explicit BatchNormFold(std::shared_ptr<Module> model);
  ~BatchNormFold() { unfold(); }
  BatchNormFold(BatchNormFold&& other) noexcept;
  BatchNormFold& operator=(BatchNormFold&& other) noexcept;
  BatchNormFold(const BatchNormFold&) = delete;
  BatchNormFold& operator=(const BatchNormFold&) = delete;

  // Releases the pairs (idempotent); the model runs its BNs again.
  void unfold() noexcept;
  bool active() const { return model_ != nullptr; }
  const std::shared_ptr<Module>& model() const { return model_; }
  // Module paths of the folded pairs, in declaration order.
  const std::vector<ConvBnPairName>& pairs() const { return names_; }
  // Makes every pair recompute at its next folded forward (for changes a fold cannot see).
  void invalidate();
  // Recomputes every stale pair now, e.g. to keep the fold out of a timed loop.
  void refresh();

 private:
  std::shared_ptr<Module> model_;
  std::vector<std::shared_ptr<ConvBnFold>> folds_;
  std::vector<ConvBnPairName> names_;
};

// The pairs BatchNormFold(model) would fold, by module path, validated the same way (throws the
// same errors) without folding anything.
std::vector<ConvBnPairName> conv_bn_pair_names(Module& model);

// Writers that see only tensors (SGD::step, nn::init) report an in-place write here: a fold whose
// source tensors share `t`'s storage recomputes before its next folded forward. Cheap when
// nothing is folded.
void note_tensor_written(const Tensor& t);

}  // namespace retort::nn
