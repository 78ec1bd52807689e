// Slimmable layers (Yu et al.): a shared width setting, sliced Conv2d / Linear, switchable BN.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace retort::nn {

// The PWKD default width list (spec/distillation.md 3.4 item 1).
inline const std::vector<double> kDefaultSlimmableWidths = {0.25, 0.5, 0.75, 1.0};

// Channels of a layer with `full_channels` channels at width `width`: Python's int(c * w), i.e.
// the double product truncated toward zero (spec 3.4 item 2).
int64_t scale_channels(int64_t full_channels, double width);

// The width setting shared by every slimmable layer of one model: the width list, fixed at
// construction, and the index of the active width. The list must be non-empty, strictly
// increasing, inside (0, 1] and end with 1.0 (the full-width network owns the full weights;
// load_full_teacher fills it). set_index is the only mutator: a model's set_width calls it once
// and every layer sees the new width on its next forward.
class WidthSwitch {
 public:
  explicit WidthSwitch(std::vector<double> widths = kDefaultSlimmableWidths);

  const std::vector<double>& widths() const { return widths_; }
  int64_t size() const { return static_cast<int64_t>(widths_.size()); }
  int64_t index() const { return index_; }
  double width() const { return widths_[static_cast<size_t>(index_)]; }
  // Throws std::out_of_range naming the index and the list.
  void set_index(int64_t index);
  // Throws std::out_of_range unless 0 <= index < size(); `who` opens the message.
  void check_index(int64_t index, const char* who) const;
  // scale_channels(full, w) for every width of the list, in list order. Throws
  // std::invalid_argument (naming `what`) when a width leaves no channel.
  std::vector<int64_t> channels(int64_t full_channels, const std::string& what) const;
  // "[0.25, 0.5, 0.75, 1]"
  std::string str() const;

 private:
  std::vector<double> widths_;
  int64_t index_ = 0;  // starts at the widest (last) width
};

// A Conv2d holding the full weight (out_max, in_max / groups_max, k, k). At width index i it
// runs on the leading block weight[:out_i, :in_i / groups_i] (and bias[:out_i]); its input must
// have in_i channels. Depthwise (groups == channels) slices the groups too: groups_i = in_i =
// out_i. The stem keeps its input channels by passing the same count at every width; the
// parameter gradients land in the leading block of the full weight (zero elsewhere).
class SlimmableConv2d : public Conv2d {
 public:
  // `in_channels` / `out_channels`: one count per width of `widths`, non-decreasing, the last the
  // largest. config.groups must be 1 unless depthwise (then it is ignored and set per width).
  SlimmableConv2d(std::shared_ptr<const WidthSwitch> widths, std::vector<int64_t> in_channels,
                  std::vector<int64_t> out_channels, int64_t kernel_size, Generator& gen,
                  const Conv2dConfig& config = {}, bool depthwise = false);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableConv2d"; }

  int64_t in_channels_at(int64_t index) const;
  int64_t out_channels_at(int64_t index) const;
  int64_t groups_at(int64_t index) const;
  bool depthwise() const { return depthwise_; }
  const std::shared_ptr<const WidthSwitch>& width_switch() const { return widths_; }
  // The differentiable leading block used at width `index` (a view of weight()).
  Tensor weight_at(int64_t index) const;
  Tensor bias_at(int64_t index) const;  // undefined without bias

 private:
  std::shared_ptr<const WidthSwitch> widths_;
  std::vector<int64_t> in_list_, out_list_;
  bool depthwise_;
};

// One independent BatchNorm2d per width (own gamma, beta, running mean/var, counter); the active
// width picks its BN. Held as the ModuleList `bn`, as slimmable_networks' SwitchableBatchNorm2d,
// so state names are `<layer>.bn.<width index>.weight`, e.g. `layer1.0.bn1.bn.0.running_mean`.
class SwitchableBatchNorm2d : public Module {
 public:
  SwitchableBatchNorm2d(std::shared_ptr<const WidthSwitch> widths,
                        const std::vector<int64_t>& num_features, double eps = 1e-5,
                        double momentum = 0.1);
  Tensor forward(const Tensor& x) override;
  // relu((*this)(x)) through the active width's BatchNorm2d::forward_relu (hooks as there).
  Tensor forward_relu(const Tensor& x);
  // relu((*this)(x) + residual) through the active width's BatchNorm2d::forward_add_relu.
  Tensor forward_add_relu(const Tensor& x, const Tensor& residual);
  std::string type_name() const override { return "SwitchableBatchNorm2d"; }

  BatchNorm2d& bn_at(int64_t index) const;
  int64_t num_features_at(int64_t index) const { return bn_at(index).num_features(); }
  const std::shared_ptr<const WidthSwitch>& width_switch() const { return widths_; }

 private:
  friend class ConvBnFold;
  std::shared_ptr<const WidthSwitch> widths_;
  std::shared_ptr<ModuleList> bn_;
  // Set while folded into the SlimmableConv2d before it (nn/fold.h), at the active width.
  std::shared_ptr<ConvBnFold> fold_;
};

// A Linear holding the full weight (out, in_max); at width index i it uses weight[:, :in_i] and
// the whole bias: the classifier keeps every class at every width.
class SlimmableLinear : public Linear {
 public:
  SlimmableLinear(std::shared_ptr<const WidthSwitch> widths, std::vector<int64_t> in_features,
                  int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableLinear"; }

  int64_t in_features_at(int64_t index) const;
  Tensor weight_at(int64_t index) const;  // differentiable view of weight()

 private:
  std::shared_ptr<const WidthSwitch> widths_;
  std::vector<int64_t> in_list_;
};

}  // namespace retort::nn
