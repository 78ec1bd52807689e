// Slimmable Wide ResNets: nn/models/wrn.h with sliced convs, switchable BN and a sliced fc.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "nn/layers.h"
#include "nn/models/options.h"
#include "nn/slimmable_model.h"

namespace retort::nn {

// WideBasicBlock with per-width channel lists. State names as WideBasicBlock's: bn1.bn.<i>,
// relu1, conv1, bn2.bn.<i>, relu2, conv2, convShortcut (only when in != out).
class SlimmableWideBasicBlock : public Module {
 public:
  SlimmableWideBasicBlock(const std::shared_ptr<const WidthSwitch>& widths,
                          const std::vector<int64_t>& in_planes,
                          const std::vector<int64_t>& out_planes, int64_t stride, Generator& gen,
                          const std::string& name);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableBasicBlock"; }
  // As WideBasicBlock's: conv1 -> bn2 only (pre-activation).
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;
  // As WideBasicBlock's: bn1 when the shortcut starts from the activated input, else null.
  Module* exclusive_input_bn() const;

 private:
  bool equal_in_out_;
  std::shared_ptr<SwitchableBatchNorm2d> bn1_, bn2_;
  std::shared_ptr<ReLU> relu1_, relu2_;
  std::shared_ptr<SlimmableConv2d> conv1_, conv2_, conv_shortcut_;
};

// One group of blocks held as `layer`, as NetworkBlock.
class SlimmableNetworkBlock : public Module {
 public:
  SlimmableNetworkBlock(const std::shared_ptr<const WidthSwitch>& widths, int64_t blocks,
                        const std::vector<int64_t>& in_planes,
                        const std::vector<int64_t>& out_planes, int64_t stride, Generator& gen,
                        const std::string& name);
  Tensor forward(const Tensor& x) override { return (*layer_)(x); }
  std::string type_name() const override { return "SlimmableNetworkBlock"; }
  Module* exclusive_input_bn() const;  // the first block's

 private:
  std::shared_ptr<Sequential> layer_;
};

// WideResNet (depth 6n+4, channels [16, 16k, 32k, 64k]) with every channel count int(c*w) per
// width, the 16-channel stem included (spec 3.4); the stem keeps options.in_channels and fc keeps
// every class. Built in the full model's order from the same Generator (same initial weights as
// create_model for the same seed).
class SlimmableWideResNet : public SlimmableModel {
 public:
  SlimmableWideResNet(int64_t depth, int64_t widen_factor, const ModelOptions& options,
                      std::vector<double> widths = kDefaultSlimmableWidths);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SlimmableWideResNet"; }
  // As WideResNet's: every block's conv1 -> bn2, and the stem -> block1.layer.0.bn1 when that
  // block has a projection shortcut (the same at every width: check_residual_structure).
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;

 private:
  std::shared_ptr<SlimmableConv2d> conv1_;
  std::shared_ptr<SlimmableNetworkBlock> block1_, block2_, block3_;
  std::shared_ptr<SwitchableBatchNorm2d> bn1_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<SlimmableLinear> fc_;
};

}  // namespace retort::nn
