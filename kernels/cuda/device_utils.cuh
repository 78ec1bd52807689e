// Shared pieces of the hand-written CUDA kernels: launch sizing and fixed-order warp/block sums.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"

namespace retort::kernels::cuda_detail {

inline constexpr int kWarpSize = 32;
inline constexpr int kThreadsPerBlock = 256;
// Grid-stride loops cover anything beyond this many blocks; plenty to fill an H100 (132 SMs).
inline constexpr int64_t kMaxBlocks = int64_t{1} << 16;

// Blocks for `work` items at `threads_per_block` items per block pass, capped (grid-stride).
inline unsigned blocks_for(int64_t work, int threads_per_block = kThreadsPerBlock) {
  const int64_t blocks = (work + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Narrows a size for a library API that takes int; throws naming the value if it does not fit.
inline int checked_int(int64_t value, const char* what) {
  if (value < 0 || value > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string(what) + " = " + std::to_string(value) +
                                " does not fit the int that the CUDA library API takes");
  }
  return static_cast<int>(value);
}

// Index of this thread in a 1-D grid and the grid-stride, as int64 so large tensors never wrap.
__device__ __forceinline__ int64_t global_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Butterfly sums and maxima over a full warp; every lane ends with the same result, and the
// combination order is fixed, so results are bit-reproducible.
template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

template <typename T>
__device__ __forceinline__ T warp_max(T value) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 values. Fixed order: per-warp butterflies, then warp 0 sums the
// per-warp totals. Contains __syncthreads, so every thread of the block must call it.
template <typename T>
__device__ __forceinline__ T block_sum(T value, T* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  value = warp_sum(value);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < warps ? scratch[lane] : T(0);
  value = warp_sum(value);
  return value;
}

// Maximum over the block, same rules as block_sum (float only). fmaxf ignores a NaN operand, but
// a NaN input still turns the sums computed after the maximum into NaN.
__device__ __forceinline__ float block_max(float value, float* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  value = warp_max(value);
  __syncthreads();
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < warps ? scratch[lane] : -INFINITY;
  value = warp_max(value);
  return value;
}

// Row-wise kernels (softmax, losses) give each row to a warp when rows are short and to a whole
// block when they are long. RowGroup<kBlockPerRow> hides which: the rank and size of a thread in
// its row's group, the rows a group visits, and group-wide sums and maxima. Every thread of a
// group visits the same rows, so the group reductions are always reached together.
inline constexpr int64_t kWarpRowMaxCols = 1024;

template <bool kBlockPerRow>
struct RowGroup {
  __device__ static int rank() { return kBlockPerRow ? threadIdx.x : threadIdx.x % kWarpSize; }
  __device__ static int size() { return kBlockPerRow ? blockDim.x : kWarpSize; }
  __device__ static int64_t first_row() {
    return kBlockPerRow ? static_cast<int64_t>(blockIdx.x)
                        : static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) +
                              threadIdx.x / kWarpSize;
  }
  __device__ static int64_t row_stride() {
    return kBlockPerRow ? static_cast<int64_t>(gridDim.x)
                        : static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarpSize);
  }
  // `scratch`: 32 floats of shared memory (unused by warps).
  __device__ static float sum(float v, float* scratch) {
    if constexpr (kBlockPerRow) return block_sum(v, scratch);
    return warp_sum(v);
  }
  __device__ static float max(float v, float* scratch) {
    if constexpr (kBlockPerRow) return block_max(v, scratch);
    return warp_max(v);
  }
};

// Grid for a row-wise kernel: eight rows per 256-thread block in warp mode, a block per row
// otherwise (grid-stride over rows beyond kMaxBlocks).
struct RowLaunch {
  bool block_per_row;
  unsigned blocks;
  unsigned threads;
};

inline RowLaunch row_launch(int64_t rows, int64_t cols) {
  if (cols <= kWarpRowMaxCols) {
    const int64_t rows_per_block = kThreadsPerBlock / kWarpSize;
    return {false, blocks_for(rows, static_cast<int>(rows_per_block)),
            static_cast<unsigned>(kThreadsPerBlock)};
  }
  // At least one block: a launch with an empty grid is an error (callers return early on 0 rows).
  const int64_t blocks = rows < 1 ? 1 : (rows < kMaxBlocks ? rows : kMaxBlocks);
  return {true, static_cast<unsigned>(blocks), static_cast<unsigned>(kThreadsPerBlock)};
}

// Keeps a parameter out of template argument deduction (std::type_identity_t, which C++17 lacks;
// this header compiles as C++17 too, for CMake versions that cannot ask nvcc for C++20).
template <typename T>
struct NonDeduced {
  using type = T;
};

// Launches the block-per-row or the warp-per-row instantiation of a row kernel whose first two
// parameters are (rows, cols), then checks the launch.
template <typename... Params>
void launch_row_kernel(cudaStream_t stream, int64_t rows, int64_t cols,
                       void (*block_per_row_kernel)(int64_t, int64_t, Params...),
                       void (*warp_per_row_kernel)(int64_t, int64_t, Params...),
                       typename NonDeduced<Params>::type... args) {
  const RowLaunch launch = row_launch(rows, cols);
  const auto kernel = launch.block_per_row ? block_per_row_kernel : warp_per_row_kernel;
  kernel<<<launch.blocks, launch.threads, 0, stream>>>(rows, cols, args...);
  RETORT_CUDA_CHECK_LAUNCH(stream);
}

}  // namespace retort::kernels::cuda_detail
