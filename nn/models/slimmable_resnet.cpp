// Slimmable CIFAR ResNet: the full model's construction order and init with per-width channels.
#include "nn/models/slimmable_resnet.h"

#include <stdexcept>

#include "nn/init.h"
#include "nn/units.h"

namespace retort::nn {

SlimmableBasicBlock::SlimmableBasicBlock(const std::shared_ptr<const WidthSwitch>& widths,
                                         const std::vector<int64_t>& in_planes,
                                         const std::vector<int64_t>& planes, int64_t stride,
                                         bool projection, Generator& gen) {
  conv1_ = register_module(
      "conv1", std::make_shared<SlimmableConv2d>(widths, in_planes, planes, 3, gen,
                                                 Conv2dConfig{.stride = stride, .padding = 1}));
  bn1_ = register_module("bn1", std::make_shared<SwitchableBatchNorm2d>(widths, planes));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  conv2_ =
      register_module("conv2", std::make_shared<SlimmableConv2d>(widths, planes, planes, 3, gen,
                                                                 Conv2dConfig{.padding = 1}));
  bn2_ = register_module("bn2", std::make_shared<SwitchableBatchNorm2d>(widths, planes));
  if (projection) {
    downsample_ = register_module(
        "downsample", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                          std::make_shared<SlimmableConv2d>(widths, in_planes, planes, 1, gen,
                                                            Conv2dConfig{.stride = stride}),
                          std::make_shared<SwitchableBatchNorm2d>(widths, planes)}));
  }
}

Tensor SlimmableBasicBlock::forward(const Tensor& x) {
  // As BasicBlock: two units, each as few ops as the layers allow (nn/units.h).
  const Tensor out = conv_bn_relu(*conv1_, *bn1_, x);
  return conv_bn_add_relu(*conv2_, *bn2_, out,
                          [&] { return downsample_ ? (*downsample_)(x) : x; });
}

void SlimmableBasicBlock::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  out.push_back({conv1_.get(), bn1_.get()});
  out.push_back({conv2_.get(), bn2_.get()});
  Module::collect_conv_bn_pairs(out);
}

SlimmableResNet::SlimmableResNet(int64_t depth, const std::array<int64_t, 4>& filters,
                                 const ModelOptions& options, std::vector<double> widths)
    : SlimmableModel(std::move(widths)) {
  if (depth < 8 || (depth - 2) % 6 != 0) {
    throw std::invalid_argument(
        "SlimmableResNet: depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got " +
        std::to_string(depth));
  }
  const int64_t n = (depth - 2) / 6;
  const auto& sw = shared_widths();
  Generator gen(options.seed);
  in_planes_ = filters[0];
  const std::vector<int64_t> stem_in(static_cast<size_t>(sw->size()), options.in_channels);
  conv1_ = register_module(
      "conv1", std::make_shared<SlimmableConv2d>(sw, stem_in, sw->channels(filters[0], "conv1"), 3,
                                                 gen, Conv2dConfig{.padding = 1}));
  bn1_ = register_module(
      "bn1", std::make_shared<SwitchableBatchNorm2d>(sw, sw->channels(filters[0], "bn1")));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  layer1_ = register_module("layer1", make_layer(filters[1], n, 1, gen, "layer1"));
  layer2_ = register_module("layer2", make_layer(filters[2], n, 2, gen, "layer2"));
  layer3_ = register_module("layer3", make_layer(filters[3], n, 2, gen, "layer3"));
  avgpool_ = register_module("avgpool", std::make_shared<GlobalAvgPool2d>());
  fc_ = register_module("fc", std::make_shared<SlimmableLinear>(sw, sw->channels(filters[3], "fc"),
                                                                options.num_classes, gen));

  // As ResNet: every conv (in module order) redrawn Kaiming-normal fan-out over its full weight.
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) init::kaiming_normal_fan_out_(conv->weight(), gen);
  }
}

std::shared_ptr<Sequential> SlimmableResNet::make_layer(int64_t planes, int64_t blocks,
                                                        int64_t stride, Generator& gen,
                                                        const std::string& name) {
  const WidthSwitch& sw = *shared_widths();
  const std::vector<int64_t> in_list = sw.channels(in_planes_, name);
  const std::vector<int64_t> out_list = sw.channels(planes, name);
  // The full model's rule; with stride 1 every width must agree that in == out.
  const bool projection = stride != 1 || in_planes_ != planes;
  if (stride == 1) check_residual_structure(in_list, out_list, sw, name + ".0");
  auto layer = std::make_shared<Sequential>();
  layer->push_back(std::make_shared<SlimmableBasicBlock>(shared_widths(), in_list, out_list, stride,
                                                         projection, gen));
  in_planes_ = planes;
  for (int64_t i = 1; i < blocks; ++i) {
    layer->push_back(
        std::make_shared<SlimmableBasicBlock>(shared_widths(), out_list, out_list, 1, false, gen));
  }
  return layer;
}

void SlimmableResNet::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  out.push_back({conv1_.get(), bn1_.get()});
  Module::collect_conv_bn_pairs(out);
}

Tensor SlimmableResNet::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x);  // relu(bn1(conv1(x))), fused
  out = (*layer3_)((*layer2_)((*layer1_)(out)));
  return (*fc_)((*avgpool_)(out));
}

}  // namespace retort::nn
