// CUDA twin of kernels/fill.h: Philox4x32-10 uniform and normal fills, one counter per thread.
#include "kernels/fill.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/device_utils.cuh"

namespace retort::kernels {
namespace {

using cuda_detail::aligned16;
using cuda_detail::blocks_for;
using cuda_detail::global_thread_index;
using cuda_detail::grid_stride;
using cuda_detail::kThreadsPerBlock;

constexpr float kTwoPi = 6.28318530717958647692f;

// Counter k produces elements 4k .. 4k+3 (fill.h: element i uses counter offset + i / 4 with
// counter_hi = 0, lane i % 4). Stores a float4 when the four elements exist and y is aligned.
__device__ __forceinline__ void store4(float* y, int64_t n, int64_t k, bool vec4, float4 v) {
  const int64_t i = 4 * k;
  if (vec4 && i + 3 < n) {
    reinterpret_cast<float4*>(y)[k] = v;
    return;
  }
  if (i < n) y[i] = v.x;
  if (i + 1 < n) y[i + 1] = v.y;
  if (i + 2 < n) y[i + 2] = v.z;
  if (i + 3 < n) y[i + 3] = v.w;
}

// low + (high - low) * u as one fused multiply-add. The uniform bits u match the CPU twin
// exactly; the scaled value matches it bit for bit where the CPU build contracts the same
// expression into an FMA (GCC does with -march=native on FMA hardware), else within one rounding.
__device__ __forceinline__ float scale_uniform(uint32_t bits, float low, float span) {
  return fmaf(span, uint32_to_unit(bits), low);
}

__global__ void fill_uniform_kernel(int64_t n, uint64_t seed, uint64_t offset, float low,
                                    float high, float* y, bool vec4) {
  const int64_t counters = (n + 3) / 4;
  const float span = high - low;
  for (int64_t k = global_thread_index(); k < counters; k += grid_stride()) {
    uint32_t bits[4];
    philox4x32_10(seed, offset + static_cast<uint64_t>(k), 0, bits);
    store4(y, n, k, vec4,
           make_float4(scale_uniform(bits[0], low, span), scale_uniform(bits[1], low, span),
                       scale_uniform(bits[2], low, span), scale_uniform(bits[3], low, span)));
  }
}

// Box-Muller on (lane 0, lane 1) and (lane 2, lane 3): the first of a pair sets the radius, the
// second the angle; the first lane takes the cosine, the second the sine.
__global__ void fill_normal_kernel(int64_t n, uint64_t seed, uint64_t offset, float mean,
                                   float stddev, float* y, bool vec4) {
  const int64_t counters = (n + 3) / 4;
  for (int64_t k = global_thread_index(); k < counters; k += grid_stride()) {
    uint32_t bits[4];
    philox4x32_10(seed, offset + static_cast<uint64_t>(k), 0, bits);
    float z[4];
    for (int pair = 0; pair < 2; ++pair) {
      const float radius = sqrtf(-2.0f * logf(uint32_to_unit(bits[2 * pair])));
      const float angle = kTwoPi * uint32_to_unit(bits[2 * pair + 1]);
      z[2 * pair] = radius * cosf(angle);
      z[2 * pair + 1] = radius * sinf(angle);
    }
    store4(y, n, k, vec4,
           make_float4(fmaf(stddev, z[0], mean), fmaf(stddev, z[1], mean), fmaf(stddev, z[2], mean),
                       fmaf(stddev, z[3], mean)));
  }
}

}  // namespace

void fill_uniform(const CudaContext& ctx, int64_t n, uint64_t seed, uint64_t offset, float low,
                  float high, float* y) {
  if (n <= 0) return;
  fill_uniform_kernel<<<blocks_for(static_cast<int64_t>(philox_counters(n))), kThreadsPerBlock, 0,
                        ctx.stream>>>(n, seed, offset, low, high, y, aligned16(y));
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

void fill_normal(const CudaContext& ctx, int64_t n, uint64_t seed, uint64_t offset, float mean,
                 float stddev, float* y) {
  if (n <= 0) return;
  fill_normal_kernel<<<blocks_for(static_cast<int64_t>(philox_counters(n))), kThreadsPerBlock, 0,
                       ctx.stream>>>(n, seed, offset, mean, stddev, y, aligned16(y));
  RETORT_CUDA_CHECK_LAUNCH(ctx.stream);
}

}  // namespace retort::kernels
