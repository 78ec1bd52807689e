// `retort distill` and `retort demo`: students trained with CE, KD, KCD, PWKD and PWKD+KCD.
#include "tools/distill_command.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "engine/safetensors.h"
#include "nn/models/registry.h"
#include "nn/models/slimmable_registry.h"
#include "nn/models/summary.h"

namespace retort::cli {
namespace {

namespace fs = std::filesystem;

std::vector<double> parse_widths(const std::string& text) {
  std::vector<double> widths;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    try {
      widths.push_back(std::stod(part));
    } catch (const std::exception&) {
      throw std::invalid_argument("slimmable widths: '" + part + "' is not a number");
    }
  }
  return widths;
}

std::string join_widths(const std::vector<double>& widths) {
  std::string out;
  for (double w : widths) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%g", w);
    out += (out.empty() ? "" : ",") + std::string(buffer);
  }
  return out;
}

std::string metadata_or(const SafetensorsFile& f, const std::string& key, const std::string& d) {
  auto it = f.metadata.find(key);
  return it == f.metadata.end() ? d : it->second;
}

}  // namespace

LoadedTeacher load_teacher(const std::string& path, const std::string& model_override,
                           int64_t in_channels, int64_t num_classes) {
  const SafetensorsFile file = load_safetensors(path);
  LoadedTeacher t;
  t.model = model_override.empty() ? metadata_or(file, "model", "") : model_override;
  if (t.model.empty()) {
    throw std::invalid_argument(path + " does not say which model it holds; pass --teacher-model");
  }
  const nn::ModelOptions options{in_channels, num_classes, 0};
  const std::string widths = metadata_or(file, "slimmable_widths", "");
  if (!widths.empty()) {
    t.slimmable = nn::create_slimmable_model(t.model, options, parse_widths(widths));
    t.slimmable->load_state_dict(file.tensors);
    t.slimmable->set_width(t.slimmable->num_widths() - 1);
    t.module = t.slimmable;
  } else {
    t.module = nn::create_model(t.model, options);
    t.module->load_state_dict(file.tensors);
  }
  t.module->eval();
  return t;
}

Method parse_method(const std::string& text) {
  if (text == "ce") return Method::ce;
  if (text == "kd") return Method::kd;
  if (text == "kcd") return Method::kcd;
  if (text == "pwkd") return Method::pwkd;
  if (text == "pwkd+kcd") return Method::pwkd_kcd;
  throw std::invalid_argument("--method must be ce, kd, kcd, pwkd or pwkd+kcd, got '" + text + "'");
}

std::string method_label(Method m) {
  switch (m) {
    case Method::ce: return "vanilla (CE)";
    case Method::kd: return "KD";
    case Method::kcd: return "KCD";
    case Method::pwkd: return "PWKD";
    case Method::pwkd_kcd: return "PWKD+KCD";
  }
  return "?";
}

void MethodFlags::add_to(CLI::App& app) {
  app.add_option("--kd-gamma", kd.gamma, "Weight of the label cross-entropy (RepDistiller -r)")
      ->check(non_negative())->capture_default_str();
  app.add_option("--kd-alpha", kd.alpha, "Weight of the KD divergence (RepDistiller -a)")
      ->check(non_negative())->capture_default_str();
  app.add_option("--kd-temperature", kd.temperature, "KD temperature T (loss scaled by T^2)")
      ->check(positive())->capture_default_str();
  app.add_option("--kcd-period", kcd.period,
                 "KCD: epochs between condensations (0: the official 40 of 240 scaled to the run, "
                 "round(epochs/6))")
      ->check(non_negative())->capture_default_str();
  app.add_option("--kcd-threshold", kcd.threshold,
                 "KCD: final minimum kept fraction of the training set")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--kcd-steps", kcd.n_steps, "KCD: condensations needed to reach the threshold")
      ->check(positive())->capture_default_str();
  app.add_option("--kcd-alpha", kcd.alpha_f, "KCD: exponent of the visit count in the score")
      ->capture_default_str();
  app.add_option("--kcd-f-ref", kcd.f_ref, "KCD: visit-count reference (0: the period)")
      ->check(non_negative())->capture_default_str();
  app.add_option("--kcd-eps-max", kcd.eps_max, "KCD: largest weight of a dropped image mixed into the tail")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_flag("--kcd-no-mixing", [this](int64_t) { kcd.mixing = false; },
               "KCD: drop samples without mixing them into the tail (the code's v2)");
  app.add_flag("--kcd-additive", kcd.additive,
               "KCD paper variant: x_tail + eps * x_dropped instead of the code's convex mix");
  app.add_flag("--kcd-nested", kcd.nested,
               "KCD paper variant: rank only the current kept set (dropped samples never return)");
  app.add_option("--kcd-warmup", kcd.warmup, "KCD: no condensation before this epoch")
      ->check(non_negative())->capture_default_str();
  app.add_option("--pwkd-lr-min", pwkd_lr_min,
                 "PWKD: rate at the end of each stage's cosine (restarts at --lr)")
      ->check(non_negative())->capture_default_str();
}

std::string MethodFlags::describe(Method m, const distill::TrainerOptions& o) const {
  char kd_text[128];
  std::snprintf(kd_text, sizeof(kd_text), "%g*CE + %g*KL(T=%g)*T^2", kd.gamma, kd.alpha,
                kd.temperature);
  const distill::KcdOptions k = distill::kcd_resolve(kcd, o.epochs);
  char kcd_text[160];
  std::snprintf(kcd_text, sizeof(kcd_text),
                "KCD condensing every %lld epochs to %g of the set (%s, eps_max %g)",
                static_cast<long long>(k.period), k.threshold,
                k.mixing ? (k.additive ? "additive summary" : "convex tail mixing") : "no mixing",
                k.eps_max);
  const std::string pwkd =
      "PWKD (retort's reconstruction): teacher sub-networks narrow to wide in equal stages, cosine "
      "rate restarting each stage";
  switch (m) {
    case Method::ce: return "student trained alone with cross-entropy";
    case Method::kd: return std::string("KD: ") + kd_text;
    case Method::kcd: return std::string("KD base, ") + kcd_text;
    case Method::pwkd: return pwkd + ", KD base: " + kd_text;
    case Method::pwkd_kcd: return pwkd + ", with " + kcd_text;
  }
  return {};
}

distill::RunReport train_student(Method method, const std::string& student_model,
                                 const LoadedTeacher& teacher, const LoadedData& data,
                                 const MethodFlags& flags, distill::TrainerOptions options) {
  auto student = nn::create_model(
      student_model, {data.train->channels(), data.train->num_classes(), options.seed});
  options.weights_metadata = {{"model", student_model},
                              {"in_channels", std::to_string(data.train->channels())},
                              {"num_classes", std::to_string(data.train->num_classes())},
                              {"method", method_label(method)}};
  const bool pwkd = method == Method::pwkd || method == Method::pwkd_kcd;
  const bool kcd = method == Method::kcd || method == Method::pwkd_kcd;
  if (method != Method::ce && !teacher.module) {
    throw std::invalid_argument(method_label(method) + " needs a teacher (--teacher)");
  }
  if (pwkd && !teacher.slimmable) {
    throw std::invalid_argument(
        "PWKD needs a slimmable teacher: train one with `retort train --slimmable` (add "
        "--init-from <full teacher weights> to start from a trained full-width teacher)");
  }
  std::shared_ptr<distill::Objective> objective;
  if (method == Method::ce) {
    objective = std::make_shared<distill::CrossEntropyObjective>();
  } else {
    objective = std::make_shared<distill::KdObjective>(teacher.module, flags.kd);
  }
  // A fresh copy of the training set: KCD mixes pixels, and every run must start from the same.
  auto train_set = std::make_shared<data::ImageSet>(*data.train);
  distill::Trainer trainer(student, train_set, data.test, objective, options);
  if (pwkd) {
    trainer.add_plugin(std::make_shared<distill::PwkdPlugin>(
        teacher.slimmable, distill::PwkdOptions{options.sgd.lr, flags.pwkd_lr_min}));
  } else if (teacher.slimmable) {
    teacher.slimmable->set_width(teacher.slimmable->num_widths() - 1);
  }
  if (kcd) trainer.add_plugin(std::make_shared<distill::KcdPlugin>(flags.kcd));
  distill::RunReport report = trainer.run();
  if (teacher.slimmable) teacher.slimmable->set_width(teacher.slimmable->num_widths() - 1);
  return report;
}

namespace {

// Runs `method` for each seed, in <run_dir>/seed<k> when there are several.
distill::MethodRuns run_seeds(Method method, const std::string& student_model,
                              const LoadedTeacher& teacher, const LoadedData& data,
                              const MethodFlags& flags, const distill::TrainerOptions& base,
                              int64_t seeds) {
  distill::MethodRuns runs;
  runs.method = method_label(method);
  runs.description = flags.describe(method, base);
  for (int64_t k = 0; k < seeds; ++k) {
    distill::TrainerOptions o = base;
    o.seed = base.seed + static_cast<uint64_t>(k);
    if (seeds > 1) {
      o.run_dir = (fs::path(base.run_dir) / ("seed" + std::to_string(o.seed))).string();
    }
    o.run_name = runs.method + (seeds > 1 ? " seed " + std::to_string(o.seed) : "");
    runs.runs.push_back(train_student(method, student_model, teacher, data, flags, o));
  }
  return runs;
}

struct DistillCommand {
  std::string teacher_path, teacher_model, student = "resnet8", method = "kd";
  int64_t seeds = 1;
  std::string report_path;
  DatasetFlags dataset;
  TrainFlags train;
  MethodFlags flags;

  void run() const {
    const Method m = parse_method(method);
    const LoadedData data = load_data(dataset);
    distill::TrainerOptions options = train.to_options(data, student + "_" + method);
    LoadedTeacher teacher;
    if (m != Method::ce) {
      if (teacher_path.empty()) throw std::invalid_argument("--teacher is required for --method " + method);
      teacher = load_teacher(teacher_path, teacher_model, data.train->channels(),
                             data.train->num_classes());
      teacher.module->to(options.device);
    }
    std::printf("distill %s -> %s with %s on %s, %lld epochs x %lld seed(s), device %s\n",
                teacher.model.empty() ? "(no teacher)" : teacher.model.c_str(), student.c_str(),
                method_label(m).c_str(), data.train->str().c_str(),
                static_cast<long long>(options.epochs), static_cast<long long>(seeds),
                options.device.str().c_str());
    if (m == Method::pwkd || m == Method::pwkd_kcd) {
      std::printf("PWKD is retort's reconstruction of the method (spec distillation.md 3.4): the "
                  "paper's settings are not public.\n");
    }
    const distill::MethodRuns runs = run_seeds(m, student, teacher, data, flags, options, seeds);
    std::printf("\n%s", distill::format_comparison({runs}).c_str());
    if (!report_path.empty()) {
      std::ofstream(report_path) << distill::render_html(
          "retort distill: " + method_label(m), {runs}, {runs.description});
      std::printf("report: %s\n", report_path.c_str());
    }
  }
};

}  // namespace

distill::RunReport train_slimmable_teacher(const std::string& model, const std::vector<double>& widths,
                                           bool inplace, const std::string& init_from,
                                           const LoadedData& data, distill::TrainerOptions options) {
  auto net = nn::create_slimmable_model(
      model, {data.train->channels(), data.train->num_classes(), options.seed}, widths);
  if (!init_from.empty()) {
    const SafetensorsFile full = load_safetensors(init_from);
    const std::string stored = metadata_or(full, "model", model);
    if (stored != model) {
      throw std::invalid_argument("--init-from " + init_from + " holds a " + stored +
                                  ", not a " + model);
    }
    net->load_full_teacher(full.tensors);
  }
  options.weights_metadata = {{"model", model},
                              {"in_channels", std::to_string(data.train->channels())},
                              {"num_classes", std::to_string(data.train->num_classes())},
                              {"slimmable_widths", join_widths(widths)}};
  distill::Trainer trainer(net, data.train, data.test,
                           std::make_shared<distill::SlimmableJointObjective>(net, inplace),
                           options);
  trainer.add_plugin(std::make_shared<distill::SlimmableEvalPlugin>(net));
  return trainer.run();
}

std::string width_accuracies(const distill::RunReport& report) {
  std::string out;
  if (report.history.empty()) return out;
  for (const auto& [key, value] : report.history.back().extra) {
    if (key.rfind("acc_w", 0) != 0) continue;
    char buffer[64];
    std::snprintf(buffer, sizeof(buffer), "%swidth %s: %.2f%%", out.empty() ? "" : ", ",
                  key.substr(5).c_str(), value);
    out += buffer;
  }
  return out;
}

namespace {

struct DemoCommand {
  std::string out = "runs/demo";
  std::string teacher_model = "resnet14", student = "resnet8";
  std::string widths = "0.25,0.5,0.75,1";
  std::string methods = "ce,kd,kcd,pwkd,pwkd+kcd";
  int64_t teacher_epochs = 6;
  int64_t seeds = 1;
  bool retrain_teacher = false;
  DatasetFlags dataset;
  TrainFlags train;
  MethodFlags flags;

  void run() {
    const auto start = std::chrono::steady_clock::now();
    const LoadedData data = load_data(dataset);
    const std::vector<double> width_list = parse_widths(widths);
    std::vector<Method> method_list;
    {
      std::stringstream in(methods);
      for (std::string part; std::getline(in, part, ',');) method_list.push_back(parse_method(part));
    }
    distill::TrainerOptions base = train.to_options(data, "demo");
    std::printf(
        "retort demo: teacher %s (slimmable, widths %s) -> student %s on %s\n"
        "  test set %s\n  %lld teacher epochs, %lld student epochs, %lld seed(s), device %s, "
        "output in %s\n\n",
        teacher_model.c_str(), widths.c_str(), student.c_str(), data.train->str().c_str(),
        data.test->str().c_str(), static_cast<long long>(teacher_epochs),
        static_cast<long long>(base.epochs), static_cast<long long>(seeds),
        base.device.str().c_str(), out.c_str());

    // The teacher: one slimmable network serves every method (its widest sub-network is the KD
    // and KCD teacher; PWKD walks its widths). Reused when a matching one is already there.
    const fs::path teacher_dir = fs::path(out) / "teacher";
    const fs::path teacher_file = teacher_dir / "model.safetensors";
    std::string teacher_note;
    bool reuse = false;
    if (!retrain_teacher && fs::exists(teacher_file)) {
      const SafetensorsFile f = load_safetensors(teacher_file.string());
      reuse = metadata_or(f, "model", "") == teacher_model &&
              metadata_or(f, "slimmable_widths", "") == join_widths(width_list) &&
              metadata_or(f, "data", "") == data.train->str();
      std::printf(reuse ? "reusing the teacher in %s\n" : "retraining: %s was made with other settings\n",
                  teacher_file.string().c_str());
    }
    if (!reuse) {
      distill::TrainerOptions t = base;
      t.run_dir = teacher_dir.string();
      t.run_name = "teacher " + teacher_model;
      t.epochs = teacher_epochs;
      t.milestones.clear();
      t.resume = false;
      std::printf("training the slimmable teacher (all widths every step)\n");
      distill::RunReport r = train_slimmable_teacher_with_data_note(t, data, width_list);
      teacher_note = "Teacher " + teacher_model + " trained jointly over widths " + widths + " for " +
                     std::to_string(teacher_epochs) + " epochs; test accuracy by width: " +
                     width_accuracies(r) + ".";
    } else {
      teacher_note = "Teacher " + teacher_model + " reused from " + teacher_file.string() + ".";
    }
    LoadedTeacher teacher = load_teacher(teacher_file.string(), "", data.train->channels(),
                                         data.train->num_classes());
    teacher.module->to(base.device);
    std::printf("%s\n\n", teacher_note.c_str());

    std::vector<distill::MethodRuns> results;
    for (Method m : method_list) {
      distill::TrainerOptions o = base;
      const char* slugs[] = {"ce", "kd", "kcd", "pwkd", "pwkd_kcd"};
      o.run_dir = (fs::path(out) / slugs[static_cast<int>(m)]).string();
      o.resume = false;
      results.push_back(run_seeds(m, student, teacher, data, flags, o, seeds));
      std::printf("\n");
    }
    const double minutes =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60.0;
    const std::string table = distill::format_comparison(results);
    std::printf("%s\n", table.c_str());
    char timing[160];
    std::snprintf(timing, sizeof(timing), "Whole demo: %.1f minutes on %s.", minutes,
                  base.device.str().c_str());
    std::vector<std::string> notes = {
        "Fashion-MNIST: " + data.train->str() + "; test: " + data.test->str() + ".",
        teacher_note,
        "Students: " + student + ", " + std::to_string(base.epochs) + " epochs each, " +
            std::to_string(seeds) + " seed(s); last-epoch and best test accuracy.",
        "PWKD is retort's reconstruction (spec distillation.md 3.4); the paper's settings are "
        "not public.",
        timing};
    const fs::path html = fs::path(out) / "report.html";
    std::ofstream(html) << distill::render_html("retort demo: distillation on Fashion-MNIST",
                                                results, notes);
    std::ofstream(fs::path(out) / "summary.txt") << table;
    std::printf("%s\nreport: %s (open it in a browser); logs: %s/*/log.csv\n", timing,
                html.string().c_str(), out.c_str());
  }

  distill::RunReport train_slimmable_teacher_with_data_note(distill::TrainerOptions t,
                                                            const LoadedData& data,
                                                            const std::vector<double>& w) {
    distill::RunReport r = train_slimmable_teacher(teacher_model, w, false, "", data, t);
    // Record which data the teacher saw, so a later demo reuses it only for the same data.
    const fs::path file = fs::path(t.run_dir) / "model.safetensors";
    SafetensorsFile f = load_safetensors(file.string());
    f.metadata["data"] = data.train->str();
    save_safetensors(file.string(), f.tensors, f.metadata);
    return r;
  }
};

}  // namespace

void add_demo_command(CLI::App& parent) {
  auto cmd = std::make_shared<DemoCommand>();
  // Sized for about ten minutes on a 2-core CPU (measured: 6000/2000 images, teacher 6 epochs,
  // students 8 epochs); the teacher must clearly beat a student trained alone for KD to matter.
  cmd->dataset.train_subset = 6000;
  cmd->dataset.test_subset = 2000;
  cmd->train.epochs = 8;
  CLI::App* app = parent.add_subcommand(
      "demo",
      "The main job: on Fashion-MNIST, train a slimmable teacher (or reuse one), then students "
      "with CE alone, KD, KCD, PWKD and PWKD+KCD, and compare them (table + HTML report)");
  app->add_option("--out", cmd->out, "Output directory (teacher, one folder per method, report.html)")
      ->capture_default_str();
  app->add_option("--teacher-model", cmd->teacher_model, "Teacher architecture")->capture_default_str();
  app->add_option("--student", cmd->student, "Student architecture")->capture_default_str();
  app->add_option("--widths", cmd->widths, "Teacher widths for PWKD, narrow to wide, ending at 1")
      ->capture_default_str();
  app->add_option("--methods", cmd->methods, "Comma-separated methods to compare")
      ->capture_default_str();
  app->add_option("--teacher-epochs", cmd->teacher_epochs, "Epochs of teacher training")
      ->check(positive())->capture_default_str();
  app->add_option("--seeds", cmd->seeds, "Seeds per method (mean and std when > 1)")
      ->check(positive())->capture_default_str();
  app->add_flag("--retrain-teacher", cmd->retrain_teacher, "Train the teacher even if one exists");
  cmd->dataset.add_to(*app);
  cmd->train.add_to(*app);
  cmd->flags.add_to(*app);
  app->callback([cmd] { cmd->run(); });
}

void add_distill_command(CLI::App& parent) {
  auto cmd = std::make_shared<DistillCommand>();
  CLI::App* app = parent.add_subcommand(
      "distill", "Train a student from a teacher with KD, KCD, PWKD or PWKD+KCD (or ce: alone)");
  app->add_option("--teacher", cmd->teacher_path,
                  "Teacher weights written by `retort train` (model.safetensors / best.safetensors; "
                  "PWKD needs one trained with --slimmable)");
  app->add_option("--teacher-model", cmd->teacher_model,
                  "Teacher architecture (default: the name stored in the weights file)");
  app->add_option("--student", cmd->student, "Student architecture")->capture_default_str();
  app->add_option("--method", cmd->method,
                  "kd (Hinton KD as RepDistiller), kcd (KD + Knowledge Condensation), pwkd "
                  "(Partial-to-Whole KD, retort's reconstruction), pwkd+kcd, or ce (no teacher)")
      ->check(CLI::IsMember({"ce", "kd", "kcd", "pwkd", "pwkd+kcd"}))
      ->capture_default_str();
  app->add_option("--seeds", cmd->seeds,
                  "Run this many seeds (--seed, --seed+1, ...) and report mean and std")
      ->check(positive())->capture_default_str();
  app->add_option("--report", cmd->report_path, "Also write an HTML report to this file");
  cmd->dataset.add_to(*app);
  cmd->train.add_to(*app);
  cmd->flags.add_to(*app);
  app->callback([cmd] { cmd->run(); });
}

}  // namespace retort::cli
