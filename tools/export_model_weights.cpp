// retort_export_weights: writes a registry model's initial state dict (PyTorch names) to
// safetensors.
//
// The PyTorch side of the golden model test (tools/make_golden_models.py) starts from these
// files, so it runs on retort's own initial weights and load_state_dict(strict=True) checks that
// retort's names and shapes are what torch expects.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "engine/safetensors.h"
#include "nn/models/registry.h"

int main(int argc, char** argv) {
  namespace nn = retort::nn;
  std::string names;
  for (const std::string& n : nn::model_names()) names += (names.empty() ? "" : ", ") + n;

  CLI::App app{"Write a freshly initialised retort model's state dict as a safetensors file"};
  std::string model, out;
  nn::ModelOptions options;
  app.add_option("--model", model, "One of: " + names)->required();
  app.add_option("--in-channels", options.in_channels, "Input channels")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--classes", options.num_classes, "Number of classes")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", options.seed, "Initialisation seed")->capture_default_str();
  app.add_option("--out", out, "The .safetensors file to write")->required();
  CLI11_PARSE(app, argc, argv);

  try {
    const auto net = nn::create_model(model, options);
    const std::map<std::string, std::string> metadata = {
        {"model", model},
        {"in_channels", std::to_string(options.in_channels)},
        {"num_classes", std::to_string(options.num_classes)},
        {"seed", std::to_string(options.seed)},
        {"generator", "retort_export_weights"},
    };
    retort::save_safetensors(out, net->state_dict(), metadata);
    std::printf("%s: %lld parameters, %zu state-dict entries -> %s\n", model.c_str(),
                static_cast<long long>(net->num_parameters()), net->state_dict().size(),
                out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "retort_export_weights: %s\n", e.what());
    return 1;
  }
  return 0;
}
