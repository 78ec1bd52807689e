// Learning-rate schedules: argument checks and the closed-form rates.
#include "nn/schedule.h"

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace retort::nn {
namespace {

double cosine(double lr_max, double lr_min, int64_t t, int64_t total) {
  if (t >= total) return lr_min;
  const double progress = static_cast<double>(t) / static_cast<double>(total);
  return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

void check_rates(double lr_max, double lr_min, const char* who) {
  if (!(lr_max >= 0.0) || !(lr_min >= 0.0) || lr_min > lr_max) {
    throw std::invalid_argument(std::string(who) + ": need 0 <= lr_min <= lr_max, got lr_max " +
                                std::to_string(lr_max) + ", lr_min " + std::to_string(lr_min));
  }
}

void check_iteration(int64_t iteration, const char* who) {
  if (iteration < 0) {
    throw std::invalid_argument(std::string(who) + ": iteration must be >= 0, got " +
                                std::to_string(iteration));
  }
}

}  // namespace

MultiStepLR::MultiStepLR(double lr0, std::vector<int64_t> milestones, double gamma)
    : lr0_(lr0), gamma_(gamma), milestones_(std::move(milestones)) {
  if (!(lr0 >= 0.0) || !(gamma > 0.0)) {
    throw std::invalid_argument("MultiStepLR: need lr0 >= 0 and gamma > 0");
  }
  for (size_t i = 1; i < milestones_.size(); ++i) {
    if (milestones_[i] <= milestones_[i - 1]) {
      throw std::invalid_argument("MultiStepLR: milestones must be strictly increasing");
    }
  }
}

double MultiStepLR::lr_at_epoch(int64_t epoch) const {
  if (epoch < 1) {
    throw std::invalid_argument("MultiStepLR: epochs are 1-based, got " + std::to_string(epoch));
  }
  int k = 0;
  for (int64_t m : milestones_) k += epoch > m ? 1 : 0;
  return lr0_ * std::pow(gamma_, k);
}

CosineLR::CosineLR(double lr_max, double lr_min, int64_t total_iterations)
    : lr_max_(lr_max), lr_min_(lr_min), total_(total_iterations) {
  check_rates(lr_max, lr_min, "CosineLR");
  if (total_iterations < 1) {
    throw std::invalid_argument("CosineLR: total_iterations must be >= 1, got " +
                                std::to_string(total_iterations));
  }
}

double CosineLR::lr_at_iteration(int64_t iteration) const {
  check_iteration(iteration, "CosineLR");
  return cosine(lr_max_, lr_min_, iteration, total_);
}

CosineRestartsLR::CosineRestartsLR(double lr_max, double lr_min,
                                   std::vector<int64_t> stage_iterations)
    : lr_max_(lr_max), lr_min_(lr_min), stages_(std::move(stage_iterations)) {
  check_rates(lr_max, lr_min, "CosineRestartsLR");
  if (stages_.empty()) throw std::invalid_argument("CosineRestartsLR: needs at least one stage");
  for (int64_t s : stages_) {
    if (s < 1) {
      throw std::invalid_argument("CosineRestartsLR: every stage needs >= 1 iteration, got " +
                                  std::to_string(s));
    }
  }
}

int64_t CosineRestartsLR::stage_of(int64_t iteration) const {
  check_iteration(iteration, "CosineRestartsLR");
  int64_t start = 0;
  for (size_t k = 0; k < stages_.size(); ++k) {
    if (iteration < start + stages_[k]) return static_cast<int64_t>(k);
    start += stages_[k];
  }
  return num_stages() - 1;
}

int64_t CosineRestartsLR::stage_start(int64_t stage) const {
  if (stage < 0 || stage >= num_stages()) {
    throw std::out_of_range("CosineRestartsLR: stage " + std::to_string(stage) + " of " +
                            std::to_string(num_stages()));
  }
  int64_t start = 0;
  for (int64_t k = 0; k < stage; ++k) start += stages_[static_cast<size_t>(k)];
  return start;
}

double CosineRestartsLR::lr_at_iteration(int64_t iteration) const {
  const int64_t k = stage_of(iteration);
  const int64_t t = iteration - stage_start(k);
  return cosine(lr_max_, lr_min_, t, stages_[static_cast<size_t>(k)]);
}

}  // namespace retort::nn
