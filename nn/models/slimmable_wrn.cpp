// Slimmable Wide ResNet: the full model's construction order and init with per-width channels.
#include "nn/models/slimmable_wrn.h"

#include <stdexcept>

#include "nn/init.h"

namespace retort::nn {

SlimmableWideBasicBlock::SlimmableWideBasicBlock(const std::shared_ptr<const WidthSwitch>& widths,
                                                 const std::vector<int64_t>& in_planes,
                                                 const std::vector<int64_t>& out_planes,
                                                 int64_t stride, Generator& gen,
                                                 const std::string& name)
    : equal_in_out_(in_planes.back() == out_planes.back()) {
  check_residual_structure(in_planes, out_planes, *widths, name);
  bn1_ = register_module("bn1", std::make_shared<SwitchableBatchNorm2d>(widths, in_planes));
  relu1_ = register_module("relu1", std::make_shared<ReLU>());
  conv1_ = register_module(
      "conv1", std::make_shared<SlimmableConv2d>(widths, in_planes, out_planes, 3, gen,
                                                 Conv2dConfig{.stride = stride, .padding = 1}));
  bn2_ = register_module("bn2", std::make_shared<SwitchableBatchNorm2d>(widths, out_planes));
  relu2_ = register_module("relu2", std::make_shared<ReLU>());
  conv2_ =
      register_module("conv2", std::make_shared<SlimmableConv2d>(widths, out_planes, out_planes, 3,
                                                                 gen, Conv2dConfig{.padding = 1}));
  if (!equal_in_out_) {
    conv_shortcut_ = register_module(
        "convShortcut", std::make_shared<SlimmableConv2d>(widths, in_planes, out_planes, 1, gen,
                                                          Conv2dConfig{.stride = stride}));
  }
}

Tensor SlimmableWideBasicBlock::forward(const Tensor& x) {
  // relu(bn(.)) units with BN and ReLU fused (relu1/relu2 keep their places in the tree).
  const Tensor activated = bn1_->forward_relu(x);
  Tensor out = (*conv1_)(activated);
  out = (*conv2_)(bn2_->forward_relu(out));
  const Tensor shortcut = equal_in_out_ ? x : (*conv_shortcut_)(activated);
  return shortcut + out;
}

void SlimmableWideBasicBlock::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  out.push_back({conv1_.get(), bn2_.get()});
  Module::collect_conv_bn_pairs(out);
}

Module* SlimmableWideBasicBlock::exclusive_input_bn() const {
  return equal_in_out_ ? nullptr : bn1_.get();
}

Module* SlimmableNetworkBlock::exclusive_input_bn() const {
  const auto* first = dynamic_cast<const SlimmableWideBasicBlock*>(layer_->at(0).get());
  return first != nullptr ? first->exclusive_input_bn() : nullptr;
}

SlimmableNetworkBlock::SlimmableNetworkBlock(const std::shared_ptr<const WidthSwitch>& widths,
                                             int64_t blocks, const std::vector<int64_t>& in_planes,
                                             const std::vector<int64_t>& out_planes, int64_t stride,
                                             Generator& gen, const std::string& name) {
  layer_ = register_module("layer", std::make_shared<Sequential>());
  for (int64_t i = 0; i < blocks; ++i) {
    layer_->push_back(std::make_shared<SlimmableWideBasicBlock>(
        widths, i == 0 ? in_planes : out_planes, out_planes, i == 0 ? stride : 1, gen,
        name + ".layer." + std::to_string(i)));
  }
}

SlimmableWideResNet::SlimmableWideResNet(int64_t depth, int64_t widen_factor,
                                         const ModelOptions& options, std::vector<double> widths)
    : SlimmableModel(std::move(widths)) {
  if (depth < 10 || (depth - 4) % 6 != 0) {
    throw std::invalid_argument(
        "SlimmableWideResNet: depth must be 6n+4 with n >= 1 (10, 16, 40, ...), got " +
        std::to_string(depth));
  }
  if (widen_factor < 1) {
    throw std::invalid_argument("SlimmableWideResNet: widen factor must be >= 1, got " +
                                std::to_string(widen_factor));
  }
  const int64_t n = (depth - 4) / 6;
  const auto& sw = shared_widths();
  const std::vector<int64_t> c0 = sw->channels(16, "conv1"),
                             c1 = sw->channels(16 * widen_factor, "block1"),
                             c2 = sw->channels(32 * widen_factor, "block2"),
                             c3 = sw->channels(64 * widen_factor, "block3");
  Generator gen(options.seed);
  const std::vector<int64_t> stem_in(static_cast<size_t>(sw->size()), options.in_channels);
  conv1_ = register_module("conv1", std::make_shared<SlimmableConv2d>(sw, stem_in, c0, 3, gen,
                                                                      Conv2dConfig{.padding = 1}));
  block1_ = register_module(
      "block1", std::make_shared<SlimmableNetworkBlock>(sw, n, c0, c1, 1, gen, "block1"));
  block2_ = register_module(
      "block2", std::make_shared<SlimmableNetworkBlock>(sw, n, c1, c2, 2, gen, "block2"));
  block3_ = register_module(
      "block3", std::make_shared<SlimmableNetworkBlock>(sw, n, c2, c3, 2, gen, "block3"));
  bn1_ = register_module("bn1", std::make_shared<SwitchableBatchNorm2d>(sw, c3));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  fc_ = register_module("fc", std::make_shared<SlimmableLinear>(sw, c3, options.num_classes, gen));

  // As WideResNet: convs redrawn normal(0, sqrt(2/(k*k*out_full))) in module order; BN 1/0;
  // fc keeps its default weight and gets a zero bias.
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) init::kaiming_normal_fan_out_(conv->weight(), gen);
  }
  init::constant_(fc_->bias(), 0.0);
}

void SlimmableWideResNet::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  if (Module* bn = block1_->exclusive_input_bn()) out.push_back({conv1_.get(), bn});
  Module::collect_conv_bn_pairs(out);
}

Tensor SlimmableWideResNet::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  out = (*block3_)((*block2_)((*block1_)(out)));
  out = bn1_->forward_relu(out);  // relu(bn1(out)), fused
  return (*fc_)(global_avg_pool2d(out));
}

}  // namespace retort::nn
