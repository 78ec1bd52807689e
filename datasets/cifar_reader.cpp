// CIFAR-10 / CIFAR-100 binary reader (label bytes + 3072 CHW pixel bytes per record).
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "datasets/file_bytes.h"
#include "datasets/readers.h"

namespace retort::data {
namespace {

constexpr int64_t kCifarChannels = 3, kCifarSide = 32;
constexpr int64_t kCifarPixels = kCifarChannels * kCifarSide * kCifarSide;  // 3072

// Non-empty lines of a names file beside the data, or {} when there is none.
std::vector<std::string> read_names(const std::filesystem::path& file) {
  std::vector<std::string> names;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

}  // namespace

ImageSet read_cifar(const std::vector<std::string>& paths, CifarVariant variant) {
  if (paths.empty()) throw std::runtime_error("read_cifar: no files given");
  const bool fine = variant == CifarVariant::cifar100;
  const int64_t label_bytes = fine ? 2 : 1;
  const int64_t record = label_bytes + kCifarPixels;
  const int64_t num_classes = fine ? 100 : 10;

  std::vector<uint8_t> pixels;  // (N, 3, 32, 32)
  std::vector<int64_t> labels;  // (N)
  for (const std::string& path : paths) {
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    const int64_t size = static_cast<int64_t>(bytes.size());
    const std::string kind = fine ? "CIFAR-100" : "CIFAR-10";
    if (size == 0) throw file_error(path, "empty file, expected " + kind + " records");
    if (size % record != 0) {
      throw file_error(path, "truncated record: " + std::to_string(size) + " bytes is " +
                                 std::to_string(size / record) + " whole " +
                                 std::to_string(record) + "-byte " + kind + " records and " +
                                 std::to_string(size % record) + " bytes more");
    }
    const int64_t count = size / record;
    pixels.reserve(pixels.size() + count * kCifarPixels);
    for (int64_t r = 0; r < count; ++r) {
      const uint8_t* rec = bytes.data() + r * record;
      if (fine && rec[0] >= 20) {
        throw file_error(path, "record " + std::to_string(r) + ": coarse label " +
                                   std::to_string(rec[0]) + " is outside [0, 20) (is this " +
                                   "CIFAR-10 data read as CIFAR-100?)");
      }
      const int64_t label = rec[label_bytes - 1];
      if (label >= num_classes) {
        throw file_error(path, "record " + std::to_string(r) + ": label " + std::to_string(label) +
                                   " is outside [0, " + std::to_string(num_classes) + ")");
      }
      labels.push_back(label);
      pixels.insert(pixels.end(), rec + label_bytes, rec + record);
    }
  }

  const std::filesystem::path dir = std::filesystem::path(paths.front()).parent_path();
  std::vector<std::string> names =
      read_names(dir / (fine ? "fine_label_names.txt" : "batches.meta.txt"));
  if (static_cast<int64_t>(names.size()) != num_classes) {
    names.clear();
    if (!fine) {
      names = {"airplane", "automobile", "bird",  "cat",  "deer",
               "dog",      "frog",       "horse", "ship", "truck"};
    }
  }
  std::string source = fine ? "CIFAR-100 (fine labels)" : "CIFAR-10";
  for (size_t i = 0; i < paths.size(); ++i) source += (i ? ", " : " ") + paths[i];
  const auto count = static_cast<int64_t>(labels.size());
  return ImageSet(count, kCifarChannels, kCifarSide, kCifarSide, std::move(pixels),
                  std::move(labels), num_classes, std::move(names), std::move(source));
}

ImageSet cifar10(const std::string& root, bool train) {
  std::vector<std::string> paths;
  if (train) {
    for (int i = 1; i <= 5; ++i)
      paths.push_back(root + "/data_batch_" + std::to_string(i) + ".bin");
  } else {
    paths.push_back(root + "/test_batch.bin");
  }
  return read_cifar(paths, CifarVariant::cifar10);
}

ImageSet cifar100(const std::string& root, bool train) {
  return read_cifar(root + (train ? "/train.bin" : "/test.bin"), CifarVariant::cifar100);
}

}  // namespace retort::data
