// Classification metrics: top-k correct counts from logits and labels.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace retort::nn {

// Number of rows of logits (N, C) whose label (N, i64) is among the k largest logits. Ties are
// broken by class index (a lower index ranks first), like a stable descending sort; a NaN logit
// for the label never counts as correct. k is clamped to C. Any device (copied to the host).
int64_t count_correct(const Tensor& logits, const Tensor& labels, int64_t k = 1);

}  // namespace retort::nn
