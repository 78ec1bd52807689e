// Image-folder reader: one subfolder per class, files decoded by content with stb_image.
#include <stb/stb_image.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "datasets/file_bytes.h"
#include "datasets/readers.h"

namespace retort::data {
namespace {

namespace fs = std::filesystem;

bool is_hidden(const fs::path& path) {
  return path.filename().string().starts_with('.');
}

// Subfolders of root (sorted by name) or, for a class folder, its image files (recursively,
// sorted by path), skipping hidden entries.
std::vector<fs::path> list_entries(const fs::path& dir, bool folders) {
  std::vector<fs::path> entries;
  try {
    if (folders) {
      for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
        if (!is_hidden(entry.path()) && entry.is_directory()) entries.push_back(entry.path());
      }
    } else {
      for (auto it = fs::recursive_directory_iterator(dir);
           it != fs::recursive_directory_iterator(); ++it) {
        if (is_hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) entries.push_back(it->path());
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw file_error(dir.string(), std::string("cannot list the folder: ") + e.code().message());
  }
  std::sort(entries.begin(), entries.end());
  return entries;
}

struct StbImageDeleter {
  void operator()(stbi_uc* data) const { stbi_image_free(data); }
};

}  // namespace

ImageSet read_image_folder(const std::string& root, int channels) {
  if (channels != 0 && channels != 1 && channels != 3 && channels != 4) {
    throw std::invalid_argument(
        "read_image_folder: channels must be 0 (as stored), 1, 3 or 4, got " +
        std::to_string(channels));
  }
  std::error_code ec;
  const fs::file_status status = fs::status(root, ec);
  if (!fs::exists(status)) throw file_error(root, "no such folder");
  if (!fs::is_directory(status)) throw file_error(root, "not a folder");
  const std::vector<fs::path> class_dirs = list_entries(root, /*folders=*/true);
  if (class_dirs.empty()) throw file_error(root, "no class subfolders");

  int64_t height = 0, width = 0, image_channels = 0;
  std::string first_file;
  std::vector<uint8_t> pixels;  // (N, C, H, W)
  std::vector<int64_t> labels;  // (N)
  std::vector<std::string> class_names;
  for (size_t label = 0; label < class_dirs.size(); ++label) {
    class_names.push_back(class_dirs[label].filename().string());
    const std::vector<fs::path> files = list_entries(class_dirs[label], /*folders=*/false);
    if (files.empty()) throw file_error(class_dirs[label].string(), "empty class folder");
    for (const fs::path& file : files) {
      const std::string path = file.string();
      const std::vector<uint8_t> bytes = read_file_bytes(path);
      int w = 0, h = 0, stored = 0;
      std::unique_ptr<stbi_uc, StbImageDeleter> decoded(stbi_load_from_memory(
          bytes.data(), static_cast<int>(bytes.size()), &w, &h, &stored, channels));
      if (!decoded) {
        const char* reason = stbi_failure_reason();
        throw file_error(path, std::string("not a decodable image (") +
                                   (reason ? reason : "unknown format") + ")");
      }
      const int c = channels != 0 ? channels : stored;
      if (first_file.empty()) {
        first_file = path, height = h, width = w, image_channels = c;
      } else if (h != height || w != width) {
        throw file_error(path, "image is " + std::to_string(w) + "x" + std::to_string(h) +
                                   " (width x height), but " + first_file + " is " +
                                   std::to_string(width) + "x" + std::to_string(height));
      } else if (c != image_channels) {
        throw file_error(path, "image has " + std::to_string(c) + " channels, but " + first_file +
                                   " has " + std::to_string(image_channels) +
                                   " (read with channels = 1 or 3 to convert)");
      }
      // stb gives HWC interleaved bytes; the set stores CHW.
      const int64_t plane = height * width;
      const size_t base = pixels.size();
      pixels.resize(base + image_channels * plane);
      for (int64_t ch = 0; ch < image_channels; ++ch) {
        for (int64_t i = 0; i < plane; ++i) {
          pixels[base + ch * plane + i] = decoded.get()[i * image_channels + ch];
        }
      }
      labels.push_back(static_cast<int64_t>(label));
    }
  }
  const auto count = static_cast<int64_t>(labels.size());
  const auto num_classes = static_cast<int64_t>(class_names.size());
  return ImageSet(count, image_channels, height, width, std::move(pixels), std::move(labels),
                  num_classes, std::move(class_names), "image folder " + root);
}

}  // namespace retort::data
