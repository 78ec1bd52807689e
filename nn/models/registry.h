// The model registry: build a model by name ("resnet8x4", "wrn_40_2", "MobileNetV2", ...).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/models/options.h"
#include "nn/module.h"

namespace retort::nn {

// Builds the named model (spec/models.md) in training mode on the CPU, f32, initialised from
// options.seed. Unknown names throw std::invalid_argument listing the known ones; bad options
// (in_channels or num_classes < 1) throw naming the option.
std::shared_ptr<Module> create_model(const std::string& name, const ModelOptions& options = {});

// Every registered name, in a stable order: resnet8 ... resnet110, resnet8x4, resnet32x4,
// wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2, MobileNetV2.
std::vector<std::string> model_names();

}  // namespace retort::nn
