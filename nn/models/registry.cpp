// The model registry: names mapped to the factories of the three families.
#include "nn/models/registry.h"

#include <array>
#include <functional>
#include <stdexcept>
#include <utility>

#include "nn/models/mobilenetv2.h"
#include "nn/models/resnet.h"
#include "nn/models/wrn.h"

namespace retort::nn {
namespace {

using Factory = std::function<std::shared_ptr<Module>(const ModelOptions&)>;

const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> entries = [] {
    std::vector<std::pair<std::string, Factory>> e;
    auto resnet = [&e](const char* name, int64_t depth, std::array<int64_t, 4> filters) {
      e.emplace_back(name, [depth, filters](const ModelOptions& o) {
        return std::make_shared<ResNet>(depth, filters, o);
      });
    };
    const std::pair<const char*, int64_t> plain[] = {
        {"resnet8", 8},   {"resnet14", 14}, {"resnet20", 20},  {"resnet32", 32},
        {"resnet44", 44}, {"resnet56", 56}, {"resnet110", 110}};
    for (const auto& [name, depth] : plain) resnet(name, depth, {16, 16, 32, 64});
    resnet("resnet8x4", 8, {32, 64, 128, 256});
    resnet("resnet32x4", 32, {32, 64, 128, 256});
    auto wrn = [&e](const char* name, int64_t depth, int64_t k) {
      e.emplace_back(name, [depth, k](const ModelOptions& o) {
        return std::make_shared<WideResNet>(depth, k, o);
      });
    };
    wrn("wrn_16_1", 16, 1);
    wrn("wrn_16_2", 16, 2);
    wrn("wrn_40_1", 40, 1);
    wrn("wrn_40_2", 40, 2);
    // The KCD registry's "MobileNetV2" is RepDistiller's mobile_half.
    e.emplace_back("MobileNetV2",
                   [](const ModelOptions& o) { return std::make_shared<MobileNetV2>(6, 0.5, o); });
    return e;
  }();
  return entries;
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

std::shared_ptr<Module> create_model(const std::string& name, const ModelOptions& options) {
  if (options.in_channels < 1) {
    throw std::invalid_argument("create_model: in_channels must be >= 1, got " +
                                std::to_string(options.in_channels));
  }
  if (options.num_classes < 1) {
    throw std::invalid_argument("create_model: num_classes must be >= 1, got " +
                                std::to_string(options.num_classes));
  }
  for (const auto& [known, factory] : registry()) {
    if (known == name) return factory(options);
  }
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model '" + name + "'; known models: " + known);
}

}  // namespace retort::nn
