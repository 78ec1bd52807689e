// The distillation subcommands of `retort`: distill (one method, any seeds) and demo (the comparison).
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>
#include <vector>

#include "distill/kcd.h"
#include "distill/kd.h"
#include "distill/pwkd.h"
#include "distill/report.h"
#include "nn/slimmable_model.h"
#include "tools/cli_common.h"

namespace retort::cli {

// A teacher read from a weights file written by `retort train` (its metadata names the model; a
// slimmable teacher also lists its widths).
struct LoadedTeacher {
  std::string model;
  std::shared_ptr<nn::Module> module;                // what KD runs (the widest sub-network)
  std::shared_ptr<nn::SlimmableModel> slimmable;     // set when the file holds a slimmable teacher
};
LoadedTeacher load_teacher(const std::string& path, const std::string& model_override,
                           int64_t in_channels, int64_t num_classes);

// The methods a student can be trained with.
enum class Method { ce, kd, kcd, pwkd, pwkd_kcd };
Method parse_method(const std::string& text);
std::string method_label(Method m);

// Flags of the distillation methods (RepDistiller's KD defaults, KCD's official-code defaults).
struct MethodFlags {
  distill::KdOptions kd;
  distill::KcdOptions kcd;
  double pwkd_lr_min = 0.0;
  void add_to(CLI::App& app);
  std::string describe(Method m, const distill::TrainerOptions& options) const;
};

// Trains one student with `method` (the teacher may be null for Method::ce) and returns its
// report. The student's initial weights come from options.seed.
distill::RunReport train_student(Method method, const std::string& student_model,
                                 const LoadedTeacher& teacher, const LoadedData& data,
                                 const MethodFlags& flags, distill::TrainerOptions options);

// Trains a slimmable teacher jointly over `widths` (optionally from a full-width model's weights).
distill::RunReport train_slimmable_teacher(const std::string& model,
                                           const std::vector<double>& widths, bool inplace,
                                           const std::string& init_from, const LoadedData& data,
                                           distill::TrainerOptions options);
// "width 0.25: 71.20%, width 0.5: ..." from a slimmable teacher's last epoch.
std::string width_accuracies(const distill::RunReport& report);

void add_distill_command(CLI::App& app);
void add_demo_command(CLI::App& app);

}  // namespace retort::cli
