// Trainer: the training loop shared by teacher training, vanilla students and distillation.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "datasets/data_loader.h"
#include "datasets/image_set.h"
#include "engine/device.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace retort::distill {

class GraphedStep;

// The loss one training step minimises, given the student's logits for a batch. Teacher-only
// training and vanilla students use cross-entropy; distillation adds teacher terms.
class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;
  // A scalar loss; `logits` is (B, classes) on the training device, batch on the same device.
  virtual Tensor loss(const Tensor& logits, const data::Batch& batch) = 0;
  // Runs once per epoch before the first step (e.g. to put a teacher in eval mode).
  virtual void on_epoch_begin(int64_t /*epoch*/) {}
};

class CrossEntropyObjective final : public Objective {
 public:
  std::string name() const override { return "ce"; }
  Tensor loss(const Tensor& logits, const data::Batch& batch) override;
};

class Trainer;

// A plugin changes what the loop does without the loop knowing about it: KCD records values and
// condenses the training set; PWKD switches the teacher's width per stage. Plugins run in the
// order they were added. Their state goes into every checkpoint so a resume is exact.
class TrainerPlugin {
 public:
  virtual ~TrainerPlugin() = default;
  virtual std::string name() const = 0;
  // Before the epoch's loader starts: the place to change the index list or the pixels.
  virtual void on_epoch_begin(Trainer& /*trainer*/, int64_t /*epoch*/) {}
  // After each step's forward, with the student's logits (detached) and the batch.
  virtual void on_step(Trainer& /*trainer*/, const data::Batch& /*batch*/,
                       const Tensor& /*logits*/) {}
  // After the epoch's evaluation, before the checkpoint is written.
  virtual void on_epoch_end(Trainer& /*trainer*/, int64_t /*epoch*/) {}
  // Extra per-epoch columns for the log ("kept", "stage", ...), as name/value pairs.
  virtual std::vector<std::pair<std::string, double>> log_fields() const { return {}; }
  virtual nn::NamedTensors state() const { return {}; }
  virtual void load_state(const nn::NamedTensors& /*state*/) {}
};

enum class LrScheduleKind { multistep, cosine };

struct TrainerOptions {
  std::string run_dir = "runs/run";  // log.csv, checkpoint.safetensors, model.safetensors
  std::string run_name;              // label in reports; run_dir's last part when empty
  int64_t epochs = 10;
  int64_t batch_size = 64;
  int64_t eval_batch_size = 256;
  nn::SgdOptions sgd{0.05, 0.9, 0.0, 5e-4, false};
  LrScheduleKind schedule = LrScheduleKind::multistep;
  // Multi-step milestones (1-based epochs); empty: RepDistiller's 150/180/210 of 240, scaled to
  // the run's epoch count.
  std::vector<int64_t> milestones;
  double gamma = 0.1;
  double lr_min = 0.0;  // cosine
  uint64_t seed = 0;    // data order and augmentation (the model's init seed is the model's)
  Device device = Device::cpu();
  data::AugmentOptions augment;  // train-time augmentation; evaluation keeps only normalisation
  bool resume = false;           // continue from run_dir/checkpoint.safetensors when present
  bool save_checkpoints = true;
  bool log_jsonl = false;        // log.jsonl instead of log.csv
  bool quiet = false;            // no progress output at all
  int prefetch_batches = 3;
  // CUDA only: after three eager steps, each epoch's full-size training step is captured once as
  // a CUDA graph and replayed (distill/graph_step.h); the epoch's last partial batch runs
  // eagerly. Any schedule: the optimiser keeps its learning rate on the device
  // (SGD::set_lr_in_tensor), where each step's rate is written before the replay.
  // The step must stay on the device: an objective or plugin that reads values back inside the
  // step (slimmable joint training) is refused with an error at the capture.
  bool cuda_graph = false;
  // Written into model.safetensors and best.safetensors (e.g. {"model": "resnet20"}), so a
  // command that loads the weights later knows what they belong to.
  std::map<std::string, std::string> weights_metadata;
};

struct EpochStats {
  int64_t epoch = 0;
  double lr = 0.0;
  double train_loss = 0.0, train_acc = 0.0;  // over the epoch's training batches (augmented)
  double test_loss = 0.0, test_acc = 0.0, test_top5 = 0.0;
  int64_t samples = 0;    // training samples seen this epoch
  double seconds = 0.0;   // wall time of the epoch, evaluation included
  double train_seconds = 0.0;  // the training part alone (samples / train_seconds = images/s)
  std::vector<std::pair<std::string, double>> extra;  // plugin log fields
};

struct RunReport {
  std::string run_name;
  int64_t epochs = 0;
  double last_acc = 0.0;  // test top-1 (%) after the last epoch
  double best_acc = 0.0;  // best test top-1 (%) over the epochs, and where
  int64_t best_epoch = 0;
  int64_t sample_passes = 0;  // training samples the student saw over the whole run
  double wall_seconds = 0.0;  // training + evaluation, summed over sessions when resumed
  std::vector<EpochStats> history;
};

// Multi-step milestones for a run of `epochs`: 150/180/210 of 240 scaled (62.5%, 75%, 87.5%).
std::vector<int64_t> default_milestones(int64_t epochs);

// Runs epochs of SGD on `model` over `train_set`, evaluating on `test_set` after each epoch.
// The training set is shared with plugins, which may change its pixels and the index list.
class Trainer {
 public:
  Trainer(std::shared_ptr<nn::Module> model, std::shared_ptr<data::ImageSet> train_set,
          std::shared_ptr<const data::ImageSet> test_set, std::shared_ptr<Objective> objective,
          TrainerOptions options);
  ~Trainer();

  void add_plugin(std::shared_ptr<TrainerPlugin> plugin);
  // Trains to options.epochs (from the checkpoint when resuming) and returns the report.
  // `stop_after_epoch` ends the session early after that epoch (its checkpoint written), which
  // is how tests interrupt a run.
  RunReport run(std::optional<int64_t> stop_after_epoch = std::nullopt);

  // --- for plugins -------------------------------------------------------------------------
  nn::Module& model() { return *model_; }
  data::ImageSet& train_set() { return *train_set_; }
  data::DataLoader& train_loader() { return *train_loader_; }
  const TrainerOptions& options() const { return options_; }
  nn::SGD& optimizer() { return *optimizer_; }
  // Learning rate for the step at (1-based) epoch, after `fraction` of the epoch's batches.
  double lr_at(int64_t epoch, double fraction) const;
  // Test-set evaluation of the current model: (loss, top-1 %, top-5 %).
  std::tuple<double, double, double> evaluate();
  // Replaces how the learning rate is chosen (PWKD's restarts); default: options.schedule.
  void set_lr_function(std::function<double(int64_t epoch, double fraction)> fn);

 private:
  // One training step: forward, objective, backward, SGD, and the step's loss and top-1 hits
  // added to the epoch's device-side sums. Everything stays on the device (it may be captured).
  void train_step(const data::Batch& batch);
  DType model_dtype() const;
  void save_checkpoint(int64_t epoch, const RunReport& report) const;
  int64_t load_checkpoint(RunReport& report);
  void write_log(const RunReport& report) const;
  void print_epoch(const EpochStats& stats) const;

  std::shared_ptr<nn::Module> model_;
  std::shared_ptr<data::ImageSet> train_set_;
  std::shared_ptr<const data::ImageSet> test_set_;
  std::shared_ptr<Objective> objective_;
  std::vector<std::shared_ptr<TrainerPlugin>> plugins_;
  TrainerOptions options_;
  std::unique_ptr<nn::SGD> optimizer_;
  std::unique_ptr<data::DataLoader> train_loader_;
  std::unique_ptr<data::DataLoader> test_loader_;
  std::function<double(int64_t, double)> lr_fn_;
  std::unique_ptr<GraphedStep> graphed_;
  Tensor loss_acc_, correct_acc_;  // the epoch's loss sum (model dtype) and top-1 hits (i64)
  Tensor step_logits_;             // the last step's logits, detached, for the plugins
};

// Formats a report table row set: "name | last | best (epoch) | passes | time".
std::string format_reports(const std::vector<RunReport>& reports);

}  // namespace retort::distill
