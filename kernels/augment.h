// Augmentation kernels: gather uint8 images by index, random crop + flip, normalise; mix in place.
#pragma once

#include <cstdint>

#include "kernels/context.h"
#include "kernels/fill.h"

namespace retort::kernels {

// Most channels an augmented image may have (grayscale, grayscale + alpha, RGB, RGBA).
inline constexpr int kMaxAugmentChannels = 4;

// The Philox counter's high 64 bits used by augmentation. Fills use stream 0, so a generator seed
// shared with the fills never hands the same random bits to both.
inline constexpr uint64_t kAugmentStream = 1;

// Geometry of one augment_gather call: `batch` images of (channels, height, width) are gathered
// from a source set of `source_count` images of the same size.
struct AugmentShape {
  int64_t batch = 0;
  int64_t source_count = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t image_numel() const { return channels * height * width; }
};

// What to do to every image, in torchvision's order: RandomCrop(size = (H, W), padding = pad)
// with zero fill, RandomHorizontalFlip(flip_prob), ToTensor (v / 255), Normalize(mean, std).
// pad = 0 and flip_prob = 0 give plain normalisation; mean 0 and std 1 give plain [0, 1] scaling.
struct AugmentParams {
  int pad = 0;
  float flip_prob = 0.0f;
  float mean[kMaxAugmentChannels] = {0.0f, 0.0f, 0.0f, 0.0f};
  float std[kMaxAugmentChannels] = {1.0f, 1.0f, 1.0f, 1.0f};
};

// The random choices for one image. The crop window starts at (dy, dx) in the zero-padded
// (H + 2 pad, W + 2 pad) image, each in [0, 2 pad]; so output pixel (y, x) reads source pixel
// (y + dy - pad, x' + dx - pad), zero outside the image, where x' = W - 1 - x when flipped (the
// flip applies to the cropped image) and x' = x otherwise.
struct AugmentChoice {
  int dy = 0;
  int dx = 0;
  bool flip = false;
};

// The documented mapping from random bits to choices, shared by both twins and the tests: image b
// of a call draws Philox counter (lo = offset + b, hi = kAugmentStream) with key = seed, giving
// lanes r0..r3; dy = r0 mod (2 pad + 1), dx = r1 mod (2 pad + 1), flip = uint32_to_unit(r2) <=
// flip_prob (probability exactly flip_prob for multiples of 2^-24; r3 is unused). One counter per
// image, drawn whether or not crop and flip are on, so a call consumes `batch` counters.
RETORT_HOST_DEVICE inline AugmentChoice augment_choice(uint64_t seed, uint64_t counter, int pad,
                                                       float flip_prob) {
  uint32_t bits[4];
  philox4x32_10(seed, counter, kAugmentStream, bits);
  const uint32_t span = 2u * static_cast<uint32_t>(pad) + 1u;
  AugmentChoice choice;
  choice.dy = static_cast<int>(bits[0] % span);
  choice.dx = static_cast<int>(bits[1] % span);
  choice.flip = uint32_to_unit(bits[2]) <= flip_prob;
  return choice;
}

// y[b] = normalise(flip(crop(images[indices[b]]))) for b < batch, choices from augment_choice
// with counter offset + b. images: (source_count, C, H, W) uint8 contiguous; indices: (batch)
// int64, each in [0, source_count) (the caller checks); y: (batch, C, H, W) contiguous. A value is
// (float(v) / 255 - mean[c]) / std[c], computed in float as torchvision does. Requires 0 <= pad,
// 1 <= C <= kMaxAugmentChannels. The CUDA twin takes device pointers for images, indices and y.
template <typename T>
void augment_gather(const CpuContext& ctx, const AugmentShape& shape, const AugmentParams& params,
                    uint64_t seed, uint64_t offset, const uint8_t* images, const int64_t* indices,
                    T* y);
void augment_gather(const CudaContext& ctx, const AugmentShape& shape, const AugmentParams& params,
                    uint64_t seed, uint64_t offset, const uint8_t* images, const int64_t* indices,
                    float* y);

// Mixes stored images in place, one pair at a time (KCD's knowledge summary, spec 2.2 (f)): for
// p < pairs and every byte k of the image,
//   images[dst[p]][k] = uint8(clamp(w_dst[p] * images[dst[p]][k] + w_src[p] * images[src[p]][k],
//                                   0, 255))
// Each product and the sum are rounded to float separately (no fused multiply-add), as PyTorch's
// separate float32 mul and add do, and the conversion truncates toward zero. A convex mix passes
// w_src = 1 - w_dst; the paper's additive summary passes w_dst = 1.
// images: (count, image_numel) uint8 contiguous; dst, src: (pairs) int64, each in [0, count) (the
// caller checks); w_dst, w_src: (pairs) float. Contract: the dst values are distinct and none is
// also a src, so the pairs are independent and the result depends neither on their order nor on
// the thread count. The CUDA twin takes device pointers for all five arrays (and must round each
// operation, e.g. __fmul_rn / __fadd_rn, since nvcc contracts to FMA by default).
void mix_images(const CpuContext& ctx, int64_t pairs, int64_t image_numel, const int64_t* dst,
                const int64_t* src, const float* w_dst, const float* w_src, uint8_t* images);
void mix_images(const CudaContext& ctx, int64_t pairs, int64_t image_numel, const int64_t* dst,
                const int64_t* src, const float* w_dst, const float* w_src, uint8_t* images);

}  // namespace retort::kernels
