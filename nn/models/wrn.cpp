// Wide ResNet: the pre-activation block, the groups, and the reference's initialisation.
#include "nn/models/wrn.h"

#include <algorithm>
#include <stdexcept>

#include "nn/init.h"

namespace retort::nn {

WideBasicBlock::WideBasicBlock(int64_t in_planes, int64_t out_planes, int64_t stride,
                               Generator& gen)
    : equal_in_out_(in_planes == out_planes) {
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(in_planes));
  relu1_ = register_module("relu1", std::make_shared<ReLU>());
  conv1_ = register_module("conv1",
                           std::make_shared<Conv2d>(in_planes, out_planes, 3, gen,
                                                    Conv2dConfig{.stride = stride, .padding = 1}));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out_planes));
  relu2_ = register_module("relu2", std::make_shared<ReLU>());
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(out_planes, out_planes, 3, gen,
                                                             Conv2dConfig{.padding = 1}));
  if (!equal_in_out_) {
    conv_shortcut_ = register_module(
        "convShortcut",
        std::make_shared<Conv2d>(in_planes, out_planes, 1, gen, Conv2dConfig{.stride = stride}));
  }
}

Tensor WideBasicBlock::forward(const Tensor& x) {
  // relu(bn(.)) units with BN and ReLU fused (relu1/relu2 keep their places in the tree).
  const Tensor activated = bn1_->forward_relu(x);
  Tensor out = (*conv1_)(activated);
  out = (*conv2_)(bn2_->forward_relu(out));
  // With a projection the shortcut starts from the activated input, else from the raw x.
  const Tensor shortcut = equal_in_out_ ? x : (*conv_shortcut_)(activated);
  return shortcut + out;
}

void WideBasicBlock::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  out.push_back({conv1_.get(), bn2_.get()});
  Module::collect_conv_bn_pairs(out);
}

Module* WideBasicBlock::exclusive_input_bn() const {
  return equal_in_out_ ? nullptr : bn1_.get();
}

Module* NetworkBlock::exclusive_input_bn() const {
  const auto* first = dynamic_cast<const WideBasicBlock*>(layer_->at(0).get());
  return first != nullptr ? first->exclusive_input_bn() : nullptr;
}

NetworkBlock::NetworkBlock(int64_t blocks, int64_t in_planes, int64_t out_planes, int64_t stride,
                           Generator& gen) {
  layer_ = register_module("layer", std::make_shared<Sequential>());
  for (int64_t i = 0; i < blocks; ++i) {
    layer_->push_back(std::make_shared<WideBasicBlock>(i == 0 ? in_planes : out_planes, out_planes,
                                                       i == 0 ? stride : 1, gen));
  }
}

WideResNet::WideResNet(int64_t depth, int64_t widen_factor, const ModelOptions& options)
    : WideResNet(depth,
                 {16, 16 * std::max<int64_t>(widen_factor, 1),
                  32 * std::max<int64_t>(widen_factor, 1), 64 * std::max<int64_t>(widen_factor, 1)},
                 options) {
  if (widen_factor < 1) {
    throw std::invalid_argument("WideResNet: widen factor must be >= 1, got " +
                                std::to_string(widen_factor));
  }
}

WideResNet::WideResNet(int64_t depth, const std::array<int64_t, 4>& c,
                       const ModelOptions& options) {
  if (depth < 10 || (depth - 4) % 6 != 0) {
    throw std::invalid_argument(
        "WideResNet: depth must be 6n+4 with n >= 1 (10, 16, 40, ...), got " +
        std::to_string(depth));
  }
  for (int64_t channels : c) {
    if (channels < 1) throw std::invalid_argument("WideResNet: a layer would have 0 channels");
  }
  const int64_t n = (depth - 4) / 6;
  Generator gen(options.seed);
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(options.in_channels, c[0], 3, gen,
                                                             Conv2dConfig{.padding = 1}));
  block1_ = register_module("block1", std::make_shared<NetworkBlock>(n, c[0], c[1], 1, gen));
  block2_ = register_module("block2", std::make_shared<NetworkBlock>(n, c[1], c[2], 2, gen));
  block3_ = register_module("block3", std::make_shared<NetworkBlock>(n, c[2], c[3], 2, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(c[3]));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  fc_ = register_module("fc", std::make_shared<Linear>(c[3], options.num_classes, gen));

  // As the reference: convs redrawn normal(0, sqrt(2/(k*k*out))) in module order; BN 1/0;
  // the Linear keeps its default weight and gets a zero bias.
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) init::kaiming_normal_fan_out_(conv->weight(), gen);
  }
  init::constant_(fc_->bias(), 0.0);
}

void WideResNet::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  if (Module* bn = block1_->exclusive_input_bn()) out.push_back({conv1_.get(), bn});
  Module::collect_conv_bn_pairs(out);
}

Tensor WideResNet::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  out = (*block3_)((*block2_)((*block1_)(out)));
  out = bn1_->forward_relu(out);  // relu(bn1(out)), fused
  // The reference pools functionally (F.avg_pool2d(out, 8)): no module, so no state name.
  return (*fc_)(global_avg_pool2d(out));
}

}  // namespace retort::nn
