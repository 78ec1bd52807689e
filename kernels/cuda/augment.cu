// CUDA twin of kernels/augment.h: crop + flip + normalise gather, and in-place image mixing.
#include "kernels/augment.h"

#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreadsPerBlock;

// gridDim.y limit; batches and pair lists beyond it are covered by a grid-stride loop over y.
constexpr int64_t kMaxGridY = 65535;
// augment_gather launches about this many blocks at most (several per SM on an H100); past that a
// block loops over more images, which spreads the cost of building its value table.
constexpr int64_t kGatherTargetBlocks = 4096;

// Threads of a block build the normalisation table together, then share it: the table holds the
// value of every byte in every channel, (float(v) / 255 - mean[c]) / std[c], rounded step by step
// exactly as the CPU twin's float table is (IEEE division and subtraction, nothing fused).
__device__ __forceinline__ void build_value_table(const AugmentParams& params, int channels,
                                                  float* table) {
  for (int k = threadIdx.x; k < channels * 256; k += blockDim.x) {
    const int c = k / 256, v = k % 256;
    table[k] = __fdiv_rn(__fsub_rn(__fdiv_rn(static_cast<float>(v), 255.0f), params.mean[c]),
                         params.std[c]);
  }
}

// blockIdx.y walks the images of the batch; blockIdx.x and threadIdx.x walk one image's output
// elements in (C, H, W) order, so consecutive threads write consecutive floats. Every thread
// draws its image's choice itself (ten Philox rounds) rather than synchronising on a shared one.
__global__ void augment_gather_kernel(int64_t batch, int channels, int height, int width,
                                      AugmentParams params, uint64_t seed, uint64_t offset,
                                      const uint8_t* __restrict__ images,
                                      const int64_t* __restrict__ indices, float* __restrict__ y) {
  __shared__ float table[kMaxAugmentChannels * 256];
  build_value_table(params, channels, table);
  __syncthreads();

  const int plane = height * width;
  const int numel = channels * plane;
  const int first = blockIdx.x * blockDim.x + threadIdx.x;
  const int step = gridDim.x * blockDim.x;
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    const AugmentChoice choice =
        augment_choice(seed, offset + static_cast<uint64_t>(b), params.pad, params.flip_prob);
    const int64_t shift_y = static_cast<int64_t>(choice.dy) - params.pad;
    const int64_t shift_x = static_cast<int64_t>(choice.dx) - params.pad;
    const uint8_t* src = images + indices[b] * numel;  // (C, H, W)
    float* dst = y + b * numel;                        // (C, H, W)
    for (int i = first; i < numel; i += step) {
      const int c = i / plane, rest = i % plane;
      const int oy = rest / width, ox = rest % width;
      const int64_t sy = oy + shift_y;
      const int64_t sx = (choice.flip ? width - 1 - ox : ox) + shift_x;
      const bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
      const int v = inside ? src[c * plane + sy * width + sx] : 0;  // zero padding reads byte 0
      dst[i] = table[c * 256 + v];
    }
  }
}

// images[dst[p]][k] = uint8(clamp(w_dst[p] * images[dst[p]][k] + w_src[p] * images[src[p]][k]))
// with each product and the sum rounded on its own (__fmul_rn / __fadd_rn are never contracted
// into an FMA), std::clamp's comparisons, and a conversion that truncates toward zero.
// blockIdx.y walks the pairs; blockIdx.x and threadIdx.x walk the bytes of one image.
__global__ void mix_images_kernel(int64_t pairs, int64_t image_numel,
                                  const int64_t* __restrict__ dst, const int64_t* __restrict__ src,
                                  const float* __restrict__ w_dst, const float* __restrict__ w_src,
                                  uint8_t* images) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = blockIdx.y; p < pairs; p += gridDim.y) {
    uint8_t* a = images + dst[p] * image_numel;        // (image_numel)
    const uint8_t* b = images + src[p] * image_numel;  // (image_numel)
    const float wa = w_dst[p], wb = w_src[p];
    for (int64_t k = first; k < image_numel; k += step) {
      const float v = __fadd_rn(__fmul_rn(wa, static_cast<float>(a[k])),
                                __fmul_rn(wb, static_cast<float>(b[k])));
      const float clamped = v < 0.0f ? 0.0f : (255.0f < v ? 255.0f : v);
      a[k] = static_cast<uint8_t>(clamped);
    }
  }
}

void check_augment_args(const AugmentShape& shape, const AugmentParams& params) {
  if (shape.batch < 0 || shape.source_count < 0 || shape.height < 0 || shape.width < 0) {
    throw std::invalid_argument("augment_gather (CUDA): negative size in shape");
  }
  if (shape.channels < 1 || shape.channels > kMaxAugmentChannels) {
    throw std::invalid_argument("augment_gather (CUDA): " + std::to_string(shape.channels) +
                                " channels; 1 to " + std::to_string(kMaxAugmentChannels) +
                                " are supported");
  }
  if (params.pad < 0) {
    throw std::invalid_argument("augment_gather (CUDA): negative crop padding " +
                                std::to_string(params.pad));
  }
  // The kernel indexes within an image in int (with the grid-stride step added on top).
  const int64_t limit =
      std::numeric_limits<int>::max() - cuda_detail::kMaxBlocks * kThreadsPerBlock;
  if (shape.height > limit || shape.width > limit || shape.image_numel() > limit) {
    throw std::invalid_argument("augment_gather (CUDA): image of " +
                                std::to_string(shape.channels) + "x" +
                                std::to_string(shape.height) + "x" + std::to_string(shape.width) +
                                " is too large (at most " + std::to_string(limit) + " elements)");
  }
}

}  // namespace

void augment_gather(const CudaContext& ctx, const AugmentShape& shape, const AugmentParams& params,
                    uint64_t seed, uint64_t offset, const uint8_t* images, const int64_t* indices,
                    float* y) {
  check_augment_args(shape, params);
  const int64_t numel = shape.image_numel();
  if (shape.batch == 0 || numel == 0) return;
  const unsigned blocks_x = blocks_for(numel);
  int64_t blocks_y = kGatherTargetBlocks / blocks_x;
  if (blocks_y < 1) blocks_y = 1;
  if (blocks_y > shape.batch) blocks_y = shape.batch;
  if (blocks_y > kMaxGridY) blocks_y = kMaxGridY;
  const dim3 grid(blocks_x, static_cast<unsigned>(blocks_y));
  augment_gather_kernel<<<grid, kThreadsPerBlock, 0, ctx.stream>>>(
      shape.batch, static_cast<int>(shape.channels), static_cast<int>(shape.height),
      static_cast<int>(shape.width), params, seed, offset, images, indices, y);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void mix_images(const CudaContext& ctx, int64_t pairs, int64_t image_numel, const int64_t* dst,
                const int64_t* src, const float* w_dst, const float* w_src, uint8_t* images) {
  if (pairs < 0 || image_numel < 0) {
    throw std::invalid_argument("mix_images (CUDA): negative pair count or image size");
  }
  if (pairs == 0 || image_numel == 0) return;
  const dim3 grid(blocks_for(image_numel),
                  static_cast<unsigned>(pairs < kMaxGridY ? pairs : kMaxGridY));
  mix_images_kernel<<<grid, kThreadsPerBlock, 0, ctx.stream>>>(pairs, image_numel, dst, src, w_dst,
                                                               w_src, images);
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

}  // namespace retort::kernels
