// augment_images: the uint8 gather-crop-flip-normalise op on the CPU or a CUDA device.
#include "engine/augment.h"

#include "engine/ops/common.h"

namespace retort {

Tensor augment_images(const Tensor& pixels, const Tensor& indices_in,
                      const kernels::AugmentParams& params, uint64_t seed, uint64_t offset,
                      int cpu_threads) {
  check_defined(pixels, "augment_images", "pixels");
  check_defined(indices_in, "augment_images", "indices");
  if (pixels.dtype() != DType::u8 || pixels.dim() != 4 || !pixels.is_contiguous()) {
    throw std::invalid_argument("augment_images: pixels must be contiguous u8 (N, C, H, W), got " +
                                pixels.str());
  }
  if (indices_in.dtype() != DType::i64 || indices_in.dim() != 1) {
    throw std::invalid_argument("augment_images: indices must be i64 (B), got " +
                                indices_in.str());
  }
  if (indices_in.device() != pixels.device()) {
    throw std::invalid_argument("augment_images: pixels on " + pixels.device().str() +
                                " but indices on " + indices_in.device().str());
  }
  const int64_t channels = pixels.size(1);
  if (channels < 1 || channels > kernels::kMaxAugmentChannels || params.pad < 0) {
    throw std::invalid_argument("augment_images: " + std::to_string(channels) + " channels and " +
                                "padding " + std::to_string(params.pad) + "; needs 1 to " +
                                std::to_string(kernels::kMaxAugmentChannels) +
                                " channels and padding >= 0");
  }
  const Tensor indices = indices_in.contiguous();
  const kernels::AugmentShape shape{indices.size(0), pixels.size(0), channels, pixels.size(2),
                                    pixels.size(3)};
  if (pixels.device().is_cpu()) {
    const int64_t* index = indices.data<int64_t>();
    for (int64_t b = 0; b < shape.batch; ++b) {
      if (index[b] < 0 || index[b] >= shape.source_count) {
        throw std::invalid_argument("augment_images: index " + std::to_string(index[b]) +
                                    " at position " + std::to_string(b) + " is outside [0, " +
                                    std::to_string(shape.source_count) + ")");
      }
    }
  }
  Tensor out = Tensor::empty({shape.batch, channels, shape.height, shape.width}, DType::f32,
                             pixels.device());
  dispatch<OpId::augment>(pixels.device(), DType::f32, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<std::decay_t<decltype(ctx)>, kernels::CpuContext>) {
      const kernels::CpuContext local{cpu_threads > 0 ? cpu_threads : ctx.num_threads};
      kernels::augment_gather<T>(local, shape, params, seed, offset, pixels.data<uint8_t>(),
                                 indices.data<int64_t>(), out.data<T>());
    } else {
      kernels::augment_gather(ctx, shape, params, seed, offset, pixels.data<uint8_t>(),
                              indices.data<int64_t>(), out.data<T>());
    }
  });
  return out;
}

}  // namespace retort
