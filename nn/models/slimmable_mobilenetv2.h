// Slimmable MobileNetV2 (CIFAR mobile_half): nn/models/mobilenetv2.h with per-width channels.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "nn/layers.h"
#include "nn/models/options.h"
#include "nn/slimmable_model.h"

namespace retort::nn {

// InvertedResidual with per-width channel lists. `conv` = Sequential(conv1x1 in->hidden, BN,
// ReLU, depthwise conv3x3, BN, ReLU, conv1x1 hidden->out, BN): state names conv.0, conv.1.bn.<i>,
// conv.3, conv.4.bn.<i>, conv.6, conv.7.bn.<i>. hidden_i = in_i * t, the full block's rule and
// slimmable_networks' (expand_inp = inp * t); for the default widths it equals int(hidden * w)
// as well, since every MobileNetV2 channel count times w is an integer. The depthwise conv uses
// hidden_i groups at width i. Residual when stride 1 and in == out (the same at every width).
class SlimmableInvertedResidual : public Module {
 public:
  SlimmableInvertedResidual(const std::shared_ptr<const WidthSwitch>& widths,
                            const std::vector<int64_t>& in_planes,
                            const std::vector<int64_t>& out_planes, int64_t stride,
                            int64_t expand_ratio, Generator& gen, const std::string& name);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableInvertedResidual"; }

 private:
  bool use_residual_;
  std::shared_ptr<Sequential> conv_;
};

// MobileNetV2(expansion, width_mult) with every channel count int(c*w) of the full model's
// channels c per width, spec 3.4 item 2 read literally: the 1280-channel head conv is slimmed
// too (320 / 640 / 960 / 1280 for the default widths) and the classifier slices its input.
// (slimmable_networks' S-MobileNetV2 instead keeps the head at 1280 with one shared BN.) The stem
// keeps options.in_channels and the classifier keeps every class. Built in the full model's
// order from the same Generator (same initial weights as create_model for the same seed).
class SlimmableMobileNetV2 : public SlimmableModel {
 public:
  SlimmableMobileNetV2(int64_t expansion, double width_mult, const ModelOptions& options,
                       std::vector<double> widths = kDefaultSlimmableWidths);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableMobileNetV2"; }

 private:
  std::shared_ptr<Sequential> conv1_, conv2_, classifier_;
  std::shared_ptr<ModuleList> blocks_;
  std::shared_ptr<GlobalAvgPool2d> avgpool_;
};

}  // namespace retort::nn
