// Shared pieces of the `retort` subcommands: dataset selection, device choice, training flags.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "datasets/image_set.h"
#include "distill/trainer.h"
#include "engine/device.h"

namespace retort::cli {

// Validators with short messages ("must be > 0") for numeric flags.
CLI::Validator positive();
CLI::Validator non_negative();

// Which data a command trains or evaluates on, as the flags describe it.
struct DatasetFlags {
  std::string name = "fashion-mnist";  // fashion-mnist | mnist | cifar10 | cifar100 | folder
  std::string dir;                     // data directory (default: Debian's Fashion-MNIST path)
  int64_t train_subset = 0;            // 0: all training images; else a class-balanced subset
  int64_t test_subset = 0;
  uint64_t subset_seed = 0;
  void add_to(CLI::App& app);
};

struct LoadedData {
  std::shared_ptr<data::ImageSet> train;
  std::shared_ptr<data::ImageSet> test;
  std::vector<float> mean, std;  // per-channel normalisation
};

// Reads the train and test splits (and subsets them) as the flags say; errors name the flag.
LoadedData load_data(const DatasetFlags& flags);

// "cpu", "cuda", "cuda:N" or "auto" (the GPU when one is present, else the CPU).
Device resolve_device(const std::string& text);

// Every flag of the training loop, with RepDistiller's recipe scaled down as the defaults.
struct TrainFlags {
  int64_t epochs = 10;
  int64_t batch_size = 64;
  int64_t eval_batch_size = 256;
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  bool nesterov = false;
  std::string schedule = "multistep";
  std::vector<int64_t> milestones;
  double gamma = 0.1;
  uint64_t seed = 0;
  std::string device = "auto";
  std::string precision = "tf32";
  bool deterministic = false;
  bool cuda_graph = false;
  int threads = 0;
  std::string run_dir;
  bool resume = false;
  std::string log_format = "csv";
  int crop_padding = 4;
  bool no_flip = false;
  bool no_augment = false;
  bool quiet = false;
  void add_to(CLI::App& app);
  // Options for a run whose default directory is runs/<default_name>.
  distill::TrainerOptions to_options(const LoadedData& data, const std::string& default_name) const;
};

}  // namespace retort::cli
