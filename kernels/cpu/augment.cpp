// CPU twin of the augmentation kernels (kernels/augment.h), parallel over the images of a batch.
#include "kernels/augment.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cpu/parallel.h"

namespace retort::kernels {
namespace {

// Output elements per thread before another thread pays off: a lookup and a store per element.
constexpr int64_t kAugmentWorkPerThread = 16384;

void check_augment_args(const AugmentShape& shape, const AugmentParams& params) {
  if (shape.batch < 0 || shape.source_count < 0 || shape.height < 0 || shape.width < 0) {
    throw std::invalid_argument("augment_gather: negative size in shape");
  }
  if (shape.channels < 1 || shape.channels > kMaxAugmentChannels) {
    throw std::invalid_argument("augment_gather: " + std::to_string(shape.channels) +
                                " channels; 1 to " + std::to_string(kMaxAugmentChannels) +
                                " are supported");
  }
  if (params.pad < 0) {
    throw std::invalid_argument("augment_gather: negative crop padding " +
                                std::to_string(params.pad));
  }
}

}  // namespace

template <typename T>
void augment_gather(const CpuContext& ctx, const AugmentShape& shape, const AugmentParams& params,
                    uint64_t seed, uint64_t offset, const uint8_t* images, const int64_t* indices,
                    T* y) {
  check_augment_args(shape, params);
  const int64_t channels = shape.channels, height = shape.height, width = shape.width;
  const int64_t plane = height * width;
  const int64_t numel = shape.image_numel();
  const int pad = params.pad;

  // value[c][v]: the normalised value of byte v in channel c, from the same expression as a direct
  // computation, so the table changes nothing but speed. Zero padding reads v = 0.
  T value[kMaxAugmentChannels][256];
  for (int64_t c = 0; c < channels; ++c) {
    for (int v = 0; v < 256; ++v) {
      value[c][v] = (static_cast<T>(v) / static_cast<T>(255) - static_cast<T>(params.mean[c])) /
                    static_cast<T>(params.std[c]);
    }
  }

  const int threads = cpu_threads(ctx, shape.batch * numel, kAugmentWorkPerThread);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < shape.batch; ++b) {
    const AugmentChoice choice =
        augment_choice(seed, offset + static_cast<uint64_t>(b), pad, params.flip_prob);
    const uint8_t* src = images + indices[b] * numel;  // (C, H, W)
    T* dst = y + b * numel;                            // (C, H, W)
    const int64_t shift_y = choice.dy - pad, shift_x = choice.dx - pad;
    for (int64_t c = 0; c < channels; ++c) {
      const T* lut = value[c];
      const uint8_t* src_plane = src + c * plane;
      T* dst_plane = dst + c * plane;
      for (int64_t oy = 0; oy < height; ++oy) {
        T* dst_row = dst_plane + oy * width;
        const int64_t sy = oy + shift_y;
        if (sy < 0 || sy >= height) {
          std::fill(dst_row, dst_row + width, lut[0]);
          continue;
        }
        const uint8_t* src_row = src_plane + sy * width;
        for (int64_t ox = 0; ox < width; ++ox) {
          const int64_t sx = (choice.flip ? width - 1 - ox : ox) + shift_x;
          dst_row[ox] = (sx >= 0 && sx < width) ? lut[src_row[sx]] : lut[0];
        }
      }
    }
  }
}

template void augment_gather<float>(const CpuContext&, const AugmentShape&, const AugmentParams&,
                                    uint64_t, uint64_t, const uint8_t*, const int64_t*, float*);
template void augment_gather<double>(const CpuContext&, const AugmentShape&, const AugmentParams&,
                                     uint64_t, uint64_t, const uint8_t*, const int64_t*, double*);

// mix_images rounds every float product and sum on its own, as PyTorch's separate float32 mul and
// add do: no contraction into fused multiply-adds, whatever -ffp-contract the build defaults to
// (GCC's default for C++ is "fast", which fuses across statements and through casts).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

void mix_images(const CpuContext& ctx, int64_t pairs, int64_t image_numel, const int64_t* dst,
                const int64_t* src, const float* w_dst, const float* w_src, uint8_t* images) {
  if (pairs < 0 || image_numel < 0) {
    throw std::invalid_argument("mix_images: negative pair count or image size");
  }
  const int threads = cpu_threads(ctx, pairs * image_numel, kAugmentWorkPerThread);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t p = 0; p < pairs; ++p) {
    uint8_t* a = images + dst[p] * image_numel;        // (image_numel)
    const uint8_t* b = images + src[p] * image_numel;  // (image_numel)
    const float wa = w_dst[p], wb = w_src[p];
    for (int64_t k = 0; k < image_numel; ++k) {
      const float v = wa * static_cast<float>(a[k]) + wb * static_cast<float>(b[k]);
      a[k] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));  // truncation toward zero
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

}  // namespace retort::kernels
