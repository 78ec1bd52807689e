// MobileNetV2 for CIFAR ("MobileNetV2" = mobile_half) as RepDistiller's models/mobilenetv2.py.
#pragma once

#include <cstdint>
#include <memory>

#include "nn/layers.h"
#include "nn/models/options.h"

namespace retort::nn {

// `conv` = Sequential(conv1x1 in->in*t, BN, ReLU, depthwise conv3x3 (stride), BN, ReLU,
// conv1x1 in*t->out, BN): state names conv.0, conv.1, conv.3, conv.4, conv.6, conv.7. The
// residual is added only when stride 1 and in == out. The expansion conv exists even for t = 1.
// BN folding: every conv is directly followed by its BN inside a Sequential, which declares the
// pairs (conv.0 -> conv.1, the depthwise conv.3 -> conv.4, conv.6 -> conv.7).
class InvertedResidual : public Module {
 public:
  InvertedResidual(int64_t in_planes, int64_t out_planes, int64_t stride, int64_t expand_ratio,
                   Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "InvertedResidual"; }

 private:
  bool use_residual_;
  std::shared_ptr<Sequential> conv_;
};

// conv1 = Sequential(conv3x3 stride 2, BN, ReLU); blocks = ModuleList of 7 Sequentials of
// InvertedResiduals; conv2 = Sequential(conv1x1 -> 1280, BN, ReLU); classifier =
// Sequential(Linear(1280, classes)); global average pooling (the reference's AvgPool2d(2,
// ceil_mode), which is global on its 2x2 map). Init: conv normal(0, sqrt(2/(k*k*out))), BN 1/0,
// Linear normal(0, 0.01) with bias 0. Every BN folds (the Sequentials declare the pairs).
//
// `width` < 1 builds the plain twin of a slimmable sub-network (PWKD): every channel count,
// the 1280 head included, becomes int(c * width); same order, init and state names.
class MobileNetV2 : public Module {
 public:
  MobileNetV2(int64_t expansion, double width_mult, const ModelOptions& options,
              double width = 1.0);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "MobileNetV2"; }

 private:
  std::shared_ptr<Sequential> conv1_, conv2_, classifier_;
  std::shared_ptr<ModuleList> blocks_;
  std::shared_ptr<GlobalAvgPool2d> avgpool_;
};

}  // namespace retort::nn
