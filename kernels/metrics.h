// Metric kernels: top-1 counting over rows of logits, accumulated where the logits live.
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// *correct += the number of rows i < n whose label ranks first in logits row i (logits (n, c)
// row-major, labels (n) int64). The rule is nn::count_correct's with k = 1: row i counts iff its
// target t = logits[i][labels[i]] is not NaN, no j has logits[i][j] > t, and no j < labels[i] has
// logits[i][j] == t (ties go to the lowest class index; a NaN elsewhere in the row never wins).
// `correct` is a single int64 in the same memory as the logits and is added to, never reset, so
// a caller can sum over batches and read it once. A label outside [0, c) makes the CPU twin throw
// std::invalid_argument naming the row (nothing is added then); the CUDA twin, which does not
// synchronise the host, does not count such a row. The CUDA twin takes device pointers and adds
// with integer atomics, so the result does not depend on the schedule.
template <typename T>
void count_top1(const CpuContext& ctx, int64_t n, int64_t c, const T* logits, const int64_t* labels,
                int64_t* correct);
void count_top1(const CudaContext& ctx, int64_t n, int64_t c, const float* logits,
                const int64_t* labels, int64_t* correct);

}  // namespace retort::kernels
