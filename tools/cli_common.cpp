// Dataset selection, device resolution and the training flags shared by the subcommands.
#include "tools/cli_common.h"

#include <stdexcept>

#include "datasets/readers.h"
#include "engine/dispatch.h"

namespace retort::cli {

namespace {

CLI::Validator number_check(bool allow_zero) {
  return CLI::Validator(
      [allow_zero](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const double v = std::stod(text, &used);
          if (used != text.size()) return "'" + text + "' is not a number";
          if (allow_zero ? v < 0.0 : v <= 0.0) {
            return allow_zero ? "must be >= 0, got " + text : "must be > 0, got " + text;
          }
        } catch (const std::exception&) {
          return "'" + text + "' is not a number";
        }
        return {};
      },
      allow_zero ? ">= 0" : "> 0");
}

}  // namespace

CLI::Validator positive() { return number_check(false); }
CLI::Validator non_negative() { return number_check(true); }

void DatasetFlags::add_to(CLI::App& app) {
  app.add_option("--dataset", name,
                 "fashion-mnist (Debian's dataset-fashion-mnist), mnist (IDX files in --data-dir), "
                 "cifar10 / cifar100 (binary version in --data-dir), or folder (--data-dir "
                 "holding train/ and test/, one subfolder per class)")
      ->check(CLI::IsMember({"fashion-mnist", "mnist", "cifar10", "cifar100", "folder"}))
      ->capture_default_str();
  app.add_option("--data-dir", dir,
                 "Directory of the dataset files (default for fashion-mnist: " +
                     std::string(data::kFashionMnistRoot) + ")");
  app.add_option("--train-subset", train_subset,
                 "Train on a class-balanced subset of this many images (0: all)")
      ->check(non_negative())
      ->capture_default_str();
  app.add_option("--test-subset", test_subset,
                 "Evaluate on a class-balanced subset of this many images (0: all)")
      ->check(non_negative())
      ->capture_default_str();
  app.add_option("--subset-seed", subset_seed, "Seed of the subset choice")->capture_default_str();
}

LoadedData load_data(const DatasetFlags& flags) {
  data::ImageSet train, test;
  LoadedData out;
  auto need_dir = [&] {
    if (flags.dir.empty()) {
      throw std::invalid_argument("--dataset " + flags.name + " needs --data-dir");
    }
  };
  if (flags.name == "fashion-mnist" || flags.name == "mnist") {
    if (flags.name == "mnist") need_dir();
    const std::string root = flags.dir.empty() ? data::kFashionMnistRoot : flags.dir;
    if (flags.name == "fashion-mnist") {
      train = data::fashion_mnist(root, true);
      test = data::fashion_mnist(root, false);
      out.mean = data::kFashionMnistMean;
      out.std = data::kFashionMnistStd;
    } else {
      train = data::read_idx(root + "/train-images-idx3-ubyte.gz", root + "/train-labels-idx1-ubyte.gz", 10);
      test = data::read_idx(root + "/t10k-images-idx3-ubyte.gz", root + "/t10k-labels-idx1-ubyte.gz", 10);
      out.mean = {0.1307f};
      out.std = {0.3081f};
    }
  } else if (flags.name == "cifar10" || flags.name == "cifar100") {
    need_dir();
    const bool c10 = flags.name == "cifar10";
    train = c10 ? data::cifar10(flags.dir, true) : data::cifar100(flags.dir, true);
    test = c10 ? data::cifar10(flags.dir, false) : data::cifar100(flags.dir, false);
    out.mean = c10 ? data::kCifar10Mean : data::kCifar100Mean;
    out.std = c10 ? data::kCifar10Std : data::kCifar100Std;
  } else {
    need_dir();
    train = data::read_image_folder(flags.dir + "/train");
    test = data::read_image_folder(flags.dir + "/test", static_cast<int>(train.channels()));
    if (test.num_classes() != train.num_classes()) {
      throw std::invalid_argument(flags.dir + "/test has " + std::to_string(test.num_classes()) +
                                  " classes but " + flags.dir + "/train has " +
                                  std::to_string(train.num_classes()));
    }
    const data::ChannelStats stats = data::channel_stats(train);
    out.mean = stats.mean;
    out.std = stats.std;
  }
  if (flags.train_subset > 0) {
    if (flags.train_subset > train.size()) {
      throw std::invalid_argument("--train-subset " + std::to_string(flags.train_subset) +
                                  " exceeds the " + std::to_string(train.size()) +
                                  " training images");
    }
    train = data::subset(train, flags.train_subset, flags.subset_seed);
  }
  if (flags.test_subset > 0) {
    if (flags.test_subset > test.size()) {
      throw std::invalid_argument("--test-subset " + std::to_string(flags.test_subset) +
                                  " exceeds the " + std::to_string(test.size()) + " test images");
    }
    test = data::subset(test, flags.test_subset, flags.subset_seed + 1);
  }
  out.train = std::make_shared<data::ImageSet>(std::move(train));
  out.test = std::make_shared<data::ImageSet>(std::move(test));
  return out;
}

Device resolve_device(const std::string& text) {
  if (text == "auto") return cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
  Device device;
  try {
    device = Device::parse(text);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--device: " + std::string(e.what()) + " or auto");
  }
  try {
    require_available(device);
  } catch (const std::exception& e) {
    throw std::invalid_argument("--device " + text + ": " + e.what());
  }
  return device;
}

void TrainFlags::add_to(CLI::App& app) {
  app.add_option("--epochs", epochs, "Training epochs")->check(positive())->capture_default_str();
  app.add_option("--batch-size", batch_size, "Training batch size")->check(positive())->capture_default_str();
  app.add_option("--eval-batch-size", eval_batch_size, "Evaluation batch size")->check(positive())->capture_default_str();
  app.add_option("--lr", lr, "Initial learning rate (RepDistiller: 0.05; 0.01 for MobileNetV2)")->check(positive())->capture_default_str();
  app.add_option("--momentum", momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "SGD weight decay")->check(non_negative())->capture_default_str();
  app.add_flag("--nesterov", nesterov, "Nesterov momentum");
  app.add_option("--schedule", schedule, "Learning-rate schedule: multistep (x gamma at each milestone) or cosine")
      ->check(CLI::IsMember({"multistep", "cosine"}))->capture_default_str();
  app.add_option("--milestones", milestones,
                 "Epochs after which multistep multiplies the rate by gamma (default: 62.5%, 75%, "
                 "87.5% of --epochs, i.e. RepDistiller's 150/180/210 of 240)")
      ->delimiter(',');
  app.add_option("--gamma", gamma, "Multistep decay factor")->check(positive())->capture_default_str();
  app.add_option("--seed", seed, "Seed of the model's initial weights, the data order and augmentation")->capture_default_str();
  app.add_option("--device", device, "cpu, cuda, cuda:N, or auto (the GPU when one is present)")->capture_default_str();
  app.add_option("--precision", precision,
                 "CUDA math: tf32 (convs and GEMMs on TF32 tensor cores, fp32 storage; PyTorch's "
                 "default for convs) or fp32 (strict). The CPU always computes in fp32")
      ->check(CLI::IsMember({"tf32", "fp32"}))->capture_default_str();
  app.add_flag("--deterministic", deterministic,
               "CUDA: pin cuDNN to deterministic algorithms and turn TF32 off, so two runs with "
               "one seed give the same bits (slower)");
  app.add_flag("--cuda-graph", cuda_graph,
               "CUDA: capture each epoch's training step once as a CUDA graph and replay it (one "
               "launch per step instead of hundreds)");
  app.add_option("--threads", threads, "CPU threads for the kernels (0: all cores)")->check(non_negative())->capture_default_str();
  app.add_option("--run-dir", run_dir, "Where the log, checkpoints and weights go (default: runs/<name>)");
  app.add_flag("--resume", resume, "Continue from <run-dir>/checkpoint.safetensors when it exists");
  app.add_option("--log-format", log_format, "Per-epoch log: csv (log.csv) or jsonl (log.jsonl)")
      ->check(CLI::IsMember({"csv", "jsonl"}))->capture_default_str();
  app.add_option("--crop-padding", crop_padding, "Random-crop zero padding in pixels (0: no crop)")->check(non_negative())->capture_default_str();
  app.add_flag("--no-flip", no_flip, "No random horizontal flips");
  app.add_flag("--no-augment", no_augment, "No crop and no flip (normalisation only)");
  app.add_flag("--quiet", quiet, "No progress output");
}

distill::TrainerOptions TrainFlags::to_options(const LoadedData& data,
                                               const std::string& default_name) const {
  distill::TrainerOptions o;
  o.run_dir = run_dir.empty() ? "runs/" + default_name : run_dir;
  o.epochs = epochs;
  o.batch_size = batch_size;
  o.eval_batch_size = eval_batch_size;
  o.sgd = {lr, momentum, 0.0, weight_decay, nesterov};
  o.schedule = schedule == "cosine" ? distill::LrScheduleKind::cosine : distill::LrScheduleKind::multistep;
  o.milestones = milestones;
  for (int64_t m : milestones) {
    if (m < 1 || m > epochs) {
      throw std::invalid_argument("--milestones: " + std::to_string(m) + " is outside 1.." +
                                  std::to_string(epochs));
    }
  }
  o.gamma = gamma;
  o.seed = seed;
  o.device = resolve_device(device);
  set_cuda_math({.allow_tf32 = precision == "tf32" && !deterministic,
                 .deterministic = deterministic});
  o.cuda_graph = cuda_graph;
  o.resume = resume;
  o.log_jsonl = log_format == "jsonl";
  o.quiet = quiet;
  o.augment.mean = data.mean;
  o.augment.std = data.std;
  o.augment.crop_padding = no_augment ? 0 : crop_padding;
  o.augment.horizontal_flip = !no_augment && !no_flip;
  set_num_threads(threads);
  return o;
}

}  // namespace retort::cli
