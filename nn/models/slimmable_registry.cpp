// Slimmable registry: registry names mapped to architectures, built slimmable or at one width.
#include "nn/models/slimmable_registry.h"

#include <array>
#include <stdexcept>

#include "nn/models/mobilenetv2.h"
#include "nn/models/resnet.h"
#include "nn/models/slimmable_mobilenetv2.h"
#include "nn/models/slimmable_resnet.h"
#include "nn/models/slimmable_wrn.h"
#include "nn/models/wrn.h"

namespace retort::nn {
namespace {

enum class Family { resnet, wrn, mobilenetv2 };

// The registry's architectures (nn/models/registry.cpp, spec/models.md 4).
struct Architecture {
  const char* name;
  Family family;
  int64_t depth = 0;                 // ResNet, WRN
  std::array<int64_t, 4> filters{};  // ResNet
  int64_t widen_factor = 0;          // WRN
};

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = [] {
    std::vector<Architecture> t;
    const std::array<int64_t, 4> plain = {16, 16, 32, 64}, x4 = {32, 64, 128, 256};
    const std::pair<const char*, int64_t> resnets[] = {
        {"resnet8", 8},   {"resnet14", 14}, {"resnet20", 20},  {"resnet32", 32},
        {"resnet44", 44}, {"resnet56", 56}, {"resnet110", 110}};
    for (const auto& [name, depth] : resnets) t.push_back({name, Family::resnet, depth, plain, 0});
    t.push_back({"resnet8x4", Family::resnet, 8, x4, 0});
    t.push_back({"resnet32x4", Family::resnet, 32, x4, 0});
    t.push_back({"wrn_16_1", Family::wrn, 16, {}, 1});
    t.push_back({"wrn_16_2", Family::wrn, 16, {}, 2});
    t.push_back({"wrn_40_1", Family::wrn, 40, {}, 1});
    t.push_back({"wrn_40_2", Family::wrn, 40, {}, 2});
    // "MobileNetV2" = RepDistiller's mobile_half: expansion 6, width 0.5.
    t.push_back({"MobileNetV2", Family::mobilenetv2, 0, {}, 0});
    return t;
  }();
  return table;
}

constexpr int64_t kMobileExpansion = 6;
constexpr double kMobileWidthMult = 0.5;

const Architecture& find_architecture(const std::string& name, const ModelOptions& options,
                                      const char* who) {
  if (options.in_channels < 1) {
    throw std::invalid_argument(std::string(who) + ": in_channels must be >= 1, got " +
                                std::to_string(options.in_channels));
  }
  if (options.num_classes < 1) {
    throw std::invalid_argument(std::string(who) + ": num_classes must be >= 1, got " +
                                std::to_string(options.num_classes));
  }
  for (const Architecture& a : architectures()) {
    if (a.name == name) return a;
  }
  std::string known;
  for (const Architecture& a : architectures())
    known += (known.empty() ? "" : ", ") + std::string(a.name);
  throw std::invalid_argument(std::string(who) + ": unknown model '" + name +
                              "'; known models: " + known);
}

}  // namespace

std::vector<std::string> slimmable_model_names() {
  std::vector<std::string> names;
  for (const Architecture& a : architectures()) names.emplace_back(a.name);
  return names;
}

std::shared_ptr<SlimmableModel> create_slimmable_model(const std::string& name,
                                                       const ModelOptions& options,
                                                       const std::vector<double>& widths) {
  const Architecture& a = find_architecture(name, options, "create_slimmable_model");
  switch (a.family) {
    case Family::resnet:
      return std::make_shared<SlimmableResNet>(a.depth, a.filters, options, widths);
    case Family::wrn:
      return std::make_shared<SlimmableWideResNet>(a.depth, a.widen_factor, options, widths);
    case Family::mobilenetv2:
      return std::make_shared<SlimmableMobileNetV2>(kMobileExpansion, kMobileWidthMult, options,
                                                    widths);
  }
  throw std::logic_error("create_slimmable_model: unhandled family");
}

std::shared_ptr<Module> create_width_model(const std::string& name, const ModelOptions& options,
                                           double width) {
  const Architecture& a = find_architecture(name, options, "create_width_model");
  if (!(width > 0.0) || width > 1.0) {
    throw std::invalid_argument("create_width_model: width must be in (0, 1], got " +
                                std::to_string(width));
  }
  auto scaled = [width](const std::array<int64_t, 4>& c) {
    std::array<int64_t, 4> out{};
    for (size_t i = 0; i < c.size(); ++i) {
      out[i] = scale_channels(c[i], width);
      if (out[i] < 1) throw std::invalid_argument("create_width_model: width leaves 0 channels");
    }
    return out;
  };
  switch (a.family) {
    case Family::resnet:
      return std::make_shared<ResNet>(a.depth, scaled(a.filters), options);
    case Family::wrn: {
      const int64_t k = a.widen_factor;
      return std::make_shared<WideResNet>(a.depth, scaled({16, 16 * k, 32 * k, 64 * k}), options);
    }
    case Family::mobilenetv2:
      return std::make_shared<MobileNetV2>(kMobileExpansion, kMobileWidthMult, options, width);
  }
  throw std::logic_error("create_width_model: unhandled family");
}

}  // namespace retort::nn
