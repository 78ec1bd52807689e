// Slimmable layers: width-list validation, prefix slicing of conv / linear weights, switchable BN.
#include "nn/slimmable.h"

#include <sstream>
#include <stdexcept>

#include "nn/fold.h"

namespace retort::nn {
namespace {

// Validates a per-width channel list: one entry per width, >= 1, non-decreasing.
std::vector<int64_t> checked_list(std::vector<int64_t> list, const WidthSwitch& widths,
                                  const char* layer, const char* what) {
  if (static_cast<int64_t>(list.size()) != widths.size()) {
    throw std::invalid_argument(std::string(layer) + ": " + what + " lists " +
                                std::to_string(list.size()) + " counts for " +
                                std::to_string(widths.size()) + " widths " + widths.str());
  }
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i] < 1 || (i > 0 && list[i] < list[i - 1])) {
      throw std::invalid_argument(std::string(layer) + ": " + what +
                                  " must be >= 1 and non-decreasing over the widths " +
                                  widths.str());
    }
  }
  return list;
}

std::shared_ptr<const WidthSwitch> checked_switch(std::shared_ptr<const WidthSwitch> widths,
                                                  const char* layer) {
  if (!widths) throw std::invalid_argument(std::string(layer) + ": no width switch given");
  return widths;
}

// The Conv2d base is built at the largest width; depthwise layers group by their channels.
Conv2dConfig full_config(Conv2dConfig config, const std::vector<int64_t>& in_channels,
                         bool depthwise) {
  if (depthwise) {
    config.groups = in_channels.empty() ? 1 : in_channels.back();
  } else if (config.groups != 1) {
    throw std::invalid_argument(
        "SlimmableConv2d: only groups = 1 or depthwise convolutions can be slimmed");
  }
  return config;
}

int64_t last_or_one(const std::vector<int64_t>& v) {
  return v.empty() ? 1 : v.back();
}

std::string width_str(double width) {
  std::ostringstream s;
  s << width;
  return s.str();
}

}  // namespace

// --- WidthSwitch
// ----------------------------------------------------------------------------------

int64_t scale_channels(int64_t full_channels, double width) {
  return static_cast<int64_t>(static_cast<double>(full_channels) * width);
}

WidthSwitch::WidthSwitch(std::vector<double> widths) : widths_(std::move(widths)) {
  bool ok = !widths_.empty() && widths_.back() == 1.0;
  for (size_t i = 0; ok && i < widths_.size(); ++i) {
    ok = widths_[i] > 0.0 && widths_[i] <= 1.0 && (i == 0 || widths_[i] > widths_[i - 1]);
  }
  if (!ok) {
    throw std::invalid_argument("slimmable widths " + str() +
                                " must be non-empty, strictly increasing, in (0, 1], and end "
                                "with 1.0");
  }
  index_ = size() - 1;
}

void WidthSwitch::check_index(int64_t index, const char* who) const {
  if (index < 0 || index >= size()) {
    throw std::out_of_range(std::string(who) + ": width index " + std::to_string(index) +
                            " is outside the width list " + str() + " (valid indices 0.." +
                            std::to_string(size() - 1) + ")");
  }
}

void WidthSwitch::set_index(int64_t index) {
  check_index(index, "set_width");
  index_ = index;
}

std::vector<int64_t> WidthSwitch::channels(int64_t full_channels, const std::string& what) const {
  std::vector<int64_t> out;
  for (double w : widths_) {
    const int64_t c = scale_channels(full_channels, w);
    if (c < 1) {
      std::ostringstream msg;
      msg << what << ": width " << w << " leaves int(" << full_channels << " * " << w
          << ") = 0 channels; use larger widths than " << str();
      throw std::invalid_argument(msg.str());
    }
    out.push_back(c);
  }
  return out;
}

std::string WidthSwitch::str() const {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < widths_.size(); ++i) s << (i ? ", " : "") << widths_[i];
  s << "]";
  return s.str();
}

// --- SlimmableConv2d
// ------------------------------------------------------------------------------

SlimmableConv2d::SlimmableConv2d(std::shared_ptr<const WidthSwitch> widths,
                                 std::vector<int64_t> in_channels,
                                 std::vector<int64_t> out_channels, int64_t kernel_size,
                                 Generator& gen, const Conv2dConfig& config, bool depthwise)
    : Conv2d(last_or_one(in_channels), last_or_one(out_channels), kernel_size, gen,
             full_config(config, in_channels, depthwise)),
      widths_(checked_switch(std::move(widths), "SlimmableConv2d")),
      in_list_(checked_list(std::move(in_channels), *widths_, "SlimmableConv2d", "in_channels")),
      out_list_(checked_list(std::move(out_channels), *widths_, "SlimmableConv2d", "out_channels")),
      depthwise_(depthwise) {
  if (depthwise_ && in_list_ != out_list_) {
    throw std::invalid_argument(
        "SlimmableConv2d: a depthwise convolution needs equal in and out channels at every "
        "width");
  }
}

int64_t SlimmableConv2d::in_channels_at(int64_t index) const {
  widths_->check_index(index, "SlimmableConv2d");
  return in_list_[static_cast<size_t>(index)];
}

int64_t SlimmableConv2d::out_channels_at(int64_t index) const {
  widths_->check_index(index, "SlimmableConv2d");
  return out_list_[static_cast<size_t>(index)];
}

int64_t SlimmableConv2d::groups_at(int64_t index) const {
  return depthwise_ ? in_channels_at(index) : 1;
}

Tensor SlimmableConv2d::weight_at(int64_t index) const {
  const int64_t out = out_channels_at(index);
  const int64_t in_per_group = in_channels_at(index) / groups_at(index);
  return weight_.narrow(0, 0, out).narrow(1, 0, in_per_group);
}

Tensor SlimmableConv2d::bias_at(int64_t index) const {
  return bias_.defined() ? bias_.narrow(0, 0, out_channels_at(index)) : Tensor();
}

Tensor SlimmableConv2d::forward(const Tensor& x) {
  const int64_t index = widths_->index();
  const int64_t in = in_channels_at(index);
  if (x.dim() != 4 || x.size(1) != in) {
    throw std::invalid_argument("SlimmableConv2d: at width " + width_str(widths_->width()) +
                                " expects (N, " + std::to_string(in) + ", H, W) input, got " +
                                x.str());
  }
  if (fold_) {
    if (const FoldedConv* folded = fold_->conv_forward()) {
      return conv2d(x, folded->weight, folded->bias, folded->options);
    }
  }
  return conv2d(x, weight_at(index), bias_at(index),
                Conv2dOptions::make(config_.stride, config_.padding, groups_at(index)));
}

// --- SwitchableBatchNorm2d
// ------------------------------------------------------------------------

SwitchableBatchNorm2d::SwitchableBatchNorm2d(std::shared_ptr<const WidthSwitch> widths,
                                             const std::vector<int64_t>& num_features, double eps,
                                             double momentum)
    : widths_(checked_switch(std::move(widths), "SwitchableBatchNorm2d")) {
  const std::vector<int64_t> list =
      checked_list(num_features, *widths_, "SwitchableBatchNorm2d", "num_features");
  bn_ = register_module("bn", std::make_shared<ModuleList>());
  for (int64_t c : list) bn_->push_back(std::make_shared<BatchNorm2d>(c, eps, momentum));
}

BatchNorm2d& SwitchableBatchNorm2d::bn_at(int64_t index) const {
  widths_->check_index(index, "SwitchableBatchNorm2d");
  return static_cast<BatchNorm2d&>(*bn_->at(static_cast<size_t>(index)));
}

Tensor SwitchableBatchNorm2d::forward(const Tensor& x) {
  // Folded: the conv before this BN already applied the active width's BN.
  if (fold_ && fold_->bn_forward_is_identity()) return x;
  return bn_at(widths_->index())(x);
}

Tensor SwitchableBatchNorm2d::forward_relu(const Tensor& x) {
  if (fold_ && fold_->bn_forward_is_identity()) {
    run_forward_hooks(x, x);
    return relu(x);
  }
  Tensor y = bn_at(widths_->index()).forward_relu(x);
  run_forward_hooks(x, y);
  return y;
}

Tensor SwitchableBatchNorm2d::forward_add_relu(const Tensor& x, const Tensor& residual) {
  if (fold_ && fold_->bn_forward_is_identity()) {
    run_forward_hooks(x, x);
    return relu(add(x, residual));
  }
  Tensor y = bn_at(widths_->index()).forward_add_relu(x, residual);
  run_forward_hooks(x, y);
  return y;
}

// --- SlimmableLinear
// ------------------------------------------------------------------------------

SlimmableLinear::SlimmableLinear(std::shared_ptr<const WidthSwitch> widths,
                                 std::vector<int64_t> in_features, int64_t out_features,
                                 Generator& gen, bool bias)
    : Linear(last_or_one(in_features), out_features, gen, bias),
      widths_(checked_switch(std::move(widths), "SlimmableLinear")),
      in_list_(checked_list(std::move(in_features), *widths_, "SlimmableLinear", "in_features")) {}

int64_t SlimmableLinear::in_features_at(int64_t index) const {
  widths_->check_index(index, "SlimmableLinear");
  return in_list_[static_cast<size_t>(index)];
}

Tensor SlimmableLinear::weight_at(int64_t index) const {
  return weight_.narrow(1, 0, in_features_at(index));
}

Tensor SlimmableLinear::forward(const Tensor& x) {
  const int64_t index = widths_->index();
  const int64_t in = in_features_at(index);
  if (x.dim() != 2 || x.size(1) != in) {
    throw std::invalid_argument("SlimmableLinear: at width " + width_str(widths_->width()) +
                                " expects (N, " + std::to_string(in) + ") input, got " + x.str());
  }
  return linear(x, weight_at(index), bias_);
}

}  // namespace retort::nn
