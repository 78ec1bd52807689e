// Wide ResNets (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2) as RepDistiller's models/wrn.py.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "nn/layers.h"
#include "nn/models/options.h"

namespace retort::nn {

// Pre-activation block. State names: bn1, relu1, conv1, bn2, relu2, conv2, convShortcut (only
// when in != out). in != out: a = ReLU(BN1(x)), out = conv1(a), shortcut = convShortcut(a);
// in == out: out = conv1(ReLU(BN1(x))), shortcut = x. Then out = conv2(ReLU(BN2(out))) + shortcut.
class WideBasicBlock : public Module {
 public:
  WideBasicBlock(int64_t in_planes, int64_t out_planes, int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BasicBlock"; }
  // Pre-activation: the BNs come before the convs, so the only conv whose output feeds a BN and
  // nothing else is conv1 -> bn2. conv2 and convShortcut feed the residual sum, whose BN (the
  // next block's bn1 or the model's bn1) also sees the other addend: never folded.
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;
  // The BN that alone reads the block's input: bn1 when the shortcut starts from the activated
  // input (in != out); null with an identity shortcut, which adds the raw input to the output.
  Module* exclusive_input_bn() const;

 private:
  bool equal_in_out_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<ReLU> relu1_, relu2_;
  std::shared_ptr<Conv2d> conv1_, conv2_, conv_shortcut_;
};

// One group of blocks, held as `layer` (a Sequential), as the reference's NetworkBlock.
class NetworkBlock : public Module {
 public:
  NetworkBlock(int64_t blocks, int64_t in_planes, int64_t out_planes, int64_t stride,
               Generator& gen);
  Tensor forward(const Tensor& x) override { return (*layer_)(x); }
  std::string type_name() const override { return "NetworkBlock"; }
  // The first block's exclusive_input_bn(): the group's input reaches only that BN, or null.
  Module* exclusive_input_bn() const;

 private:
  std::shared_ptr<Sequential> layer_;
};

// Depth 6n+4, widen factor k, channels [16, 16k, 32k, 64k]: conv1 (no BN after it), block1..3
// (strides 1, 2, 2), bn1, relu, global average pooling, fc. Init: conv normal(0,
// sqrt(2/(k*k*out))), BN 1/0, fc weight PyTorch's default and bias 0.
class WideResNet : public Module {
 public:
  WideResNet(int64_t depth, int64_t widen_factor, const ModelOptions& options);
  // An explicit channel list [stem, group1, group2, group3] (the above is [16, 16k, 32k, 64k]):
  // the plain twin of a slimmable sub-network (PWKD), same order, init and state names.
  WideResNet(int64_t depth, const std::array<int64_t, 4>& channels, const ModelOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "WideResNet"; }
  // Every block's conv1 -> bn2, and the stem conv1 -> block1.layer.0.bn1 when that block has a
  // projection shortcut (stem channels != group-1 channels: widen factor > 1), since then the
  // stem's output reaches that BN alone. The final bn1 reads the last residual sum: not folded.
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<NetworkBlock> block1_, block2_, block3_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace retort::nn
