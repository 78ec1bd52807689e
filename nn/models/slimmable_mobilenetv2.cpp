// Slimmable MobileNetV2: the full model's stage table, construction order and initialisation.
#include "nn/models/slimmable_mobilenetv2.h"

#include <array>
#include <stdexcept>

#include "nn/init.h"

namespace retort::nn {
namespace {

using WidthsPtr = std::shared_ptr<const WidthSwitch>;

// conv -> switchable BN -> ReLU, the reference's conv_bn (3x3) and conv_1x1_bn.
std::shared_ptr<Sequential> conv_bn_relu(const WidthsPtr& widths, const std::vector<int64_t>& in,
                                         const std::vector<int64_t>& out, int64_t kernel,
                                         int64_t stride, Generator& gen) {
  return std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
      std::make_shared<SlimmableConv2d>(widths, in, out, kernel, gen,
                                        Conv2dConfig{.stride = stride, .padding = kernel / 2}),
      std::make_shared<SwitchableBatchNorm2d>(widths, out), std::make_shared<ReLU>()});
}

struct StageSetting {
  int64_t expansion, channels, blocks, stride;
};

}  // namespace

SlimmableInvertedResidual::SlimmableInvertedResidual(const WidthsPtr& widths,
                                                     const std::vector<int64_t>& in_planes,
                                                     const std::vector<int64_t>& out_planes,
                                                     int64_t stride, int64_t expand_ratio,
                                                     Generator& gen, const std::string& name)
    : use_residual_(stride == 1 && in_planes.back() == out_planes.back()) {
  if (stride == 1) check_residual_structure(in_planes, out_planes, *widths, name);
  std::vector<int64_t> hidden;
  for (int64_t c : in_planes) hidden.push_back(c * expand_ratio);
  conv_ = register_module(
      "conv", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                  std::make_shared<SlimmableConv2d>(widths, in_planes, hidden, 1, gen),
                  std::make_shared<SwitchableBatchNorm2d>(widths, hidden),
                  std::make_shared<ReLU>(),
                  std::make_shared<SlimmableConv2d>(widths, hidden, hidden, 3, gen,
                                                    Conv2dConfig{.stride = stride, .padding = 1},
                                                    /*depthwise=*/true),
                  std::make_shared<SwitchableBatchNorm2d>(widths, hidden),
                  std::make_shared<ReLU>(),
                  std::make_shared<SlimmableConv2d>(widths, hidden, out_planes, 1, gen),
                  std::make_shared<SwitchableBatchNorm2d>(widths, out_planes),
              }));
}

Tensor SlimmableInvertedResidual::forward(const Tensor& x) {
  Tensor out = (*conv_)(x);
  return use_residual_ ? x + out : out;
}

SlimmableMobileNetV2::SlimmableMobileNetV2(int64_t expansion, double width_mult,
                                           const ModelOptions& options, std::vector<double> widths)
    : SlimmableModel(std::move(widths)) {
  if (expansion < 1 || !(width_mult > 0.0) || width_mult > 1.0) {
    throw std::invalid_argument("SlimmableMobileNetV2: expansion must be >= 1 and width in (0, 1]");
  }
  const std::array<StageSetting, 7> settings = {{{1, 16, 1, 1},
                                                 {expansion, 24, 2, 1},
                                                 {expansion, 32, 3, 2},
                                                 {expansion, 64, 4, 2},
                                                 {expansion, 96, 3, 1},
                                                 {expansion, 160, 3, 2},
                                                 {expansion, 320, 1, 1}}};
  const auto& sw = shared_widths();
  Generator gen(options.seed);
  std::vector<int64_t> channels = sw->channels(static_cast<int64_t>(32 * width_mult), "conv1");
  const std::vector<int64_t> stem_in(static_cast<size_t>(sw->size()), options.in_channels);
  conv1_ = register_module("conv1", conv_bn_relu(sw, stem_in, channels, 3, 2, gen));
  blocks_ = register_module("blocks", std::make_shared<ModuleList>());
  for (size_t s = 0; s < settings.size(); ++s) {
    const StageSetting& st = settings[s];
    const std::string stage_name = "blocks." + std::to_string(s);
    const std::vector<int64_t> out =
        sw->channels(static_cast<int64_t>(st.channels * width_mult), stage_name);
    auto stage = std::make_shared<Sequential>();
    for (int64_t b = 0; b < st.blocks; ++b) {
      stage->push_back(std::make_shared<SlimmableInvertedResidual>(
          sw, channels, out, b == 0 ? st.stride : 1, st.expansion, gen,
          stage_name + "." + std::to_string(b)));
      channels = out;
    }
    blocks_->push_back(stage);
  }
  // The full model keeps 1280 for width_mult <= 1; each width takes int(1280 * w) of it.
  const std::vector<int64_t> last = sw->channels(1280, "conv2");
  conv2_ = register_module("conv2", conv_bn_relu(sw, channels, last, 1, 1, gen));
  classifier_ = register_module(
      "classifier", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                        std::make_shared<SlimmableLinear>(sw, last, options.num_classes, gen)}));
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

Tensor SlimmableMobileNetV2::forward(const Tensor& x) {
  Tensor out = (*conv1_)(x);
  for (size_t i = 0; i < blocks_->size(); ++i) out = (*blocks_->at(i))(out);
  out = (*conv2_)(out);
  return (*classifier_)((*avgpool_)(out));
}

}  // namespace retort::nn
