// The training-step benchmark of spec/benchmarks.md, retort's side: images/s of the KD step
// (resnet32x4 teacher -> resnet8x4 student) and of plain training steps (resnet56, wrn_40_2, any
// registry model) on synthetic device-resident CIFAR-100 batches. bench/torch_reference.py is the
// PyTorch side; both write the same JSONL rows and bench/compare_gpu.py puts them side by side.
//
//   step_bench --device cuda --workloads kd,resnet56 --batches 64,128 --precision tf32 --json r.jsonl
//   step_bench --export-step DIR --workloads kd --batches 64   # files for torch_reference --check-step
//
// Not a Google Benchmark binary: the spec's protocol (warm-up, trials of >= min-seconds, median
// with min-max, one JSON row per workload and batch) is written out here so that both engines
// follow it line by line. Timing waits for the device at both ends of each trial
// (retort::synchronize), so host time over >= 2 s of steps measures device throughput.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "distill/graph_step.h"
#include "distill/kd.h"
#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/safetensors.h"
#include "nn/models/registry.h"
#include "nn/models/summary.h"
#include "nn/optim.h"

#if RETORT_WITH_CUDA
#include "engine/cuda/runtime.h"
#endif

namespace {

using namespace retort;
using Clock = std::chrono::steady_clock;

constexpr int64_t kClasses = 100;
constexpr int64_t kPool = 8;  // distinct batches, rotated (spec: at least 8)

struct Settings {
  std::string device = "cuda";
  std::vector<std::string> workloads = {"kd", "resnet56"};
  std::vector<int64_t> batches = {64, 128};
  std::string precision = "tf32";
  int64_t warmup = 50;
  int64_t steps = 200;
  double min_seconds = 2.0;
  int64_t trials = 5;
  uint64_t seed = 0;
  bool fold_teacher_bn = true;
  std::vector<std::string> variants = {"eager", "graph"};
  std::string json;
  std::string export_dir;
};

// One workload at one batch size: the models, the optimiser, a pool of batches, and the step.
class Workload {
 public:
  Workload(const std::string& name, int64_t batch, const Settings& settings, Device device)
      : name_(name), batch_(batch), device_(device) {
    const bool kd = name == "kd";
    nn::ModelOptions options;
    options.num_classes = kClasses;
    options.seed = settings.seed;
    const std::string student_name = kd ? "resnet8x4" : name;
    model_ = nn::create_model(student_name, options);
    model_->to(device);
    model_->train();
    macs_ = nn::model_summary(student_name, options, 32, 32).total_macs;
    if (kd) {
      options.seed = settings.seed + 1;
      teacher_ = nn::create_model("resnet32x4", options);
      teacher_->to(device);
      teacher_macs_ = nn::model_summary("resnet32x4", options, 32, 32).total_macs;
      distill::KdOptions kd_options;  // RepDistiller's 0.1 CE + 0.9 KL at T = 4
      kd_options.fold_teacher_bn = settings.fold_teacher_bn;
      objective_ = std::make_unique<distill::KdObjective>(teacher_, kd_options);
    } else {
      objective_ = std::make_unique<distill::CrossEntropyObjective>();
    }
    nn::SgdOptions sgd;
    sgd.lr = 0.05;
    sgd.momentum = 0.9;
    sgd.weight_decay = 5e-4;
    optimizer_ = std::make_unique<nn::SGD>(model_->named_parameters(), sgd);

    Generator gen(settings.seed + 7);
    for (int64_t i = 0; i < kPool; ++i) {
      data::Batch b;
      b.images = Tensor::randn({batch, 3, 32, 32}, gen, 0.0, 1.0, DType::f32, device);
      std::vector<int64_t> labels(static_cast<size_t>(batch));
      for (int64_t k = 0; k < batch; ++k) labels[k] = (k * 37 + i * 11) % kClasses;
      b.labels = Tensor::from_vector(labels, {batch}, device);
      b.indices = Tensor::from_vector(std::vector<int64_t>(labels.size(), 0), {batch}, device);
      pool_.push_back(std::move(b));
    }
  }

  // One training step on `b`. The loss tensor is kept (not read back) for the divergence check.
  void step_on(const data::Batch& b) {
    Tensor logits = (*model_)(b.images);
    last_loss_ = objective_->loss(logits, b);
    optimizer_->zero_grad();
    last_loss_.backward();
    optimizer_->step();
  }
  // One step on pool batch `i % kPool`, eagerly or through the CUDA graph.
  void step(int64_t i) {
    const data::Batch& b = pool_[static_cast<size_t>(i % kPool)];
    if (graphed_) {
      graphed_->run(b);
    } else {
      step_on(b);
    }
  }
  void use_graph() {
    graphed_ = std::make_unique<distill::GraphedStep>(
        model_, [this](const data::Batch& b) { step_on(b); }, device_);
  }
  const Tensor& last_loss() const { return last_loss_; }
  std::string variant() const { return graphed_ ? "graph" : "eager"; }
  // The kernels of one captured step, or -1 (eager, or not captured yet).
  int64_t kernels_per_step() const { return graphed_ ? graphed_->kernels_per_replay() : -1; }

  double flops_per_image() const { return 6.0 * macs_ + 2.0 * teacher_macs_; }
  int64_t batch() const { return batch_; }
  const std::string& name() const { return name_; }
  nn::Module& model() { return *model_; }
  nn::Module* teacher() { return teacher_.get(); }
  const data::Batch& batch_at(int64_t i) const { return pool_[static_cast<size_t>(i % kPool)]; }
  const nn::SgdOptions& sgd() const { return optimizer_->options(); }

 private:
  std::string name_;
  int64_t batch_;
  Device device_;
  std::shared_ptr<nn::Module> model_, teacher_;
  std::unique_ptr<distill::Objective> objective_;
  std::unique_ptr<nn::SGD> optimizer_;
  std::vector<data::Batch> pool_;
  std::unique_ptr<distill::GraphedStep> graphed_;
  Tensor last_loss_;
  int64_t macs_ = 0, teacher_macs_ = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string device_name(const Device& device) {
#if RETORT_WITH_CUDA
  if (device.is_cuda()) return cuda::device_name(device.index);
#endif
  (void)device;
  return "cpu";
}

double peak_mem_mib(const Device& device) {
#if RETORT_WITH_CUDA
  if (device.is_cuda()) {
    return static_cast<double>(cuda::allocator_stats(device.index).peak_bytes_in_use) / (1 << 20);
  }
#endif
  (void)device;
  return -1.0;
}

void reset_peak_mem(const Device& device) {
#if RETORT_WITH_CUDA
  if (device.is_cuda()) cuda::reset_peak_stats(device.index);
#endif
  (void)device;
}

// One variant's timing state inside measure().
struct Run {
  Workload* w;
  double setup_s = 0;
  int64_t next = 0, per_trial = 0;
  std::vector<double> rates, ms;
  double peak_mib = -1;
  uint64_t dispatches = 0;  // engine ops dispatched during the timed steps
  int64_t timed_steps = 0;
};

// Per variant: the first steps (algorithm search, allocator growth, graph capture) as setup,
// then the warm-up; then `trials` timed runs of at least max(steps, min_seconds) each, the
// variants interleaved trial by trial. One JSON row per variant.
std::vector<nlohmann::json> measure(std::vector<Workload*> variants, const Settings& s,
                                    const Device& device) {
  std::vector<Run> runs;
  for (Workload* w : variants) {
    Run r;
    r.w = w;
    reset_peak_mem(device);
    const auto setup_start = Clock::now();
    for (; r.next < 5; ++r.next) w->step(r.next);  // 3 eager warm-up steps, capture, 1 replay
    synchronize(device);
    r.setup_s = seconds_since(setup_start);
    const auto warm_start = Clock::now();
    for (int64_t k = 0; k < s.warmup; ++k) w->step(r.next++);
    synchronize(device);
    const double warm_s = seconds_since(warm_start);
    r.peak_mib = peak_mem_mib(device);
    // Steps per trial: at least `steps`, and enough for min_seconds at the warm-up's pace.
    r.per_trial = s.steps;
    if (s.warmup > 0 && warm_s > 0) {
      r.per_trial = std::max<int64_t>(
          r.per_trial, static_cast<int64_t>(s.min_seconds / (warm_s / s.warmup)) + 1);
    }
    runs.push_back(std::move(r));
  }
  for (int64_t t = 0; t < s.trials; ++t) {
    for (Run& r : runs) {
      synchronize(device);
      const uint64_t dispatched_before = dispatch_count();
      const auto start = Clock::now();
      for (int64_t k = 0; k < r.per_trial; ++k) r.w->step(r.next++);
      synchronize(device);
      const double elapsed = seconds_since(start);
      r.dispatches += dispatch_count() - dispatched_before;
      r.timed_steps += r.per_trial;
      if (!std::isfinite(r.w->last_loss().item())) {
        throw std::runtime_error(r.w->name() + " (" + r.w->variant() + "): the loss diverged");
      }
      r.rates.push_back(static_cast<double>(r.per_trial * r.w->batch()) / elapsed);
      r.ms.push_back(1e3 * elapsed / static_cast<double>(r.per_trial));
    }
  }
  // The eager step runs the kernels the graph variant captured (when it ran): one count for both.
  int64_t kernels = -1;
  for (const Run& r : runs) kernels = std::max(kernels, r.w->kernels_per_step());
  std::vector<nlohmann::json> rows;
  for (const Run& r : runs) {
    const double rate = median(r.rates);
    nlohmann::json row;
    row["engine"] = "retort";
    row["variant"] = r.w->variant();
    row["workload"] = r.w->name();
    row["batch"] = r.w->batch();
    row["precision"] = s.precision;
    row["device"] = device_name(device);
    row["status"] = "ok";
    row["reason"] = "";
    row["images_per_s"] = rate;
    row["images_per_s_min"] = *std::min_element(r.rates.begin(), r.rates.end());
    row["images_per_s_max"] = *std::max_element(r.rates.begin(), r.rates.end());
    row["ms_per_step"] = median(r.ms);
    row["tflops"] = rate * r.w->flops_per_image() / 1e12;
    row["peak_mem_mib"] = r.peak_mib >= 0 ? nlohmann::json(r.peak_mib) : nlohmann::json(nullptr);
    row["kernels_per_step"] = kernels >= 0 ? nlohmann::json(kernels) : nlohmann::json(nullptr);
    // Host-side op dispatches per step: a graph replay dispatches none.
    row["ops_per_step"] =
        static_cast<double>(r.dispatches) / static_cast<double>(std::max<int64_t>(r.timed_steps, 1));
    row["setup_s"] = r.setup_s;
    row["trials"] = s.trials;
    rows.push_back(std::move(row));
  }
  return rows;
}

// Writes DIR/<workload>_b<batch>/ for `torch_reference.py --check-step`: initial weights, the
// batch, the loss of one step and the state after it.
void export_step(Workload& w, const Settings& s, const std::string& root) {
  const std::string dir = root + "/" + w.name() + "_b" + std::to_string(w.batch());
  std::filesystem::create_directories(dir);
  save_safetensors(dir + "/weights.safetensors", w.model().state_dict());
  if (w.teacher() != nullptr) {
    save_safetensors(dir + "/teacher.safetensors", w.teacher()->state_dict());
  }
  const data::Batch& b = w.batch_at(0);
  save_safetensors(dir + "/batch.safetensors", {{"images", b.images}, {"labels", b.labels}});
  w.step_on(w.batch_at(0));
  const double loss = w.last_loss().item();
  save_safetensors(dir + "/after.safetensors", w.model().state_dict());
  nlohmann::json expected;
  expected["workload"] = w.name();
  expected["loss"] = loss;
  expected["lr"] = w.sgd().lr;
  expected["momentum"] = w.sgd().momentum;
  expected["weight_decay"] = w.sgd().weight_decay;
  expected["precision"] = s.precision;
  if (w.name() == "kd") {
    expected["temperature"] = 4.0;
    expected["ce_weight"] = 0.1;
    expected["kl_weight"] = 0.9;
  }
  std::ofstream(dir + "/expected.json") << expected.dump(2) << "\n";
  std::printf("wrote %s (loss %.6f)\n", dir.c_str(), loss);
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  std::string workloads = "kd,resnet56", batches = "64,128", variants = "eager,graph";
  CLI::App app{"retort's training-step benchmark (spec/benchmarks.md); pair it with "
               "bench/torch_reference.py and bench/compare_gpu.py"};
  app.add_option("--device", s.device, "cuda, cuda:N or cpu")->capture_default_str();
  app.add_option("--workloads", workloads,
                 "comma-separated: kd (resnet32x4 -> resnet8x4) or any registry model name")
      ->capture_default_str();
  app.add_option("--batches", batches, "comma-separated batch sizes")->capture_default_str();
  app.add_option("--variants", variants,
                 "comma-separated: eager (op by op) and/or graph (the step replayed as a CUDA "
                 "graph; CUDA only)")
      ->capture_default_str();
  app.add_option("--precision", s.precision, "tf32 (TF32 convs and GEMMs) or fp32 (strict)")
      ->check(CLI::IsMember({"tf32", "fp32"}))
      ->capture_default_str();
  app.add_option("--warmup", s.warmup, "steps after the first three, untimed")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--steps", s.steps, "at least this many timed steps per trial")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--min-seconds", s.min_seconds, "and at least this long per trial")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--trials", s.trials, "timed trials; the median is reported")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", s.seed, "weights and synthetic data")->capture_default_str();
  app.add_flag("!--no-fold-teacher-bn", s.fold_teacher_bn,
               "run the KD teacher's BN as separate ops instead of folded into its convs");
  app.add_option("--json", s.json, "append one JSON row per workload and batch to this file");
  app.add_option("--export-step", s.export_dir,
                 "instead of timing, write one step's inputs and results per workload and batch "
                 "under this directory for torch_reference.py --check-step");
  CLI11_PARSE(app, argc, argv);

  try {
    s.workloads = split(workloads);
    s.variants = split(variants);
    for (const std::string& v : s.variants) {
      if (v != "eager" && v != "graph") {
        throw std::invalid_argument("--variants: unknown variant '" + v + "' (eager, graph)");
      }
    }
    s.batches.clear();
    for (const std::string& b : split(batches)) {
      const int64_t value = std::stoll(b);
      if (value < 1) throw std::invalid_argument("--batches: batch sizes must be >= 1");
      s.batches.push_back(value);
    }
    const Device device = Device::parse(s.device);
    require_available(device);
    set_cuda_math({.allow_tf32 = s.precision == "tf32", .deterministic = false});

    std::ofstream json;
    if (!s.json.empty()) {
      json.open(s.json, std::ios::app);
      if (!json) throw std::runtime_error("cannot open " + s.json + " for appending");
    }
    std::printf("%-10s %6s %9s %-6s %12s %16s %9s %8s %10s %9s %13s\n", "workload", "batch",
                "precision", "mode", "images/s", "(min - max)", "ms/step", "TFLOP/s", "peak MiB",
                "ops/step", "kernels/step");
    for (const std::string& name : s.workloads) {
      for (int64_t batch : s.batches) {
        if (!s.export_dir.empty()) {
          Workload w(name, batch, s, device);
          export_step(w, s, s.export_dir);
          continue;
        }
        std::vector<std::unique_ptr<Workload>> owned;
        std::vector<Workload*> runs;
        for (const std::string& v : s.variants) {
          if (v == "graph" && !device.is_cuda()) {
            std::printf("%-10s %6lld %9s  graph: skipped, CUDA graphs need --device cuda\n",
                        name.c_str(), static_cast<long long>(batch), s.precision.c_str());
            continue;
          }
          owned.push_back(std::make_unique<Workload>(name, batch, s, device));
          if (v == "graph") owned.back()->use_graph();
          runs.push_back(owned.back().get());
        }
        if (runs.empty()) continue;
        for (const nlohmann::json& row : measure(runs, s, device)) {
          const std::string kernels_text =
              row["kernels_per_step"].is_null()
                  ? "-"
                  : std::to_string(row["kernels_per_step"].get<int64_t>());
          std::printf("%-10s %6lld %9s %-6s %12.0f %7.0f - %-7.0f %9.3f %8.2f %10.0f %9.0f %13s\n",
                      name.c_str(), static_cast<long long>(batch), s.precision.c_str(),
                      row["variant"].get<std::string>().c_str(), row["images_per_s"].get<double>(),
                      row["images_per_s_min"].get<double>(), row["images_per_s_max"].get<double>(),
                      row["ms_per_step"].get<double>(), row["tflops"].get<double>(),
                      row["peak_mem_mib"].is_null() ? 0.0 : row["peak_mem_mib"].get<double>(),
                      row["ops_per_step"].get<double>(), kernels_text.c_str());
          std::fflush(stdout);
          if (json.is_open()) json << row.dump() << "\n" << std::flush;
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "step_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
