// GraphedStep: a training step replayed as a CUDA graph, with the host-side bookkeeping a replay
// skips (BN batch counters) done by hand.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "datasets/data_loader.h"
#include "engine/graph.h"
#include "nn/module.h"

namespace retort::distill {

// Runs `step` (forward, loss, backward, optimiser update, on-device statistics: whatever the
// caller's step does) on batches of one shape. The first `warmup` calls run eagerly (cuDNN's
// algorithm search, the momentum buffers' creation, the caching allocator's growth); the next
// one captures the step on static copies of the batch and replays it; every later call copies
// its batch into the static tensors and replays. A batch of another shape (a partial last
// batch) runs eagerly. The step must follow CudaGraph's rules (engine/graph.h): no host reads,
// fixed scalars; a step that needs a new learning rate calls recapture() first.
//
// BatchNorm2d's num_batches_tracked counters of `model` live on the host and move once at
// capture; GraphedStep rolls that back and adds the captured step's increments after each
// replay, so the model's state matches an eager run's.
class GraphedStep {
 public:
  using StepFn = std::function<void(const data::Batch&)>;
  GraphedStep(std::shared_ptr<nn::Module> model, StepFn step, Device device, int64_t warmup = 3);

  void run(const data::Batch& batch);
  // Drops the graph: the next run of the captured shape captures again (after a learning-rate
  // change, or when the step function's host-side scalars changed).
  void recapture();
  bool captured() const { return graph_ && graph_->captured(); }
  int64_t replays() const { return replays_; }
  // The kernels one replay runs (CudaGraph::kernel_count), or -1 before the capture.
  int64_t kernels_per_replay() const { return graph_ ? graph_->kernel_count() : -1; }
  int64_t eager_steps() const { return eager_steps_; }

 private:
  std::vector<int64_t> counters() const;
  void add_to_counters(const std::vector<int64_t>& delta, int sign);

  std::shared_ptr<nn::Module> model_;
  StepFn step_;
  Device device_;
  int64_t warmup_;
  std::unique_ptr<CudaGraph> graph_;
  data::Batch static_;             // the captured step's inputs
  std::vector<Tensor> counter_tensors_;  // the model's num_batches_tracked, host i64 scalars
  std::vector<int64_t> counter_delta_;   // what one step adds to each
  int64_t replays_ = 0, eager_steps_ = 0;
};

}  // namespace retort::distill
