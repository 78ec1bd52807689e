// Per-shape cache of cuDNN convolution plans: descriptors plus the algorithm chosen by measurement.
#pragma once

#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "kernels/conv.h"
#include "kernels/cuda/handles.h"

namespace retort::kernels {

enum class ConvDirection : uint8_t { forward, backward_data, backward_filter };

// What selects a plan: the geometry, the direction and the numeric mode it was chosen under.
struct ConvAlgoKey {
  Conv2dShape shape;
  ConvDirection direction = ConvDirection::forward;
  bool allow_tf32 = true;
  bool deterministic = false;
  size_t workspace_limit = 0;  // 0 when the context has no workspace provider

  bool operator==(const ConvAlgoKey& other) const;
};

struct ConvAlgoKeyHash {
  size_t operator()(const ConvAlgoKey& key) const;
};

// Everything one direction of one convolution needs at run time. `algo` holds the value of the
// direction's enum (cudnnConvolutionFwdAlgo_t / BwdData / BwdFilter).
struct ConvPlan {
  TensorDescriptor x_desc;          // (batch, in_channels, in_h, in_w)
  FilterDescriptor w_desc;          // (out_channels, in_channels / groups, kernel_h, kernel_w)
  TensorDescriptor y_desc;          // (batch, out_channels, out_h, out_w)
  ConvolutionDescriptor conv_desc;  // padding, stride, groups and the chosen math type
  int algo = 0;
  cudnnMathType_t math_type = CUDNN_DEFAULT_MATH;
  size_t workspace_bytes = 0;
  // cuDNN's measured time for the chosen algorithm (ms), or -1 when chosen by heuristics.
  float measured_ms = -1.0f;
};

// Thread-safe map from key to plan. Plans are created once (by conv.cu, on the first call for a
// shape) and never move or disappear until clear(), which must not race with running convs.
class ConvAlgoCache {
 public:
  // The plan for `key`, or nullptr.
  const ConvPlan* find(const ConvAlgoKey& key) const;
  // Stores `plan` unless another thread got there first; returns the plan that is kept.
  const ConvPlan& insert(const ConvAlgoKey& key, std::unique_ptr<ConvPlan> plan);
  size_t size() const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::unordered_map<ConvAlgoKey, std::unique_ptr<ConvPlan>, ConvAlgoKeyHash> plans_;
};

}  // namespace retort::kernels
