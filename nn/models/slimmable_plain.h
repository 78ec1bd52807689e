// Plain WRN and MobileNetV2 at one width (explicit channels): the slimmable sub-networks' twins.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "nn/layers.h"
#include "nn/models/options.h"

namespace retort::nn {

// WideResNet with an explicit channel list [stem, group1, group2, group3] (the full model's is
// [16, 16k, 32k, 64k]), built from WideResNet's own blocks, in its order, with its
// initialisation and state names. With the full list it is WideResNet(depth, k, options).
class WideResNetAtWidth : public Module {
 public:
  WideResNetAtWidth(int64_t depth, const std::array<int64_t, 4>& channels,
                    const ModelOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "WideResNet"; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<Module> block1_, block2_, block3_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<ReLU> relu_;
  std::shared_ptr<Linear> fc_;
};

// MobileNetV2(expansion, width_mult) at slimmable width `width`: every channel count
// int(int(c * width_mult) * width), the 1280 head included (int(1280 * width)); blocks are
// InvertedResidual (hidden = in * t). Same order, initialisation and state names as MobileNetV2;
// width 1.0 gives MobileNetV2(expansion, width_mult, options).
class MobileNetV2AtWidth : public Module {
 public:
  MobileNetV2AtWidth(int64_t expansion, double width_mult, double width,
                     const ModelOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "MobileNetV2"; }

 private:
  std::shared_ptr<Sequential> conv1_, conv2_, classifier_;
  std::shared_ptr<ModuleList> blocks_;
  std::shared_ptr<GlobalAvgPool2d> avgpool_;
};

}  // namespace retort::nn
