// Slimmable CIFAR ResNets: nn/models/resnet.h with sliced convs, switchable BN and a sliced fc.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "nn/layers.h"
#include "nn/models/options.h"
#include "nn/slimmable_model.h"

namespace retort::nn {

// BasicBlock with per-width channel lists. State names as BasicBlock's: conv1, bn1.bn.<i>, conv2,
// bn2.bn.<i>, downsample.0, downsample.1.bn.<i>.
class SlimmableBasicBlock : public Module {
 public:
  SlimmableBasicBlock(const std::shared_ptr<const WidthSwitch>& widths,
                      const std::vector<int64_t>& in_planes, const std::vector<int64_t>& planes,
                      int64_t stride, bool projection, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableBasicBlock"; }
  // As BasicBlock's: conv1 -> bn1, conv2 -> bn2, downsample.0 -> downsample.1.
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;

 private:
  std::shared_ptr<SlimmableConv2d> conv1_, conv2_;
  std::shared_ptr<SwitchableBatchNorm2d> bn1_, bn2_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Sequential> downsample_;  // null for the identity shortcut
};

// ResNet (depth 6n+2, channels [c0..c3]) with every channel count int(c*w) per width; the stem
// keeps options.in_channels and fc keeps every class. Layers are built in the full model's order
// from the same Generator, so the shared full weights start as create_model's (same seed).
class SlimmableResNet : public SlimmableModel {
 public:
  SlimmableResNet(int64_t depth, const std::array<int64_t, 4>& filters, const ModelOptions& options,
                  std::vector<double> widths = kDefaultSlimmableWidths);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableResNet"; }
  // As ResNet's: the stem and every block's pairs.
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;

 private:
  std::shared_ptr<Sequential> make_layer(int64_t planes, int64_t blocks, int64_t stride,
                                         Generator& gen, const std::string& name);

  int64_t in_planes_ = 0;  // full width
  std::shared_ptr<SlimmableConv2d> conv1_;
  std::shared_ptr<SwitchableBatchNorm2d> bn1_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Sequential> layer1_, layer2_, layer3_;
  std::shared_ptr<GlobalAvgPool2d> avgpool_;
  std::shared_ptr<SlimmableLinear> fc_;
};

}  // namespace retort::nn
