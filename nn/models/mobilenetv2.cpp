// MobileNetV2 (CIFAR variant): inverted residual blocks, the stage table, and the initialisation.
#include "nn/models/mobilenetv2.h"

#include <array>
#include <stdexcept>

#include "nn/init.h"

namespace retort::nn {
namespace {

// conv -> BN -> ReLU, the reference's conv_bn (3x3) and conv_1x1_bn.
std::shared_ptr<Sequential> conv_bn_relu(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                         Generator& gen) {
  return std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
      std::make_shared<Conv2d>(in, out, kernel, gen,
                               Conv2dConfig{.stride = stride, .padding = kernel / 2}),
      std::make_shared<BatchNorm2d>(out), std::make_shared<ReLU>()});
}

struct StageSetting {
  int64_t expansion, channels, blocks, stride;
};

}  // namespace

InvertedResidual::InvertedResidual(int64_t in_planes, int64_t out_planes, int64_t stride,
                                   int64_t expand_ratio, Generator& gen)
    : use_residual_(stride == 1 && in_planes == out_planes) {
  const int64_t hidden = in_planes * expand_ratio;
  conv_ = register_module(
      "conv",
      std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
          std::make_shared<Conv2d>(in_planes, hidden, 1, gen),
          std::make_shared<BatchNorm2d>(hidden),
          std::make_shared<ReLU>(),
          std::make_shared<Conv2d>(hidden, hidden, 3, gen,
                                   Conv2dConfig{.stride = stride, .padding = 1, .groups = hidden}),
          std::make_shared<BatchNorm2d>(hidden),
          std::make_shared<ReLU>(),
          std::make_shared<Conv2d>(hidden, out_planes, 1, gen),
          std::make_shared<BatchNorm2d>(out_planes),
      }));
}

Tensor InvertedResidual::forward(const Tensor& x) {
  Tensor out = (*conv_)(x);
  return use_residual_ ? x + out : out;
}

MobileNetV2::MobileNetV2(int64_t expansion, double width_mult, const ModelOptions& options,
                         double width) {
  // Widths above 1 would need the reference's make_divisible rule for the last conv: not needed.
  if (expansion < 1 || !(width_mult > 0.0) || width_mult > 1.0 || !(width > 0.0) || width > 1.0) {
    throw std::invalid_argument(
        "MobileNetV2: expansion must be >= 1, width_mult and width in (0, 1]");
  }
  auto scaled = [width](int64_t c) {
    const auto out = static_cast<int64_t>(static_cast<double>(c) * width);
    if (out < 1) throw std::invalid_argument("MobileNetV2: width leaves a layer with 0 channels");
    return out;
  };
  const std::array<StageSetting, 7> settings = {{{1, 16, 1, 1},
                                                 {expansion, 24, 2, 1},
                                                 {expansion, 32, 3, 2},
                                                 {expansion, 64, 4, 2},
                                                 {expansion, 96, 3, 1},
                                                 {expansion, 160, 3, 2},
                                                 {expansion, 320, 1, 1}}};
  Generator gen(options.seed);
  int64_t channels = scaled(static_cast<int64_t>(32 * width_mult));
  conv1_ = register_module("conv1", conv_bn_relu(options.in_channels, channels, 3, 2, gen));
  blocks_ = register_module("blocks", std::make_shared<ModuleList>());
  for (const StageSetting& s : settings) {
    const int64_t out = scaled(static_cast<int64_t>(s.channels * width_mult));
    auto stage = std::make_shared<Sequential>();
    for (int64_t b = 0; b < s.blocks; ++b) {
      stage->push_back(std::make_shared<InvertedResidual>(channels, out, b == 0 ? s.stride : 1,
                                                          s.expansion, gen));
      channels = out;
    }
    blocks_->push_back(stage);
  }
  // The reference keeps 1280 for width_mult <= 1; a slimmable sub-network scales it too.
  const int64_t last_channels = scaled(1280);
  conv2_ = register_module("conv2", conv_bn_relu(channels, last_channels, 1, 1, gen));
  classifier_ = register_module(
      "classifier", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                        std::make_shared<Linear>(last_channels, options.num_classes, gen)}));
  avgpool_ = register_module("avgpool", std::make_shared<GlobalAvgPool2d>());

  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) {
      init::kaiming_normal_fan_out_(conv->weight(), gen);
    } else if (auto* fc = dynamic_cast<Linear*>(m)) {
      init::normal_(fc->weight(), 0.0, 0.01, gen);
      init::constant_(fc->bias(), 0.0);
    }
  }
}

Tensor MobileNetV2::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  for (size_t i = 0; i < blocks_->size(); ++i) out = (*blocks_->at(i))(out);
  out = (*conv2_)(out);
  return (*classifier_)((*avgpool_)(out));
}

}  // namespace retort::nn
