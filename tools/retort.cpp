// The `retort` command line: train, eval and info (distillation subcommands join them).
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "distill/trainer.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "nn/metrics.h"
#include "nn/models/registry.h"
#include "nn/models/summary.h"
#include "tools/cli_common.h"
#include "tools/distill_command.h"

namespace retort::cli {
namespace {

std::string model_list() {
  std::string names;
  for (const std::string& n : nn::model_names()) names += (names.empty() ? "" : ", ") + n;
  return names;
}

struct TrainCommand {
  std::string model = "resnet20";
  bool slimmable = false;
  std::string widths = "0.25,0.5,0.75,1";
  bool inplace = false;
  std::string init_from;
  DatasetFlags dataset;
  TrainFlags train;
  void add_to(CLI::App& parent) {
    CLI::App* app = parent.add_subcommand(
        "train", "Train a model with cross-entropy (a teacher, or a student baseline)");
    app->add_option("--model", model, "Model to train: " + model_list())->capture_default_str();
    app->add_flag("--slimmable", slimmable,
                  "Train a slimmable teacher for PWKD: sub-networks of every width share weights "
                  "(own BN per width) and all widths train on every batch (retort's "
                  "reconstruction of PWKD's teacher, spec distillation.md 3.4)");
    app->add_option("--widths", widths, "Slimmable widths, narrow to wide, ending at 1")
        ->capture_default_str();
    app->add_flag("--inplace-distillation", inplace,
                  "Slimmable: narrower widths learn the widest width's predictions instead of "
                  "the labels");
    app->add_option("--init-from", init_from,
                    "Slimmable: start from a trained full-width model's weights and fine-tune");
    dataset.add_to(*app);
    train.add_to(*app);
    app->callback([this] { run(); });
  }
  void run() const {
    if (!slimmable && (inplace || !init_from.empty())) {
      throw std::invalid_argument("--inplace-distillation and --init-from need --slimmable");
    }
    const LoadedData data = load_data(dataset);
    if (slimmable) {
      distill::TrainerOptions options = train.to_options(data, model + "_slimmable");
      std::vector<double> width_list;
      std::stringstream in(widths);
      for (std::string part; std::getline(in, part, ',');) width_list.push_back(std::stod(part));
      std::printf("train slimmable %s (widths %s) on %s, %lld epochs, device %s, run dir %s\n",
                  model.c_str(), widths.c_str(), data.train->str().c_str(),
                  static_cast<long long>(options.epochs), options.device.str().c_str(),
                  options.run_dir.c_str());
      const distill::RunReport report =
          train_slimmable_teacher(model, width_list, inplace, init_from, data, options);
      std::printf("\n%s", distill::format_reports({report}).c_str());
      std::printf("test accuracy by width after the last epoch: %s\nweights in %s/model.safetensors\n",
                  width_accuracies(report).c_str(), options.run_dir.c_str());
      return;
    }
    distill::TrainerOptions options = train.to_options(data, model);
    options.weights_metadata = {{"model", model},
                                {"in_channels", std::to_string(data.train->channels())},
                                {"num_classes", std::to_string(data.train->num_classes())}};
    auto net = nn::create_model(model, {data.train->channels(), data.train->num_classes(), train.seed});
    std::printf("train %s (%s parameters) on %s, %lld epochs, device %s, run dir %s\n",
                model.c_str(), nn::with_thousands(net->num_parameters()).c_str(),
                data.train->str().c_str(), static_cast<long long>(options.epochs),
                options.device.str().c_str(), options.run_dir.c_str());
    distill::Trainer trainer(net, data.train, data.test,
                             std::make_shared<distill::CrossEntropyObjective>(), options);
    const distill::RunReport report = trainer.run();
    std::printf("\n%s", distill::format_reports({report}).c_str());
    std::printf("last-epoch accuracy %.2f%%, best %.2f%% (epoch %lld); weights in %s/model.safetensors\n",
                report.last_acc, report.best_acc, static_cast<long long>(report.best_epoch),
                options.run_dir.c_str());
  }
};

struct EvalCommand {
  std::string model = "resnet20";
  std::string checkpoint;
  std::string device = "auto";
  bool train_split = false;
  int64_t batch_size = 256;
  DatasetFlags dataset;
  void add_to(CLI::App& parent) {
    CLI::App* app = parent.add_subcommand("eval", "Evaluate saved weights on a dataset");
    app->add_option("--model", model, "Model the weights belong to: " + model_list())->capture_default_str();
    app->add_option("--weights", checkpoint,
                    "A model.safetensors / best.safetensors written by train (PyTorch names)")
        ->required();
    app->add_option("--device", device, "cpu, cuda, cuda:N or auto")->capture_default_str();
    app->add_flag("--train-split", train_split, "Evaluate on the training split instead of test");
    app->add_option("--batch-size", batch_size, "Evaluation batch size")->check(positive())->capture_default_str();
    dataset.add_to(*app);
    app->callback([this] { run(); });
  }
  void run() const {
    const LoadedData data = load_data(dataset);
    const Device dev = resolve_device(device);
    auto net = nn::create_model(model, {data.train->channels(), data.train->num_classes(), 0});
    const SafetensorsFile weights = load_safetensors(checkpoint);
    net->load_state_dict(weights.tensors);
    net->to(dev);
    net->eval();
    const data::ImageSet& set = train_split ? *data.train : *data.test;
    data::DataLoaderOptions opts;
    opts.batch_size = batch_size;
    opts.shuffle = false;
    opts.augment.mean = data.mean;
    opts.augment.std = data.std;
    opts.augment.random = false;
    data::DataLoader loader(train_split ? data.train : data.test, set.all_indices(), opts);
    NoGradGuard no_grad;
    double loss = 0.0;
    int64_t top1 = 0, top5 = 0, n = 0;
    loader.begin_epoch(0);
    while (auto batch = loader.next()) {
      Tensor logits = (*net)(batch->images.to(dev));
      Tensor labels = batch->labels.to(dev);
      loss += cross_entropy(logits, labels, Reduction::sum).item();
      top1 += nn::count_correct(logits, labels, 1);
      top5 += nn::count_correct(logits, labels, 5);
      n += labels.size(0);
    }
    std::printf("%s on %s (%s split, %lld images): loss %.4f  top-1 %.2f%%  top-5 %.2f%%\n",
                model.c_str(), set.source().c_str(), train_split ? "train" : "test",
                static_cast<long long>(n), loss / n, 100.0 * top1 / n, 100.0 * top5 / n);
  }
};

struct InfoCommand {
  std::string model = "resnet8x4";
  int64_t channels = 3, height = 32, width = 32, classes = 100;
  void add_to(CLI::App& parent) {
    CLI::App* app = parent.add_subcommand(
        "info", "Print a model's layers, output shapes, parameter count and MACs");
    app->add_option("--model", model, "One of: " + model_list())->capture_default_str();
    app->add_option("--channels", channels, "Input channels (3 for CIFAR, 1 for Fashion-MNIST)")->check(positive())->capture_default_str();
    app->add_option("--height", height, "Input height")->check(positive())->capture_default_str();
    app->add_option("--width", width, "Input width")->check(positive())->capture_default_str();
    app->add_option("--classes", classes, "Number of classes")->check(positive())->capture_default_str();
    app->callback([this] {
      const nn::ModelSummary s = nn::model_summary(model, {channels, classes, 0}, height, width);
      std::printf("%s", s.format().c_str());
    });
  }
};

}  // namespace
}  // namespace retort::cli

int main(int argc, char** argv) {
  // libgomp reads OMP_WAIT_POLICY once, when it loads (before main). Idle OpenMP threads that
  // spin take the cores the data loader and other processes need: 3x slower on a busy 2-core
  // machine, no difference on an idle one (measured). So retort runs itself again once with
  // PASSIVE unless the user chose a policy.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default policy
  }
  using namespace retort::cli;
  CLI::App app{
      "retort: train image classifiers and distil a teacher into a student (KD, KCD, PWKD)."};
  app.require_subcommand(1);
  TrainCommand train;
  EvalCommand eval;
  InfoCommand info;
  train.add_to(app);
  add_distill_command(app);
  add_demo_command(app);
  eval.add_to(app);
  info.add_to(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "retort: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
