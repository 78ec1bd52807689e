// Model summaries: forward hooks on the parameterised layers collect shapes, parameters and MACs.
#include "nn/models/summary.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "engine/autograd.h"
#include "nn/layers.h"
#include "nn/models/registry.h"

namespace retort::nn {

std::string with_thousands(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

ModelSummary summarize(Module& model, const Shape& input_chw, const std::string& model_name) {
  if (input_chw.size() != 3) {
    throw std::invalid_argument("summarize: input shape must be (C, H, W), got " +
                                shape_str(input_chw));
  }
  ModelSummary summary;
  summary.model = model_name.empty() ? model.type_name() : model_name;
  summary.input_shape = input_chw;

  const std::vector<Tensor> params = model.parameters();
  const DType dtype = params.empty() ? DType::f32 : params.front().dtype();
  const Device device = params.empty() ? Device::cpu() : params.front().device();

  std::vector<std::pair<Module*, int64_t>> hooks;
  for (auto& [name, m] : model.named_modules()) {
    if (m->own_parameters().empty()) continue;
    const std::string layer_name = name;
    const int64_t id =
        m->add_forward_hook([&summary, layer_name](Module& mod, const Tensor&, const Tensor& out) {
          LayerSummary row;
          row.name = layer_name;
          row.type = mod.type_name();
          row.output_shape = Shape(out.shape().begin() + 1, out.shape().end());
          for (const auto& [pname, p] : mod.own_parameters()) row.params += p.numel();
          if (const auto* conv = dynamic_cast<const Conv2d*>(&mod)) {
            row.macs = conv->weight().numel() * out.size(2) * out.size(3);
          } else if (const auto* fc = dynamic_cast<const Linear*>(&mod)) {
            row.macs = fc->weight().numel();
          }
          summary.layers.push_back(std::move(row));
        });
    hooks.emplace_back(m, id);
  }

  const bool was_training = model.is_training();
  model.eval();
  try {
    NoGradGuard no_grad;
    Shape input = {1};
    input.insert(input.end(), input_chw.begin(), input_chw.end());
    const Tensor out = model(Tensor::zeros(input, dtype, device));
    summary.output_shape = Shape(out.shape().begin() + 1, out.shape().end());
  } catch (...) {
    for (auto& [m, id] : hooks) m->remove_forward_hook(id);
    model.train(was_training);
    throw;
  }
  for (auto& [m, id] : hooks) m->remove_forward_hook(id);
  model.train(was_training);

  summary.total_params = model.num_parameters();
  for (const LayerSummary& row : summary.layers) summary.total_macs += row.macs;
  return summary;
}

ModelSummary model_summary(const std::string& name, const ModelOptions& options, int64_t height,
                           int64_t width) {
  if (height < 1 || width < 1) {
    throw std::invalid_argument("model_summary: input size must be positive, got " +
                                std::to_string(height) + "x" + std::to_string(width));
  }
  std::shared_ptr<Module> model = create_model(name, options);
  return summarize(*model, {options.in_channels, height, width}, name);
}

std::string ModelSummary::format() const {
  size_t name_width = 5, type_width = 4, shape_width = 12;
  for (const LayerSummary& row : layers) {
    name_width = std::max(name_width, row.name.size());
    type_width = std::max(type_width, row.type.size());
    shape_width = std::max(shape_width, shape_str(row.output_shape).size());
  }
  auto pad = [](std::string s, size_t w, bool right) {
    if (s.size() >= w) return s;
    return right ? std::string(w - s.size(), ' ') + s : s + std::string(w - s.size(), ' ');
  };
  std::ostringstream out;
  out << model << ": input " << shape_str(input_shape) << ", output " << shape_str(output_shape)
      << "\n";
  out << pad("layer", name_width, false) << "  " << pad("type", type_width, false) << "  "
      << pad("output shape", shape_width, false) << "  " << pad("params", 11, true) << "  "
      << pad("MACs", 15, true) << "\n";
  for (const LayerSummary& row : layers) {
    out << pad(row.name, name_width, false) << "  " << pad(row.type, type_width, false) << "  "
        << pad(shape_str(row.output_shape), shape_width, false) << "  "
        << pad(with_thousands(row.params), 11, true) << "  "
        << pad(with_thousands(row.macs), 15, true) << "\n";
  }
  char totals[160];
  std::snprintf(totals, sizeof(totals), "total: %s params (%.3f M), %s MACs (%.2f M)",
                with_thousands(total_params).c_str(), static_cast<double>(total_params) / 1e6,
                with_thousands(total_macs).c_str(), static_cast<double>(total_macs) / 1e6);
  out << totals << "\n";
  return out.str();
}

}  // namespace retort::nn
