// Plain WRN / MobileNetV2 at one width: the full models' blocks, order and init, scaled channels.
#include "nn/models/slimmable_plain.h"

#include <stdexcept>
#include <vector>

#include "nn/init.h"
#include "nn/models/mobilenetv2.h"
#include "nn/models/wrn.h"
#include "nn/slimmable.h"

namespace retort::nn {
namespace {

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

WideResNetAtWidth::WideResNetAtWidth(int64_t depth, const std::array<int64_t, 4>& c,
                                     const ModelOptions& options) {
  if (depth < 10 || (depth - 4) % 6 != 0) {
    throw std::invalid_argument("WideResNetAtWidth: depth must be 6n+4 with n >= 1, got " +
                                std::to_string(depth));
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
  for (auto& [name, m] : named_modules()) {
    if (auto* conv = dynamic_cast<Conv2d*>(m)) init::kaiming_normal_fan_out_(conv->weight(), gen);
  }
  init::constant_(fc_->bias(), 0.0);
}

Tensor WideResNetAtWidth::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  out = (*block3_)((*block2_)((*block1_)(out)));
  out = (*relu_)((*bn1_)(out));
  return (*fc_)(global_avg_pool2d(out));
}

MobileNetV2AtWidth::MobileNetV2AtWidth(int64_t expansion, double width_mult, double width,
                                       const ModelOptions& options) {
  if (expansion < 1 || !(width_mult > 0.0) || width_mult > 1.0 || !(width > 0.0) || width > 1.0) {
    throw std::invalid_argument(
        "MobileNetV2AtWidth: expansion must be >= 1, width_mult and width in (0, 1]");
  }
  const std::array<StageSetting, 7> settings = {{{1, 16, 1, 1},
                                                 {expansion, 24, 2, 1},
                                                 {expansion, 32, 3, 2},
                                                 {expansion, 64, 4, 2},
                                                 {expansion, 96, 3, 1},
                                                 {expansion, 160, 3, 2},
                                                 {expansion, 320, 1, 1}}};
  auto scaled = [&](int64_t c) {
    const int64_t out = scale_channels(c, width);
    if (out < 1) throw std::invalid_argument("MobileNetV2AtWidth: width leaves 0 channels");
    return out;
  };
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

Tensor MobileNetV2AtWidth::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  for (size_t i = 0; i < blocks_->size(); ++i) out = (*blocks_->at(i))(out);
  out = (*conv2_)(out);
  return (*classifier_)((*avgpool_)(out));
}

}  // namespace retort::nn
