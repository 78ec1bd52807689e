// Model summaries for the `info` command: per-layer output shapes, parameters and MACs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/shape.h"
#include "nn/models/options.h"
#include "nn/module.h"

namespace retort::nn {

// One row per invocation of a layer that holds parameters (Conv2d, BatchNorm2d, Linear), in
// execution order. Shapes are per sample (no batch dimension).
struct LayerSummary {
  std::string name;  // "layer1.0.conv1"
  std::string type;  // "Conv2d"
  Shape output_shape;
  int64_t params = 0;
  // Multiply-accumulates per sample, counted as models.md counts them: conv = weight elements x
  // output positions, linear = in x out; BN, activations, pooling and adds count 0.
  int64_t macs = 0;
};

struct ModelSummary {
  std::string model;
  Shape input_shape;   // (C, H, W)
  Shape output_shape;  // (classes)
  std::vector<LayerSummary> layers;
  int64_t total_params = 0;  // all learnable elements (BN running statistics excluded)
  int64_t total_macs = 0;
  // A fixed-width table with a header, one line per layer, and the totals.
  std::string format() const;
};

// Runs one zero sample of shape (C, H, W) through `model` in evaluation mode without recording
// gradients (the model's mode is restored afterwards, its buffers are untouched).
ModelSummary summarize(Module& model, const Shape& input_chw, const std::string& model_name = "");
// Builds the named model (create_model) and summarises it for an input of H x W.
ModelSummary model_summary(const std::string& name, const ModelOptions& options, int64_t height,
                           int64_t width);

// 1234567 -> "1,234,567".
std::string with_thousands(int64_t value);

}  // namespace retort::nn
