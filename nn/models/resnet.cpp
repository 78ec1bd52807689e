// CIFAR ResNet: BasicBlock, the three stages, and the Kaiming fan-out initialisation.
#include "nn/models/resnet.h"

#include <stdexcept>

#include "nn/init.h"
#include "nn/units.h"

namespace retort::nn {

BasicBlock::BasicBlock(int64_t in_planes, int64_t planes, int64_t stride, bool projection,
                       Generator& gen) {
  conv1_ = register_module("conv1",
                           std::make_shared<Conv2d>(in_planes, planes, 3, gen,
                                                    Conv2dConfig{.stride = stride, .padding = 1}));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  conv2_ = register_module(
      "conv2", std::make_shared<Conv2d>(planes, planes, 3, gen, Conv2dConfig{.padding = 1}));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
  if (projection) {
    downsample_ = register_module(
        "downsample",
        std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
            std::make_shared<Conv2d>(in_planes, planes, 1, gen, Conv2dConfig{.stride = stride}),
            std::make_shared<BatchNorm2d>(planes)}));
  }
}

Tensor BasicBlock::forward(const Tensor& x) {
  // relu(bn1(conv1(x))) and relu(bn2(conv2(out)) + shortcut), each unit as few ops as the layers
  // allow (nn/units.h; the `relu` module keeps its place in the tree). The reference's pre-ReLU
  // sum ("preact") is bn2(conv2(out)) + shortcut; feature taps come later.
  const Tensor out = conv_bn_relu(*conv1_, *bn1_, x);
  return conv_bn_add_relu(*conv2_, *bn2_, out,
                          [&] { return downsample_ ? (*downsample_)(x) : x; });
}

void BasicBlock::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  out.push_back({conv1_.get(), bn1_.get()});
  out.push_back({conv2_.get(), bn2_.get()});
  Module::collect_conv_bn_pairs(out);
}

ResNet::ResNet(int64_t depth, const std::array<int64_t, 4>& filters, const ModelOptions& options) {
  if (depth < 8 || (depth - 2) % 6 != 0) {
    throw std::invalid_argument("ResNet: depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got " +
                                std::to_string(depth));
  }
  const int64_t n = (depth - 2) / 6;
  Generator gen(options.seed);
  in_planes_ = filters[0];
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(options.in_channels, filters[0], 3,
                                                             gen, Conv2dConfig{.padding = 1}));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(filters[0]));
  relu_ = register_module("relu", std::make_shared<ReLU>());
  layer1_ = register_module("layer1", make_layer(filters[1], n, 1, gen));
  layer2_ = register_module("layer2", make_layer(filters[2], n, 2, gen));
  layer3_ = register_module("layer3", make_layer(filters[3], n, 2, gen));
  avgpool_ = register_module("avgpool", std::make_shared<GlobalAvgPool2d>());
  fc_ = register_module("fc", std::make_shared<Linear>(filters[3], options.num_classes, gen));

  // As the reference: after construction, every conv (in module order) is redrawn Kaiming-normal
  // fan-out; BN starts at 1/0 already; fc keeps PyTorch's default.
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) init::kaiming_normal_fan_out_(conv->weight(), gen);
  }
}

std::shared_ptr<Sequential> ResNet::make_layer(int64_t planes, int64_t blocks, int64_t stride,
                                               Generator& gen) {
  auto layer = std::make_shared<Sequential>();
  const bool projection = stride != 1 || in_planes_ != planes;
  layer->push_back(std::make_shared<BasicBlock>(in_planes_, planes, stride, projection, gen));
  in_planes_ = planes;
  for (int64_t i = 1; i < blocks; ++i) {
    layer->push_back(std::make_shared<BasicBlock>(planes, planes, 1, false, gen));
  }
  return layer;
}

void ResNet::collect_conv_bn_pairs(std::vector<ConvBnPair>& out) {
  out.push_back({conv1_.get(), bn1_.get()});
  Module::collect_conv_bn_pairs(out);
}

Tensor ResNet::forward(const Tensor& x) {
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x);  // relu(bn1(conv1(x))), fused
  out = (*layer3_)((*layer2_)((*layer1_)(out)));
  return (*fc_)((*avgpool_)(out));
}

}  // namespace retort::nn
