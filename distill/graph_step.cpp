// GraphedStep: warm-up, capture on static inputs, replay, and the BN counters a replay skips.
#include "distill/graph_step.h"

#include <stdexcept>
#include <string>

namespace retort::distill {

GraphedStep::GraphedStep(std::shared_ptr<nn::Module> model, StepFn step, Device device,
                         int64_t warmup)
    : model_(std::move(model)), step_(std::move(step)), device_(device), warmup_(warmup) {
  if (!model_ || !step_) throw std::invalid_argument("GraphedStep: a model and a step are needed");
  if (warmup_ < 1) throw std::invalid_argument("GraphedStep: warm-up must be >= 1 eager step");
  for (const auto& [name, t] : model_->state_dict()) {
    const std::string suffix = "num_batches_tracked";
    if (name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      counter_tensors_.push_back(t);
    }
  }
}

std::vector<int64_t> GraphedStep::counters() const {
  std::vector<int64_t> out;
  out.reserve(counter_tensors_.size());
  for (const Tensor& t : counter_tensors_) out.push_back(*t.data<int64_t>());
  return out;
}

void GraphedStep::add_to_counters(const std::vector<int64_t>& delta, int sign) {
  for (size_t i = 0; i < counter_tensors_.size(); ++i) {
    *counter_tensors_[i].data<int64_t>() += sign * delta[i];
  }
}

void GraphedStep::recapture() { graph_.reset(); }

void GraphedStep::run(const data::Batch& batch) {
  const bool same_shape = static_.images.defined() &&
                          static_.images.shape() == batch.images.shape();
  if (eager_steps_ < warmup_ || (static_.images.defined() && !same_shape)) {
    step_(batch);
    ++eager_steps_;
    return;
  }
  if (!static_.images.defined()) {
    static_.images = batch.images.clone();
    static_.labels = batch.labels.clone();
    static_.indices = batch.indices.clone();
  } else {
    static_.images.copy_(batch.images);
    static_.labels.copy_(batch.labels);
    static_.indices.copy_(batch.indices);
  }
  if (!graph_) {
    auto graph = std::make_unique<CudaGraph>(device_);
    const std::vector<int64_t> before = counters();
    // The capture records the step without running it: the counters it moved move back, also
    // when the capture fails.
    auto moved_since_before = [&] {
      std::vector<int64_t> delta = counters();
      for (size_t i = 0; i < delta.size(); ++i) delta[i] -= before[i];
      return delta;
    };
    try {
      graph->capture([&] { step_(static_); });
    } catch (...) {
      add_to_counters(moved_since_before(), -1);
      throw;
    }
    counter_delta_ = moved_since_before();
    add_to_counters(counter_delta_, -1);
    graph_ = std::move(graph);
  }
  graph_->replay();
  add_to_counters(counter_delta_, +1);
  ++replays_;
}

}  // namespace retort::distill
