// Reductions: sums over any set of dimensions, deterministic (fixed summation order, no atomics).
#pragma once

#include <cstdint>

#include "kernels/context.h"

namespace retort::kernels {

// Input of rank ndim with `shape` (contiguous); reduce[d] marks the summed dimensions. The output
// is contiguous over the kept dimensions in their original order (a keepdim view of it has size 1
// in every reduced dimension).
struct ReduceShape {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  bool reduce[kMaxDims] = {};
};

// y = scale * sum over the reduced dimensions of x. Each output element sums its inputs in
// row-major order, so results are bit-reproducible run to run.
template <typename T>
void reduce_sum(const CpuContext& ctx, const ReduceShape& shape, T scale, const T* x, T* y);
void reduce_sum(const CudaContext& ctx, const ReduceShape& shape, float scale, const float* x,
                float* y);

}  // namespace retort::kernels
