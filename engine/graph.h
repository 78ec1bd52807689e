// CudaGraph: records the work one piece of host code queues on a device and replays it with
// one launch, so a training step's hundreds of small kernels cost one launch instead.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "engine/device.h"

namespace retort {

// Captures the kernels and device copies that `fn` queues on `device`'s stream (nothing runs
// during the capture) and replays them. What a captured function must respect:
//   - no copy between host and device inside it (item(), to(cpu), uploads): refused with an
//     error; inputs go into tensors that exist before the capture, copied in before each replay;
//   - every conv shape in it ran eagerly before (cuDNN's algorithm search cannot be captured);
//   - host-side effects happen once, at capture: scalars baked into kernels (a learning rate),
//     counters kept on the host (BN's num_batches_tracked, an optimiser's step count) do not
//     move on replay; the caller accounts for them (distill/graph_step.h does);
//   - tensors created inside live in the graph's private memory pool and are overwritten by each
//     replay: read them between replays, clone what must outlive the next one.
// Memory allocated during the capture stays reserved for the graph until it is destroyed.
class CudaGraph {
 public:
  explicit CudaGraph(Device device);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Records fn. Throws (keeping nothing) when the device is not a CUDA device, CUDA was not
  // built, fn throws, or the capture fails; the error names the cause.
  void capture(const std::function<void()>& fn);
  // Queues one replay on the device's stream (returns without waiting). Requires a capture.
  void replay();
  bool captured() const;
  // Kernel nodes of the captured graph (the kernels one replay runs), or -1 before a capture.
  int64_t kernel_count() const;
  const Device& device() const { return device_; }

 private:
  struct Impl;
  Device device_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace retort
