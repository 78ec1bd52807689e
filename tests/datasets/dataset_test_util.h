// Dataset test helpers: a scratch folder, file writers (plain, gzip, PNG) and error checks.
#pragma once

#include <gtest/gtest.h>
#include <stb/stb_image_write.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace retort::test {

// A fresh folder under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("retort_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // The path of `name` inside the folder (parent folders created).
  std::string file(const std::string& name) const {
    const auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    return p.string();
  }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("test: cannot write " + path);
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes `bytes` gzip-compressed with zlib's gzip writer.
inline void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  if (file == nullptr) throw std::runtime_error("test: cannot open " + path);
  const int written = gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(file);
  if (written != static_cast<int>(bytes.size())) throw std::runtime_error("test: gzwrite " + path);
}

// Writes an 8-bit PNG from HWC interleaved pixels.
inline void write_png(const std::string& path, int width, int height, int channels,
                      const std::vector<uint8_t>& hwc) {
  if (!stbi_write_png(path.c_str(), width, height, channels, hwc.data(), width * channels)) {
    throw std::runtime_error("test: cannot write PNG " + path);
  }
}

// Big-endian IDX file bytes: magic, dims, data.
inline std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                                      const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  auto put = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Passes when `fn` throws std::runtime_error whose message is one line, names `file` and contains
// `fragment`.
inline ::testing::AssertionResult throws_file_error(const std::function<void()>& fn,
                                                    const std::string& file,
                                                    const std::string& fragment) {
  try {
    fn();
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    if (message.find('\n') != std::string::npos) {
      return ::testing::AssertionFailure() << "message spans several lines: " << message;
    }
    if (message.find(file) == std::string::npos) {
      return ::testing::AssertionFailure() << "message does not name " << file << ": " << message;
    }
    if (message.find(fragment) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks '" << fragment << "': " << message;
    }
    return ::testing::AssertionSuccess() << message;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-runtime_error: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace retort::test
