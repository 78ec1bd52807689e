// CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4) as RepDistiller's models/resnet.py.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "nn/layers.h"
#include "nn/models/options.h"

namespace retort::nn {

// conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut (identity or the 1x1
// projection `downsample` = Sequential(conv, BN)), then ReLU. State names: conv1, bn1, conv2,
// bn2, downsample.0, downsample.1.
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_planes, int64_t planes, int64_t stride, bool projection, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BasicBlock"; }
  // conv1 -> bn1 and conv2 -> bn2 (each conv's output feeds only its BN), then the projection
  // shortcut's downsample.0 -> downsample.1 (declared by the Sequential).
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Sequential> downsample_;  // null for the identity shortcut
};

// Depth 6n+2, channels [c0, c1, c2, c3]: stem conv1/bn1/relu, layer1..3 (Sequential of n
// BasicBlocks, strides 1, 2, 2), global average pooling, fc. Init: convs Kaiming-normal
// (fan_out, relu), BN 1/0, fc PyTorch's default.
class ResNet : public Module {
 public:
  ResNet(int64_t depth, const std::array<int64_t, 4>& filters, const ModelOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ResNet"; }
  // The stem's conv1 -> bn1, then every block's pairs: every BN of the model folds.
  void collect_conv_bn_pairs(std::vector<ConvBnPair>& out) override;

 private:
  std::shared_ptr<Sequential> make_layer(int64_t planes, int64_t blocks, int64_t stride,
                                         Generator& gen);

  int64_t in_planes_ = 0;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Sequential> layer1_, layer2_, layer3_;
  std::shared_ptr<GlobalAvgPool2d> avgpool_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace retort::nn
