// ImageSet checks and accessors, select/subset, channel statistics and seeded permutations.
#include "datasets/image_set.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "datasets/permutation.h"
#include "kernels/fill.h"

namespace retort::data {
namespace {

std::string where(const std::string& source) {
  return source.empty() ? "ImageSet" : source;
}

}  // namespace

ImageSet::ImageSet(int64_t count, int64_t channels, int64_t height, int64_t width,
                   std::vector<uint8_t> pixels, std::vector<int64_t> labels, int64_t num_classes,
                   std::vector<std::string> class_names, std::string source)
    : count_(count),
      channels_(channels),
      height_(height),
      width_(width),
      pixels_(std::move(pixels)),
      labels_(std::move(labels)),
      num_classes_(num_classes),
      class_names_(std::move(class_names)),
      source_(std::move(source)) {
  if (count < 0 || channels < 1 || height < 1 || width < 1) {
    throw std::invalid_argument(where(source_) + ": bad image set geometry " +
                                std::to_string(count) + " x (" + std::to_string(channels) + ", " +
                                std::to_string(height) + ", " + std::to_string(width) + ")");
  }
  if (static_cast<int64_t>(pixels_.size()) != count * image_numel()) {
    throw std::invalid_argument(where(source_) + ": " + std::to_string(pixels_.size()) +
                                " pixel bytes for " + std::to_string(count) + " images of " +
                                std::to_string(image_numel()) + " bytes");
  }
  if (static_cast<int64_t>(labels_.size()) != count) {
    throw std::invalid_argument(where(source_) + ": " + std::to_string(labels_.size()) +
                                " labels for " + std::to_string(count) + " images");
  }
  if (num_classes < 1) {
    throw std::invalid_argument(where(source_) + ": num_classes must be positive, got " +
                                std::to_string(num_classes));
  }
  for (int64_t i = 0; i < count; ++i) {
    if (labels_[i] < 0 || labels_[i] >= num_classes) {
      throw std::invalid_argument(where(source_) + ": label " + std::to_string(labels_[i]) +
                                  " of image " + std::to_string(i) + " is outside [0, " +
                                  std::to_string(num_classes) + ")");
    }
  }
  if (!class_names_.empty() && static_cast<int64_t>(class_names_.size()) != num_classes) {
    throw std::invalid_argument(where(source_) + ": " + std::to_string(class_names_.size()) +
                                " class names for " + std::to_string(num_classes) + " classes");
  }
}

void ImageSet::check_index(int64_t index) const {
  if (index < 0 || index >= count_) {
    throw std::out_of_range(where(source_) + ": index " + std::to_string(index) +
                            " is outside [0, " + std::to_string(count_) + ")");
  }
}

const uint8_t* ImageSet::image(int64_t index) const {
  check_index(index);
  return pixels_.data() + index * image_numel();
}

uint8_t* ImageSet::mutable_image(int64_t index) {
  check_index(index);
  ++pixels_version_;
  return pixels_.data() + index * image_numel();
}

int64_t ImageSet::label(int64_t index) const {
  check_index(index);
  return labels_[index];
}

std::vector<int64_t> ImageSet::all_indices() const {
  std::vector<int64_t> indices(count_);
  for (int64_t i = 0; i < count_; ++i) indices[i] = i;
  return indices;
}

std::vector<int64_t> ImageSet::class_counts() const {
  std::vector<int64_t> counts(num_classes_, 0);
  for (int64_t label : labels_) ++counts[label];
  return counts;
}

std::string ImageSet::str() const {
  return where(source_) + ": " + std::to_string(count_) + " images of (" +
         std::to_string(channels_) + ", " + std::to_string(height_) + ", " +
         std::to_string(width_) + "), " + std::to_string(num_classes_) + " classes";
}

ImageSet select(const ImageSet& set, const std::vector<int64_t>& indices) {
  const int64_t numel = set.image_numel();
  std::vector<uint8_t> pixels(indices.size() * numel);  // (K, C, H, W)
  std::vector<int64_t> labels(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const uint8_t* src = set.image(indices[k]);
    std::copy(src, src + numel, pixels.begin() + static_cast<int64_t>(k) * numel);
    labels[k] = set.labels()[indices[k]];
  }
  return ImageSet(static_cast<int64_t>(indices.size()), set.channels(), set.height(), set.width(),
                  std::move(pixels), std::move(labels), set.num_classes(), set.class_names(),
                  "selection of " + std::to_string(indices.size()) + " from " + set.source());
}

std::vector<int64_t> subset_indices(const ImageSet& set, int64_t count, uint64_t seed) {
  if (count < 0 || count > set.size()) {
    throw std::invalid_argument("subset: cannot take " + std::to_string(count) + " of the " +
                                std::to_string(set.size()) + " images of " + set.source());
  }
  // Each class's members in a seeded random order, then one from each class in turn.
  std::vector<std::vector<int64_t>> members(set.num_classes());
  for (int64_t i = 0; i < set.size(); ++i) members[set.labels()[i]].push_back(i);
  for (auto& list : members) {
    const std::vector<int64_t> order =
        seeded_permutation(static_cast<int64_t>(list.size()), seed, kSubsetStream);
    std::vector<int64_t> shuffled(list.size());
    for (size_t k = 0; k < list.size(); ++k) shuffled[k] = list[order[k]];
    list = std::move(shuffled);
  }
  std::vector<int64_t> chosen;
  chosen.reserve(count);
  for (size_t round = 0; static_cast<int64_t>(chosen.size()) < count; ++round) {
    for (const auto& list : members) {
      if (round < list.size() && static_cast<int64_t>(chosen.size()) < count) {
        chosen.push_back(list[round]);
      }
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

ImageSet subset(const ImageSet& set, int64_t count, uint64_t seed) {
  return select(set, subset_indices(set, count, seed));
}

ChannelStats channel_stats(const ImageSet& set, const std::vector<int64_t>& indices) {
  const int64_t channels = set.channels(), plane = set.height() * set.width();
  // Byte histograms per channel: exact sums, no float drift over millions of pixels.
  std::vector<std::vector<int64_t>> histogram(channels, std::vector<int64_t>(256, 0));
  auto add_image = [&](int64_t index) {
    const uint8_t* image = set.image(index);
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t i = 0; i < plane; ++i) ++histogram[c][image[c * plane + i]];
    }
  };
  if (indices.empty()) {
    for (int64_t i = 0; i < set.size(); ++i) add_image(i);
  } else {
    for (int64_t i : indices) add_image(i);
  }
  ChannelStats stats;
  for (int64_t c = 0; c < channels; ++c) {
    double n = 0, sum = 0, sum_sq = 0;
    for (int v = 0; v < 256; ++v) {
      const double count = static_cast<double>(histogram[c][v]), x = v / 255.0;
      n += count;
      sum += count * x;
      sum_sq += count * x * x;
    }
    const double mean = n > 0 ? sum / n : 0.0;
    const double var = n > 0 ? std::max(0.0, sum_sq / n - mean * mean) : 0.0;
    stats.mean.push_back(static_cast<float>(mean));
    stats.std.push_back(static_cast<float>(std::sqrt(var)));
  }
  return stats;
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> order(std::max<int64_t>(n, 0));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i >= 1; --i) {
    uint32_t bits[4];
    kernels::philox4x32_10(seed, static_cast<uint64_t>(i), stream, bits);
    const uint64_t r = uint64_t{bits[0]} | (uint64_t{bits[1]} << 32);
    const auto j = static_cast<int64_t>(
        (static_cast<unsigned __int128>(r) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace retort::data
