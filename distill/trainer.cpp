// The training loop: epochs, learning rate, evaluation, progress, logs, checkpoints and resume.
#include "distill/trainer.h"

#include "distill/graph_step.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "nn/metrics.h"
#include "nn/schedule.h"

namespace retort::distill {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kCheckpointFile = "checkpoint.safetensors";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kBestFile = "best.safetensors";
constexpr int64_t kVirtualStepsPerEpoch = 1 << 20;  // resolution of the cosine schedule
// Steps between reads of the device-side loss/accuracy sums when no progress line asks sooner.
constexpr int64_t kStatsInterval = 50;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buffer[32];
  if (s >= 3600) {
    std::snprintf(buffer, sizeof(buffer), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buffer, sizeof(buffer), "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buffer;
}

nlohmann::json stats_to_json(const EpochStats& s) {
  nlohmann::json j = {{"epoch", s.epoch},           {"lr", s.lr},
                      {"train_loss", s.train_loss}, {"train_acc", s.train_acc},
                      {"test_loss", s.test_loss},   {"test_acc", s.test_acc},
                      {"test_top5", s.test_top5},   {"samples", s.samples},
                      {"seconds", s.seconds},           {"train_seconds", s.train_seconds}};
  for (const auto& [key, value] : s.extra) j[key] = value;
  return j;
}

EpochStats stats_from_json(const nlohmann::json& j) {
  EpochStats s;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "epoch") s.epoch = it->get<int64_t>();
    else if (key == "lr") s.lr = it->get<double>();
    else if (key == "train_loss") s.train_loss = it->get<double>();
    else if (key == "train_acc") s.train_acc = it->get<double>();
    else if (key == "test_loss") s.test_loss = it->get<double>();
    else if (key == "test_acc") s.test_acc = it->get<double>();
    else if (key == "test_top5") s.test_top5 = it->get<double>();
    else if (key == "samples") s.samples = it->get<int64_t>();
    else if (key == "seconds") s.seconds = it->get<double>();
    else if (key == "train_seconds") s.train_seconds = it->get<double>();
    else s.extra.emplace_back(key, it->get<double>());
  }
  return s;
}

// Writes text to path through a temporary file and a rename, so a reader never sees half a file.
void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot rename " + tmp.string() + " to " + path.string());
  }
}

// A one-line progress display on a terminal: redrawn in place, at most a few times a second.
class Progress {
 public:
  Progress(bool enabled, int64_t epoch, int64_t epochs, int64_t batches)
      : enabled_(enabled), epoch_(epoch), epochs_(epochs), batches_(batches),
        start_(Clock::now()) {}
  // True when update() would draw now: the caller reads its statistics from the device only
  // then (a read waits for the device).
  bool due(int64_t done) const {
    return enabled_ && (done >= batches_ || seconds_since(start_) - last_draw_ >= 0.2);
  }
  void update(int64_t done, int64_t samples, double loss, double acc) {
    if (!due(done)) return;
    const double elapsed = seconds_since(start_);
    last_draw_ = elapsed;
    const int width = 24;
    const int filled = batches_ > 0 ? static_cast<int>(width * done / batches_) : width;
    const double rate = elapsed > 0 ? samples / elapsed : 0.0;
    const double eta = done > 0 ? elapsed * (batches_ - done) / done : 0.0;
    std::fprintf(stderr, "\r  epoch %lld/%lld [%s%s] %lld/%lld  loss %.4f  acc %5.2f%%  %.0f img/s  ETA %s ",
                 static_cast<long long>(epoch_), static_cast<long long>(epochs_),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<long long>(done), static_cast<long long>(batches_), loss, acc, rate,
                 format_duration(eta).c_str());
    std::fflush(stderr);
  }
  void finish() {
    if (!enabled_) return;
    std::fprintf(stderr, "\r%*s\r", 110, "");
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  int64_t epoch_, epochs_, batches_;
  Clock::time_point start_;
  double last_draw_ = -1.0;
};

}  // namespace

Tensor CrossEntropyObjective::loss(const Tensor& logits, const data::Batch& batch) {
  return cross_entropy(logits, batch.labels);
}

std::vector<int64_t> default_milestones(int64_t epochs) {
  std::vector<int64_t> milestones;
  for (double fraction : {0.625, 0.75, 0.875}) {
    const int64_t m = static_cast<int64_t>(std::llround(fraction * static_cast<double>(epochs)));
    if (m >= 1 && m < epochs && (milestones.empty() || m > milestones.back())) {
      milestones.push_back(m);
    }
  }
  return milestones;
}

Trainer::Trainer(std::shared_ptr<nn::Module> model, std::shared_ptr<data::ImageSet> train_set,
                 std::shared_ptr<const data::ImageSet> test_set,
                 std::shared_ptr<Objective> objective, TrainerOptions options)
    : model_(std::move(model)),
      train_set_(std::move(train_set)),
      test_set_(std::move(test_set)),
      objective_(std::move(objective)),
      options_(std::move(options)) {
  if (!model_ || !train_set_ || !test_set_ || !objective_) {
    throw std::invalid_argument("Trainer: model, data sets and objective are all required");
  }
  if (options_.epochs < 1) throw std::invalid_argument("--epochs must be >= 1");
  if (options_.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
  if (options_.eval_batch_size < 1) throw std::invalid_argument("--eval-batch-size must be >= 1");
  if (!(options_.sgd.lr > 0.0)) throw std::invalid_argument("--lr must be > 0");
  if (train_set_->empty()) throw std::invalid_argument("the training set is empty");
  if (test_set_->empty()) throw std::invalid_argument("the test set is empty");
  if (options_.run_name.empty()) {
    options_.run_name = fs::path(options_.run_dir).filename().string();
  }
  if (options_.schedule == LrScheduleKind::multistep && options_.milestones.empty()) {
    options_.milestones = default_milestones(options_.epochs);
  }
  require_available(options_.device);
  if (options_.cuda_graph) {
    if (!options_.device.is_cuda()) {
      throw std::invalid_argument("--cuda-graph needs a CUDA device (got --device " +
                                  options_.device.str() + ")");
    }
  }
  model_->to(options_.device);
  optimizer_ = std::make_unique<nn::SGD>(model_->named_parameters(), options_.sgd);
  // A captured step reads its learning rate from the device, where set_lr writes each step's.
  if (options_.cuda_graph) optimizer_->set_lr_in_tensor(true);

  data::DataLoaderOptions train_opts;
  train_opts.batch_size = options_.batch_size;
  train_opts.shuffle = true;
  train_opts.seed = options_.seed;
  train_opts.augment = options_.augment;
  train_opts.augment.random = true;
  train_opts.prefetch_batches = options_.prefetch_batches;
  train_opts.device = options_.device;
  train_loader_ = std::make_unique<data::DataLoader>(train_set_, train_set_->all_indices(),
                                                     train_opts);
  data::DataLoaderOptions test_opts;
  test_opts.batch_size = options_.eval_batch_size;
  test_opts.shuffle = false;
  test_opts.augment = options_.augment;
  test_opts.augment.random = false;
  test_opts.prefetch_batches = options_.prefetch_batches;
  test_opts.device = options_.device;
  test_loader_ = std::make_unique<data::DataLoader>(test_set_, test_set_->all_indices(), test_opts);

  const nn::MultiStepLR multistep(options_.sgd.lr, options_.milestones, options_.gamma);
  const nn::CosineLR cosine(options_.sgd.lr, options_.lr_min,
                            options_.epochs * kVirtualStepsPerEpoch);
  const LrScheduleKind kind = options_.schedule;
  lr_fn_ = [multistep, cosine, kind](int64_t epoch, double fraction) {
    if (kind == LrScheduleKind::multistep) return multistep.lr_at_epoch(epoch);
    const double position = (static_cast<double>(epoch - 1) + fraction) * kVirtualStepsPerEpoch;
    return cosine.lr_at_iteration(static_cast<int64_t>(position));
  };
}

Trainer::~Trainer() = default;

void Trainer::add_plugin(std::shared_ptr<TrainerPlugin> plugin) {
  plugins_.push_back(std::move(plugin));
}

double Trainer::lr_at(int64_t epoch, double fraction) const { return lr_fn_(epoch, fraction); }

void Trainer::set_lr_function(std::function<double(int64_t, double)> fn) { lr_fn_ = std::move(fn); }

std::tuple<double, double, double> Trainer::evaluate() {
  NoGradGuard no_grad;
  const bool was_training = model_->is_training();
  model_->eval();
  // Loss and top-1 are summed where they are computed; top-5 is counted on the host.
  Tensor loss_sum, top1 = Tensor::zeros({1}, DType::i64, options_.device);
  int64_t top5 = 0, count = 0;
  test_loader_->begin_epoch(0);
  while (auto batch = test_loader_->next()) {
    Tensor images = batch->images.to(options_.device);
    Tensor labels = batch->labels.to(options_.device);
    Tensor logits = (*model_)(images);
    Tensor batch_loss = cross_entropy(logits, labels, Reduction::sum);
    if (loss_sum.defined()) {
      accumulate_(loss_sum, batch_loss);
    } else {
      loss_sum = batch_loss.clone();
    }
    count_top1_(top1, logits, labels);
    top5 += nn::count_correct(logits, labels, 5);
    count += labels.size(0);
  }
  model_->train(was_training);
  return {loss_sum.item() / count, 100.0 * top1.item() / count, 100.0 * top5 / count};
}

DType Trainer::model_dtype() const {
  const nn::NamedTensors params = model_->named_parameters();
  return params.empty() ? DType::f32 : params.front().second.dtype();
}

void Trainer::train_step(const data::Batch& batch) {
  Tensor logits = (*model_)(batch.images);
  Tensor loss = objective_->loss(logits, batch);
  optimizer_->zero_grad();
  loss.backward();
  optimizer_->step();
  step_logits_ = logits.detach();
  accumulate_(loss_acc_, loss.detach() * static_cast<double>(batch.labels.size(0)));
  count_top1_(correct_acc_, step_logits_, batch.labels);
}

RunReport Trainer::run(std::optional<int64_t> stop_after_epoch) {
  if (options_.cuda_graph && !graphed_) {
    graphed_ = std::make_unique<GraphedStep>(
        model_, [this](const data::Batch& b) { train_step(b); }, options_.device);
  }
  std::error_code ec;
  fs::create_directories(options_.run_dir, ec);
  if (ec) throw std::runtime_error("cannot create run directory " + options_.run_dir);

  RunReport report;
  report.run_name = options_.run_name;
  report.epochs = options_.epochs;
  int64_t start_epoch = 1;
  if (options_.resume) start_epoch = load_checkpoint(report) + 1;
  const bool terminal = !options_.quiet && isatty(fileno(stderr));

  for (int64_t epoch = start_epoch; epoch <= options_.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    model_->train();
    objective_->on_epoch_begin(epoch);
    for (auto& plugin : plugins_) plugin->on_epoch_begin(*this, epoch);

    train_loader_->begin_epoch(epoch - 1);
    const int64_t batches = train_loader_->batches_per_epoch();
    Progress progress(terminal, epoch, options_.epochs, batches);
    EpochStats stats;
    stats.epoch = epoch;
    stats.lr = lr_fn_(epoch, 0.0);
    // The step's loss and top-1 hits are summed on the model's device and read back only when
    // the progress line is drawn, every kStatsInterval steps and at the end of the epoch: on a
    // GPU each read waits for the device, which must not happen every step.
    const bool on_cpu = options_.device.is_cpu();
    // Zeroed in place: a captured step keeps the addresses it was recorded with.
    if (!loss_acc_.defined() || loss_acc_.dtype() != model_dtype()) {
      loss_acc_ = Tensor::zeros({}, model_dtype(), options_.device);
      correct_acc_ = Tensor::zeros({1}, DType::i64, options_.device);
    }
    loss_acc_.fill_(0.0);
    correct_acc_.fill_(0.0);
    if (graphed_) graphed_->recapture();  // new learning rate, plugins may have changed things
    double loss_sum = 0.0;
    int64_t correct = 0, step = 0;
    auto read_stats = [&] {
      loss_sum = loss_acc_.item();
      correct = static_cast<int64_t>(correct_acc_.item());
      if (!std::isfinite(loss_sum)) {
        throw std::runtime_error("training diverged: the loss is " + std::to_string(loss_sum) +
                                 " by epoch " + std::to_string(epoch) + ", step " +
                                 std::to_string(step) + " (try a lower --lr)");
      }
    };
    while (auto batch = train_loader_->next()) {
      optimizer_->set_lr(lr_fn_(epoch, static_cast<double>(step) / batches));
      data::Batch device_batch{batch->images.to(options_.device),
                               batch->labels.to(options_.device),
                               batch->indices.to(options_.device)};
      const int64_t steps_before = optimizer_->step_count();
      if (graphed_) {
        graphed_->run(device_batch);
      } else {
        train_step(device_batch);
      }
      optimizer_->set_step_count(steps_before + 1);  // a replay does not move the host count
      for (auto& plugin : plugins_) plugin->on_step(*this, device_batch, step_logits_);
      stats.samples += device_batch.labels.size(0);
      ++step;
      if (on_cpu || progress.due(step) || step % kStatsInterval == 0) {
        read_stats();
        progress.update(step, stats.samples, loss_sum / stats.samples,
                        100.0 * correct / stats.samples);
      }
    }
    read_stats();
    progress.finish();
    stats.train_seconds = seconds_since(epoch_start);
    stats.train_loss = loss_sum / std::max<int64_t>(stats.samples, 1);
    stats.train_acc = 100.0 * correct / std::max<int64_t>(stats.samples, 1);
    std::tie(stats.test_loss, stats.test_acc, stats.test_top5) = evaluate();
    for (auto& plugin : plugins_) plugin->on_epoch_end(*this, epoch);
    for (auto& plugin : plugins_) {
      for (auto& field : plugin->log_fields()) stats.extra.push_back(field);
    }
    stats.seconds = seconds_since(epoch_start);

    report.history.push_back(stats);
    report.last_acc = stats.test_acc;
    report.sample_passes += stats.samples;
    report.wall_seconds += stats.seconds;
    const bool best = report.best_epoch == 0 || stats.test_acc > report.best_acc;
    if (best) {
      report.best_acc = stats.test_acc;
      report.best_epoch = epoch;
    }
    if (options_.save_checkpoints) {
      std::map<std::string, std::string> meta = options_.weights_metadata;
      meta["epoch"] = std::to_string(epoch);
      meta["test_acc"] = nlohmann::json(stats.test_acc).dump();
      save_safetensors((fs::path(options_.run_dir) / kModelFile).string(), model_->state_dict(),
                       meta);
      if (best) {
        save_safetensors((fs::path(options_.run_dir) / kBestFile).string(), model_->state_dict(),
                         meta);
      }
      save_checkpoint(epoch, report);
    }
    write_log(report);
    print_epoch(stats);
    if (stop_after_epoch && epoch >= *stop_after_epoch) break;
  }
  return report;
}

void Trainer::print_epoch(const EpochStats& s) const {
  if (options_.quiet) return;
  std::printf("[%s] epoch %3lld/%lld  lr %.5f  train loss %.4f acc %6.2f%%  test loss %.4f acc "
              "%6.2f%%  (%lld samples, %.0f img/s, %.1f s)",
              options_.run_name.c_str(), static_cast<long long>(s.epoch),
              static_cast<long long>(options_.epochs), s.lr, s.train_loss, s.train_acc,
              s.test_loss, s.test_acc, static_cast<long long>(s.samples),
              s.samples / std::max(s.train_seconds, 1e-9), s.seconds);
  for (const auto& [key, value] : s.extra) std::printf("  %s %g", key.c_str(), value);
  std::printf("\n");
  std::fflush(stdout);
}

void Trainer::write_log(const RunReport& report) const {
  std::ostringstream out;
  if (options_.log_jsonl) {
    for (const EpochStats& s : report.history) out << stats_to_json(s).dump() << "\n";
    write_text_atomically(fs::path(options_.run_dir) / "log.jsonl", out.str());
    return;
  }
  out << "epoch,lr,train_loss,train_acc,test_loss,test_acc,test_top5,samples,seconds,"
         "train_seconds";
  if (!report.history.empty()) {
    for (const auto& field : report.history.back().extra) out << "," << field.first;
  }
  out << "\n";
  for (const EpochStats& s : report.history) {
    out << s.epoch << "," << s.lr << "," << s.train_loss << "," << s.train_acc << ","
        << s.test_loss << "," << s.test_acc << "," << s.test_top5 << "," << s.samples << ","
        << s.seconds << "," << s.train_seconds;
    for (const auto& field : s.extra) out << "," << field.second;
    out << "\n";
  }
  write_text_atomically(fs::path(options_.run_dir) / "log.csv", out.str());
}

void Trainer::save_checkpoint(int64_t epoch, const RunReport& report) const {
  nn::NamedTensors tensors;
  for (auto& [name, t] : model_->state_dict()) tensors.emplace_back("model." + name, t);
  for (auto& entry : optimizer_->state().to_named_tensors("optimizer.")) {
    tensors.push_back(std::move(entry));
  }
  for (const auto& plugin : plugins_) {
    for (auto& [name, t] : plugin->state()) {
      tensors.emplace_back("plugin." + plugin->name() + "." + name, t);
    }
  }
  nlohmann::json history = nlohmann::json::array();
  for (const EpochStats& s : report.history) history.push_back(stats_to_json(s));
  std::map<std::string, std::string> metadata = {
      {"format", "retort-checkpoint-1"},
      {"epoch", std::to_string(epoch)},
      {"epochs", std::to_string(options_.epochs)},
      {"seed", std::to_string(options_.seed)},
      {"batch_size", std::to_string(options_.batch_size)},
      {"best_acc", nlohmann::json(report.best_acc).dump()},
      {"best_epoch", std::to_string(report.best_epoch)},
      {"sample_passes", std::to_string(report.sample_passes)},
      {"wall_seconds", nlohmann::json(report.wall_seconds).dump()},
      {"history", history.dump()},
  };
  save_safetensors((fs::path(options_.run_dir) / kCheckpointFile).string(), tensors, metadata);
}

int64_t Trainer::load_checkpoint(RunReport& report) {
  const fs::path path = fs::path(options_.run_dir) / kCheckpointFile;
  if (!fs::exists(path)) return 0;  // nothing to resume: start from epoch 1
  const SafetensorsFile file = load_safetensors(path.string());
  auto meta = [&](const std::string& key) { return file.metadata_at(key); };
  if (meta("format") != "retort-checkpoint-1") {
    throw std::runtime_error(path.string() + ": not a retort checkpoint");
  }
  auto check_same = [&](const std::string& key, const std::string& now, const char* flag) {
    if (meta(key) != now) {
      throw std::runtime_error(path.string() + ": written with " + flag + " " + meta(key) +
                               ", this run asks for " + now + " (resume needs the same value)");
    }
  };
  check_same("seed", std::to_string(options_.seed), "--seed");
  check_same("batch_size", std::to_string(options_.batch_size), "--batch-size");
  const int64_t epoch = std::stoll(meta("epoch"));
  if (epoch > options_.epochs) {
    throw std::runtime_error(path.string() + ": already at epoch " + std::to_string(epoch) +
                             ", beyond --epochs " + std::to_string(options_.epochs));
  }
  nn::NamedTensors model_state, optimizer_state;
  std::map<std::string, nn::NamedTensors> plugin_states;
  for (const auto& [name, t] : file.tensors) {
    if (name.rfind("model.", 0) == 0) {
      model_state.emplace_back(name.substr(6), t);
    } else if (name.rfind("optimizer.", 0) == 0) {
      optimizer_state.emplace_back(name, t);
    } else if (name.rfind("plugin.", 0) == 0) {
      const size_t dot = name.find('.', 7);
      plugin_states[name.substr(7, dot - 7)].emplace_back(name.substr(dot + 1), t);
    }
  }
  model_->load_state_dict(model_state);
  optimizer_->load_state(nn::SgdState::from_named_tensors(optimizer_state, "optimizer."));
  for (auto& plugin : plugins_) plugin->load_state(plugin_states[plugin->name()]);

  report.best_acc = nlohmann::json::parse(meta("best_acc")).get<double>();
  report.best_epoch = std::stoll(meta("best_epoch"));
  report.sample_passes = std::stoll(meta("sample_passes"));
  report.wall_seconds = nlohmann::json::parse(meta("wall_seconds")).get<double>();
  report.history.clear();
  for (const auto& row : nlohmann::json::parse(meta("history"))) {
    report.history.push_back(stats_from_json(row));
  }
  if (!report.history.empty()) report.last_acc = report.history.back().test_acc;
  if (!options_.quiet) {
    std::printf("[%s] resumed from %s after epoch %lld\n", options_.run_name.c_str(),
                path.string().c_str(), static_cast<long long>(epoch));
  }
  return epoch;
}

std::string format_reports(const std::vector<RunReport>& reports) {
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof(line), "%-22s %8s %15s %14s %10s\n", "run", "last %",
                "best % (epoch)", "sample passes", "wall time");
  out << line;
  for (const RunReport& r : reports) {
    char best[32];
    std::snprintf(best, sizeof(best), "%.2f (%lld)", r.best_acc,
                  static_cast<long long>(r.best_epoch));
    std::snprintf(line, sizeof(line), "%-22s %8.2f %15s %14lld %10s\n", r.run_name.c_str(),
                  r.last_acc, best, static_cast<long long>(r.sample_passes),
                  format_duration(r.wall_seconds).c_str());
    out << line;
  }
  return out.str();
}

}  // namespace retort::distill
