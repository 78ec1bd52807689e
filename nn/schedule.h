// Learning-rate schedules: multi-step (per epoch), cosine and cosine restarts (per iteration).
#pragma once

#include <cstdint>
#include <vector>

namespace retort::nn {

// Where training stands when the learning rate for the next step is asked for.
struct SchedulePosition {
  int64_t epoch = 1;      // 1-based epoch the step belongs to
  int64_t iteration = 0;  // 0-based count of optimiser steps taken before this one, over the run
};

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr(const SchedulePosition& position) const = 0;
  // True when the rate changes inside an epoch (set it before every step), false when it
  // changes only at epoch starts.
  virtual bool per_iteration() const = 0;
};

// RepDistiller's adjust_learning_rate: at the start of 1-based epoch e, lr = lr0 * gamma^k with
// k = the number of milestones strictly below e. With milestones 150, 180, 210: epochs 1-150 use
// lr0, 151-180 lr0 * 0.1, 181-210 lr0 * 0.01, 211+ lr0 * 0.001.
class MultiStepLR : public LrSchedule {
 public:
  MultiStepLR(double lr0, std::vector<int64_t> milestones, double gamma = 0.1);
  double lr_at_epoch(int64_t epoch) const;
  double lr(const SchedulePosition& p) const override { return lr_at_epoch(p.epoch); }
  bool per_iteration() const override { return false; }

 private:
  double lr0_, gamma_;
  std::vector<int64_t> milestones_;
};

// lr(t) = lr_min + (lr_max - lr_min) * (1 + cos(pi * t / T)) / 2 for iteration t in [0, T];
// t >= T gives lr_min.
class CosineLR : public LrSchedule {
 public:
  CosineLR(double lr_max, double lr_min, int64_t total_iterations);
  double lr_at_iteration(int64_t iteration) const;
  double lr(const SchedulePosition& p) const override { return lr_at_iteration(p.iteration); }
  bool per_iteration() const override { return true; }

 private:
  double lr_max_, lr_min_;
  int64_t total_;
};

// Cosine from lr_max to lr_min inside each stage, restarting at lr_max at the first iteration of
// every stage (SGDR-like; PWKD's cyclic rate). Stage k covers stage_iterations[k] iterations;
// past the last stage the rate stays at lr_min.
class CosineRestartsLR : public LrSchedule {
 public:
  CosineRestartsLR(double lr_max, double lr_min, std::vector<int64_t> stage_iterations);
  double lr_at_iteration(int64_t iteration) const;
  double lr(const SchedulePosition& p) const override { return lr_at_iteration(p.iteration); }
  bool per_iteration() const override { return true; }
  // The 0-based stage an iteration falls in (the last stage for iterations past the end).
  int64_t stage_of(int64_t iteration) const;
  // First iteration of stage k.
  int64_t stage_start(int64_t stage) const;
  int64_t num_stages() const { return static_cast<int64_t>(stages_.size()); }

 private:
  double lr_max_, lr_min_;
  std::vector<int64_t> stages_;
};

}  // namespace retort::nn
