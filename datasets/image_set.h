// ImageSet: an in-memory image classification dataset (uint8 CHW pixels, int64 labels) and helpers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace retort::data {

// One sample as the set serves it: a view of the image's (C, H, W) bytes, its label and its index
// in the set (the "original index" that KCD keys its per-sample statistics on).
struct Sample {
  const uint8_t* image = nullptr;  // (C, H, W)
  int64_t label = 0;
  int64_t index = 0;
};

// N images of the same (C, H, W) size, stored as one contiguous uint8 (N, C, H, W) block, with
// one label in [0, num_classes) each. Copying an ImageSet copies the pixels: that copy is what
// KCD mixes in place (mutable_image), persistently, between epochs. Pixels must not change while a
// DataLoader over the set has an epoch in flight (its worker thread reads them).
class ImageSet {
 public:
  ImageSet() = default;
  // Checks that pixels hold count * C * H * W bytes, that labels hold count values in
  // [0, num_classes), and that class_names is empty or has num_classes entries; throws
  // std::invalid_argument naming `source` and the problem otherwise.
  ImageSet(int64_t count, int64_t channels, int64_t height, int64_t width,
           std::vector<uint8_t> pixels, std::vector<int64_t> labels, int64_t num_classes,
           std::vector<std::string> class_names = {}, std::string source = {});

  int64_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  int64_t channels() const { return channels_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  // C * H * W: bytes per image.
  int64_t image_numel() const { return channels_ * height_ * width_; }
  int64_t num_classes() const { return num_classes_; }
  // Empty, or one name per class.
  const std::vector<std::string>& class_names() const { return class_names_; }
  // Where the set came from, for messages and logs ("IDX train-images-idx3-ubyte.gz + ...").
  const std::string& source() const { return source_; }

  // The (C, H, W) bytes of image `index`; throws std::out_of_range outside [0, size()).
  const uint8_t* image(int64_t index) const;
  uint8_t* mutable_image(int64_t index);
  int64_t label(int64_t index) const;
  Sample sample(int64_t index) const { return {image(index), label(index), index}; }

  const std::vector<uint8_t>& pixels() const { return pixels_; }  // (N, C, H, W)
  // (N, C, H, W). Every mutable access (here and mutable_image) counts as a change: a DataLoader
  // holding a device copy of the pixels compares pixels_version() and uploads them again.
  std::vector<uint8_t>& mutable_pixels() {
    ++pixels_version_;
    return pixels_;
  }
  uint64_t pixels_version() const { return pixels_version_; }
  const std::vector<int64_t>& labels() const { return labels_; }  // (N)

  // 0, 1, ..., size() - 1: the full training set's index list.
  std::vector<int64_t> all_indices() const;
  // Number of images per class, (num_classes).
  std::vector<int64_t> class_counts() const;
  // "<source>: 60000 images of (1, 28, 28), 10 classes"
  std::string str() const;

 private:
  void check_index(int64_t index) const;

  int64_t count_ = 0, channels_ = 0, height_ = 0, width_ = 0;
  std::vector<uint8_t> pixels_;  // (N, C, H, W)
  uint64_t pixels_version_ = 0;
  std::vector<int64_t> labels_;  // (N)
  int64_t num_classes_ = 0;
  std::vector<std::string> class_names_;
  std::string source_;
};

// A new set holding copies of the images at `indices` (in that order; repeats allowed), with the
// same classes. Image k of the result is image indices[k] of `set`.
ImageSet select(const ImageSet& set, const std::vector<int64_t>& indices);

// `count` distinct indices of `set`, stratified: every class contributes as evenly as its size
// allows (round-robin over classes, each class's images in a seeded random order), returned in
// ascending order. The choice depends on (set labels, count, seed) only. Throws when count is
// negative or larger than the set.
std::vector<int64_t> subset_indices(const ImageSet& set, int64_t count, uint64_t seed);
// select(set, subset_indices(set, count, seed)): a small, class-balanced set for quick runs.
ImageSet subset(const ImageSet& set, int64_t count, uint64_t seed);

// Per-channel mean and standard deviation of the pixels scaled to [0, 1], over the images at
// `indices` (all images when empty): the values to pass to the loader's normalisation.
struct ChannelStats {
  std::vector<float> mean;  // (C)
  std::vector<float> std;   // (C), population std
};
ChannelStats channel_stats(const ImageSet& set, const std::vector<int64_t>& indices = {});

// Normalisation constants commonly used for these datasets (per channel, pixels in [0, 1]).
// CIFAR-100's are RepDistiller's (spec 1.3); the others are the training sets' own statistics.
inline const std::vector<float> kCifar100Mean = {0.5071f, 0.4867f, 0.4408f};
inline const std::vector<float> kCifar100Std = {0.2675f, 0.2565f, 0.2761f};
inline const std::vector<float> kCifar10Mean = {0.4914f, 0.4822f, 0.4465f};
inline const std::vector<float> kCifar10Std = {0.2470f, 0.2435f, 0.2616f};
inline const std::vector<float> kFashionMnistMean = {0.2860f};
inline const std::vector<float> kFashionMnistStd = {0.3530f};

}  // namespace retort::data
