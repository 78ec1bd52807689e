// The augmentation op: gathers uint8 images by index, crops, flips and normalises them on the
// device that holds them (the data pipeline of a GPU run never leaves the GPU).
#pragma once

#include <cstdint>

#include "engine/tensor.h"
#include "kernels/augment.h"

namespace retort {

// pixels: (count, C, H, W) u8 contiguous; indices: (B) i64 on the same device, each in
// [0, count). Returns (B, C, H, W) f32 on that device: image b is pixels[indices[b]] augmented
// with the choices of Philox counter offset + b (kernels/augment.h documents the mapping), so the
// CPU and CUDA results are identical. CPU indices are checked; device indices are the caller's
// promise (checking them would synchronise). cpu_threads bounds the CPU kernel (0: the engine's
// setting), so a loader thread can leave the cores to the training step.
Tensor augment_images(const Tensor& pixels, const Tensor& indices,
                      const kernels::AugmentParams& params, uint64_t seed, uint64_t offset,
                      int cpu_threads = 0);

}  // namespace retort
