// IDX reader (MNIST / Fashion-MNIST images and labels, plain or gzip) and the Fashion-MNIST helper.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "datasets/file_bytes.h"
#include "datasets/readers.h"

namespace retort::data {
namespace {

constexpr uint32_t kIdxImagesMagic = 0x00000803;  // uint8 data, 3 dimensions (N, H, W)
constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // uint8 data, 1 dimension (N)

std::string hex32(uint32_t v) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08x", v);
  return text;
}

uint32_t read_be32(const std::vector<uint8_t>& bytes, size_t at) {
  return uint32_t{bytes[at]} << 24 | uint32_t{bytes[at + 1]} << 16 | uint32_t{bytes[at + 2]} << 8 |
         uint32_t{bytes[at + 3]};
}

std::string magic_meaning(uint32_t magic) {
  if (magic == kIdxImagesMagic) return "IDX uint8 images";
  if (magic == kIdxLabelsMagic) return "IDX uint8 labels";
  if ((magic >> 16) == 0) return "IDX, but not the expected type or rank";
  return "not an IDX file";
}

// An IDX file's dimensions and the offset of its data, after checking magic and length.
struct IdxFile {
  std::vector<uint8_t> bytes;
  std::vector<uint32_t> dims;
  size_t data_offset = 0;
};

IdxFile parse_idx(const std::string& path, uint32_t expected_magic, const char* what) {
  IdxFile file;
  file.bytes = read_file_bytes(path);
  const std::vector<uint8_t>& bytes = file.bytes;
  if (bytes.size() < 4) {
    throw file_error(
        path, "truncated: " + std::to_string(bytes.size()) + " bytes, too short for an IDX header");
  }
  const uint32_t magic = read_be32(bytes, 0);
  if (magic != expected_magic) {
    throw file_error(path, "wrong magic " + hex32(magic) + " (" + magic_meaning(magic) +
                               "), expected " + hex32(expected_magic) + " for " + what);
  }
  const size_t ndims = expected_magic & 0xFF;
  file.data_offset = 4 + 4 * ndims;
  if (bytes.size() < file.data_offset) {
    throw file_error(path, "truncated: " + std::to_string(bytes.size()) +
                               " bytes, the IDX header alone needs " +
                               std::to_string(file.data_offset));
  }
  unsigned __int128 expected = 1;
  for (size_t d = 0; d < ndims; ++d) {
    file.dims.push_back(read_be32(bytes, 4 + 4 * d));
    expected *= file.dims.back();
  }
  const size_t actual = bytes.size() - file.data_offset;
  if (expected != actual) {
    std::string declared;
    for (size_t d = 0; d < ndims; ++d) declared += (d ? " x " : "") + std::to_string(file.dims[d]);
    const std::string problem = expected > actual ? "truncated: " : "size mismatch: ";
    throw file_error(path, problem + "the header declares " + declared + " = " +
                               std::to_string(static_cast<uint64_t>(expected)) +
                               " data bytes, the file holds " + std::to_string(actual));
  }
  return file;
}

}  // namespace

ImageSet read_idx(const std::string& images_path, const std::string& labels_path,
                  int64_t num_classes, std::vector<std::string> class_names) {
  IdxFile images = parse_idx(images_path, kIdxImagesMagic, "IDX images");
  const IdxFile labels = parse_idx(labels_path, kIdxLabelsMagic, "IDX labels");
  const int64_t count = images.dims[0], height = images.dims[1], width = images.dims[2];
  if (height == 0 || width == 0) {
    throw file_error(images_path, "images of size " + std::to_string(height) + "x" +
                                      std::to_string(width) + " have no pixels");
  }
  if (static_cast<int64_t>(labels.dims[0]) != count) {
    throw file_error(labels_path, "count mismatch: " + std::to_string(labels.dims[0]) +
                                      " labels for the " + std::to_string(count) + " images of " +
                                      images_path);
  }
  std::vector<int64_t> label_values(count);
  int64_t max_label = -1;
  for (int64_t i = 0; i < count; ++i) {
    label_values[i] = labels.bytes[labels.data_offset + i];
    max_label = std::max(max_label, label_values[i]);
    if (num_classes > 0 && label_values[i] >= num_classes) {
      throw file_error(labels_path, "label " + std::to_string(label_values[i]) + " of image " +
                                        std::to_string(i) + " is outside [0, " +
                                        std::to_string(num_classes) + ")");
    }
  }
  if (num_classes <= 0) num_classes = std::max<int64_t>(max_label + 1, 1);
  if (!class_names.empty() && static_cast<int64_t>(class_names.size()) != num_classes) {
    throw file_error(labels_path, std::to_string(class_names.size()) + " class names given for " +
                                      std::to_string(num_classes) + " classes");
  }
  // Drop the header in place: the pixels are already (N, H, W) = (N, 1, H, W).
  std::vector<uint8_t>& pixels = images.bytes;
  pixels.erase(pixels.begin(), pixels.begin() + static_cast<std::ptrdiff_t>(images.data_offset));
  return ImageSet(count, 1, height, width, std::move(pixels), std::move(label_values), num_classes,
                  std::move(class_names), "IDX " + images_path + " + " + labels_path);
}

ImageSet fashion_mnist(const std::string& root, bool train) {
  const std::string prefix = root + (train ? "/train" : "/t10k");
  return read_idx(prefix + "-images-idx3-ubyte.gz", prefix + "-labels-idx1-ubyte.gz", 10,
                  {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"});
}

}  // namespace retort::data
