// Slimmable twins of the model registry, and plain models of one width with the registry's names.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/models/options.h"
#include "nn/module.h"
#include "nn/slimmable_model.h"

namespace retort::nn {

// The slimmable version of create_model(name, options) (PWKD's teacher reconstruction, spec
// distillation.md 3.4): same depth, topology and state names (BNs become `<bn>.bn.<i>`, see
// SlimmableModel), every channel count int(c*w) for each w of `widths`, initialised like the full
// model: for the same seed the shared full weights equal create_model's initial weights. In
// training mode on the CPU, f32, at the widest width. Unknown names and bad options throw
// std::invalid_argument as create_model; a width list that is invalid, leaves a layer without
// channels or changes a block's residual structure throws std::invalid_argument.
std::shared_ptr<SlimmableModel> create_slimmable_model(
    const std::string& name, const ModelOptions& options = {},
    const std::vector<double>& widths = kDefaultSlimmableWidths);

// The names create_slimmable_model accepts: every name of model_names().
std::vector<std::string> slimmable_model_names();

// A plain (non-slimmable) model of the named architecture at one width: every channel count
// int(c*width) as the slimmable model's sub-network of that width, built from the full models'
// own blocks (BasicBlock, WideBasicBlock, InvertedResidual: the residual / projection decision
// is taken from the width's own channels) with the full model's state names, so
// SlimmableModel::copy_width_to loads into it. At width 1.0 it is create_model(name, options),
// initial weights included. `width` must be in (0, 1].
std::shared_ptr<Module> create_width_model(const std::string& name, const ModelOptions& options,
                                           double width);

}  // namespace retort::nn
