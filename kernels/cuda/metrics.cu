// CUDA twin of the metric kernels (kernels/metrics.h): top-1 counting with integer atomics.
#include "kernels/metrics.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::kWarpSize;
using cuda_detail::RowGroup;

static_assert(sizeof(int64_t) == sizeof(unsigned long long),
              "count_top1 adds to an int64 through the 64-bit unsigned atomicAdd");

// Each row goes to a warp (short rows) or a block (long rows): the group scans the row for a
// class that beats the label (greater, or equal with a lower index) and votes. The group's first
// thread counts its correct rows; the block sums those counts in a fixed order and adds them to
// *correct with one integer atomic, so the total is exact whatever the order of the blocks.
// Label and NaN checks read values that every thread of a group shares, so a whole group skips a
// row together and every vote is reached by all of its threads.
template <bool kBlockPerRow>
__global__ void count_top1_kernel(int64_t rows, int64_t cols, const float* __restrict__ logits,
                                  const int64_t* __restrict__ labels, int64_t* correct) {
  using Group = RowGroup<kBlockPerRow>;
  __shared__ unsigned long long scratch[kWarpSize];
  unsigned long long count = 0;
  for (int64_t row = Group::first_row(); row < rows; row += Group::row_stride()) {
    const int64_t label = labels[row];
    if (label < 0 || label >= cols) continue;  // not counted (the CPU twin throws instead)
    const float* in = logits + row * cols;     // (cols)
    const float target = in[label];
    if (isnan(target)) continue;
    bool beaten = false;
    for (int64_t j = Group::rank(); j < cols && !beaten; j += Group::size()) {
      const float v = in[j];
      beaten = v > target || (j < label && v == target);
    }
    bool any_beaten;
    if constexpr (kBlockPerRow) {
      any_beaten = __syncthreads_or(beaten) != 0;
    } else {
      any_beaten = __any_sync(0xffffffffu, beaten) != 0;
    }
    if (Group::rank() == 0 && !any_beaten) ++count;
  }
  count = cuda_detail::block_sum(count, scratch);
  if (threadIdx.x == 0 && count != 0) {
    atomicAdd(reinterpret_cast<unsigned long long*>(correct), count);
  }
}

}  // namespace

void count_top1(const CudaContext& ctx, int64_t n, int64_t c, const float* logits,
                const int64_t* labels, int64_t* correct) {
  if (n < 0 || c < 0) {
    throw std::invalid_argument("count_top1 (CUDA): negative shape (" + std::to_string(n) + ", " +
                                std::to_string(c) + ")");
  }
  if (n == 0 || c == 0) return;  // with no classes no label is valid, so nothing counts
  cuda_detail::launch_row_kernel(ctx.stream, n, c, count_top1_kernel<true>,
                                 count_top1_kernel<false>, logits, labels, correct);
}

}  // namespace retort::kernels
