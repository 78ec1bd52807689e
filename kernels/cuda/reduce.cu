// CUDA twin of kernels/reduce.h: deterministic sums over dimension sets (fixed order, no atomics).
#include "kernels/reduce.h"

#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise.h"

namespace retort::kernels {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::global_thread_index;
using cuda_detail::grid_stride;
using cuda_detail::kThreadsPerBlock;
using cuda_detail::kWarpSize;

// A list of dimensions (row-major, outermost first) with their strides in the input.
struct DimList {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
};

__device__ __forceinline__ int64_t offset_of(const DimList& dims, int64_t linear) {
  int64_t offset = 0;
  for (int d = dims.ndim - 1; d >= 0; --d) {
    offset += (linear % dims.size[d]) * dims.stride[d];
    linear /= dims.size[d];
  }
  return offset;
}

// The reduction after coalescing: size-1 dimensions dropped and neighbours with the same flag
// merged (the input is contiguous, so that is always possible). `inner_reduced` tells whether the
// innermost remaining dimension is summed.
struct ReducePlan {
  DimList kept, reduced;
  int64_t out_numel = 1, reduce_numel = 1;
  bool inner_reduced = false;
};

ReducePlan plan_reduction(const ReduceShape& shape) {
  if (shape.ndim < 0 || shape.ndim > kMaxDims) {
    throw std::invalid_argument("reduce_sum (CUDA): rank " + std::to_string(shape.ndim) +
                                " outside [0, " + std::to_string(kMaxDims) + "]");
  }
  // Coalesce into (size, reduced) runs, outermost first.
  int runs = 0;
  int64_t run_size[kMaxDims] = {};
  bool run_reduced[kMaxDims] = {};
  for (int d = 0; d < shape.ndim; ++d) {
    if (shape.shape[d] == 1) continue;
    if (runs > 0 && run_reduced[runs - 1] == shape.reduce[d]) {
      run_size[runs - 1] *= shape.shape[d];
    } else {
      run_size[runs] = shape.shape[d];
      run_reduced[runs] = shape.reduce[d];
      ++runs;
    }
  }
  ReducePlan plan;
  int64_t stride = 1;
  // Walk innermost-first to get contiguous strides, filling the lists back to front.
  int kept_count = 0, reduced_count = 0;
  for (int r = 0; r < runs; ++r) (run_reduced[r] ? reduced_count : kept_count)++;
  plan.kept.ndim = kept_count;
  plan.reduced.ndim = reduced_count;
  for (int r = runs - 1; r >= 0; --r) {
    DimList& list = run_reduced[r] ? plan.reduced : plan.kept;
    int& slot = run_reduced[r] ? reduced_count : kept_count;
    --slot;
    list.size[slot] = run_size[r];
    list.stride[slot] = stride;
    stride *= run_size[r];
    (run_reduced[r] ? plan.reduce_numel : plan.out_numel) *= run_size[r];
  }
  plan.inner_reduced = runs > 0 && run_reduced[runs - 1];
  return plan;
}

// Innermost dimension summed: one block per (output, chunk of the reduced range). With
// kSingleRun the reduced range is one contiguous run, so offsets need no division. Writes
// scale * sum when there is one chunk, else the raw partial sum at partial[chunk * out + o].
template <bool kSingleRun>
__global__ void reduce_inner_kernel(DimList kept, DimList reduced, int64_t out_numel,
                                    int64_t reduce_numel, int64_t chunk_len, float scale,
                                    const float* __restrict__ x, float* __restrict__ out) {
  __shared__ float scratch[kWarpSize];
  const int64_t chunk = blockIdx.y;
  const int64_t r_begin = chunk * chunk_len;
  const int64_t r_end = min(reduce_numel, r_begin + chunk_len);
  const bool partial = gridDim.y > 1;
  for (int64_t o = blockIdx.x; o < out_numel; o += gridDim.x) {
    const int64_t base = offset_of(kept, o);
    float sum = 0.0f;
    for (int64_t r = r_begin + threadIdx.x; r < r_end; r += blockDim.x) {
      sum += x[base + (kSingleRun ? r : offset_of(reduced, r))];
    }
    sum = cuda_detail::block_sum(sum, scratch);
    if (threadIdx.x == 0) {
      if (partial) {
        out[chunk * out_numel + o] = sum;
      } else {
        out[o] = scale * sum;
      }
    }
  }
}

// Innermost dimension kept: consecutive threads take consecutive outputs (coalesced loads) and
// each sums its chunk of the reduced range sequentially. Output convention as above.
template <bool kSingleRun>
__global__ void reduce_outer_kernel(DimList kept, DimList reduced, int64_t out_numel,
                                    int64_t reduce_numel, int64_t chunk_len, float scale,
                                    const float* __restrict__ x, float* __restrict__ out) {
  const int64_t chunk = blockIdx.y;
  const int64_t r_begin = chunk * chunk_len;
  const int64_t r_end = min(reduce_numel, r_begin + chunk_len);
  const bool partial = gridDim.y > 1;
  const int64_t reduced_stride = reduced.stride[0];
  for (int64_t o = global_thread_index(); o < out_numel; o += grid_stride()) {
    const int64_t base = offset_of(kept, o);
    float sum = 0.0f;
    for (int64_t r = r_begin; r < r_end; ++r) {
      sum += x[base + (kSingleRun ? r * reduced_stride : offset_of(reduced, r))];
    }
    if (partial) {
      out[chunk * out_numel + o] = sum;
    } else {
      out[o] = scale * sum;
    }
  }
}

// y[o] = scale * sum over chunks (in chunk order) of partial[chunk * out + o].
__global__ void reduce_partials_kernel(int64_t out_numel, int64_t chunks, float scale,
                                       const float* __restrict__ partial, float* __restrict__ y) {
  for (int64_t o = global_thread_index(); o < out_numel; o += grid_stride()) {
    float sum = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) sum += partial[c * out_numel + o];
    y[o] = scale * sum;
  }
}

// Chunk counts depend on the shape only (not on the device), so results are the same on every
// GPU. The aim is a few hundred blocks in flight, with chunks long enough to be worth a block.
constexpr int64_t kTargetBlocks = 512;
constexpr int64_t kMinInnerChunk = 4096;
constexpr int64_t kMinOuterChunk = 128;
constexpr int64_t kMaxChunks = 1024;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

int64_t choose_chunks(int64_t reduce_numel, int64_t min_chunk, int64_t blocks_without_split) {
  int64_t chunks = ceil_div(reduce_numel, min_chunk);
  const int64_t wanted =
      blocks_without_split >= kTargetBlocks ? 1 : ceil_div(kTargetBlocks, blocks_without_split);
  if (chunks > wanted) chunks = wanted;
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  return chunks < 1 ? 1 : chunks;
}

}  // namespace

void reduce_sum(const CudaContext& ctx, const ReduceShape& shape, float scale, const float* x,
                float* y) {
  // Sizes over the original dimensions first: zero-sized dimensions are handled before the plan.
  int64_t out_numel = 1, reduce_numel = 1;
  for (int d = 0; d < shape.ndim; ++d) {
    (shape.reduce[d] ? reduce_numel : out_numel) *= shape.shape[d];
  }
  if (out_numel <= 0) return;
  if (reduce_numel <= 0) return fill_value(ctx, out_numel, 0.0f, y);
  const ReducePlan plan = plan_reduction(shape);
  if (plan.reduce_numel == 1) return affine_forward(ctx, out_numel, scale, 0.0f, x, y);

  const bool single_run = plan.reduced.ndim == 1;
  int64_t chunks = 1;
  unsigned threads = kThreadsPerBlock;
  unsigned blocks_x = 0;
  if (plan.inner_reduced) {
    // Narrower blocks for short rows (e.g. 10 or 100 logits) so few threads sit idle.
    const int64_t rounded = ceil_div(plan.reduce_numel, kWarpSize) * kWarpSize;
    threads = static_cast<unsigned>(rounded < kThreadsPerBlock ? rounded : kThreadsPerBlock);
    blocks_x = static_cast<unsigned>(
        plan.out_numel < cuda_detail::kMaxBlocks ? plan.out_numel : cuda_detail::kMaxBlocks);
    if (ctx.workspace != nullptr) {
      chunks = choose_chunks(plan.reduce_numel, kMinInnerChunk, plan.out_numel);
    }
  } else {
    blocks_x = blocks_for(plan.out_numel);
    if (ctx.workspace != nullptr) {
      chunks = choose_chunks(plan.reduce_numel, kMinOuterChunk, blocks_x);
    }
  }
  const int64_t chunk_len = ceil_div(plan.reduce_numel, chunks);
  chunks = ceil_div(plan.reduce_numel, chunk_len);  // no empty trailing chunk

  float* target = y;
  if (chunks > 1) {
    const size_t bytes = static_cast<size_t>(chunks * plan.out_numel) * sizeof(float);
    target = static_cast<float*>(ctx.workspace->get(bytes));
  }
  const dim3 grid(blocks_x, static_cast<unsigned>(chunks));
  if (plan.inner_reduced) {
    if (single_run) {
      reduce_inner_kernel<true><<<grid, threads, 0, ctx.stream>>>(
          plan.kept, plan.reduced, plan.out_numel, plan.reduce_numel, chunk_len, scale, x, target);
    } else {
      reduce_inner_kernel<false><<<grid, threads, 0, ctx.stream>>>(
          plan.kept, plan.reduced, plan.out_numel, plan.reduce_numel, chunk_len, scale, x, target);
    }
  } else {
    if (single_run) {
      reduce_outer_kernel<true><<<grid, threads, 0, ctx.stream>>>(
          plan.kept, plan.reduced, plan.out_numel, plan.reduce_numel, chunk_len, scale, x, target);
    } else {
      reduce_outer_kernel<false><<<grid, threads, 0, ctx.stream>>>(
          plan.kept, plan.reduced, plan.out_numel, plan.reduce_numel, chunk_len, scale, x, target);
    }
  }
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
  if (chunks > 1) {
    reduce_partials_kernel<<<blocks_for(plan.out_numel), kThreadsPerBlock, 0, ctx.stream>>>(
        plan.out_numel, chunks, scale, target, y);
    RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
  }
}

}  // namespace retort::kernels
