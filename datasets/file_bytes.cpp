// Whole-file reads with transparent gzip decompression (zlib), for the dataset readers.
#include "datasets/file_bytes.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

namespace retort::data {
namespace {

bool is_gzip(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

// Releases a z_stream's inflate state on every path out of a scope.
struct InflateEnd {
  z_stream* stream;
  ~InflateEnd() { inflateEnd(stream); }
};

// Inflates every gzip member in `compressed` (gzip allows several back to back).
std::vector<uint8_t> gunzip(const std::string& path, const std::vector<uint8_t>& compressed) {
  std::vector<uint8_t> out;
  // The trailer's ISIZE is the last member's size mod 2^32: a good first guess for one member.
  // In a damaged file it is noise, so it is capped by deflate's best ratio (1032:1) and 1 GiB.
  if (compressed.size() >= 18) {
    const size_t n = compressed.size();
    const size_t isize = uint32_t{compressed[n - 4]} | uint32_t{compressed[n - 3]} << 8 |
                         uint32_t{compressed[n - 2]} << 16 | uint32_t{compressed[n - 1]} << 24;
    out.reserve(std::min({isize, 1032 * n, size_t{1} << 30}));
  }
  size_t consumed = 0;
  while (consumed < compressed.size()) {
    z_stream stream{};
    // 15 + 16: a gzip wrapper, with the largest window.
    if (inflateInit2(&stream, 15 + 16) != Z_OK) throw file_error(path, "zlib inflateInit2 failed");
    const InflateEnd end_stream{&stream};
    size_t fed = consumed;  // input handed to zlib so far (avail_in is 32-bit)
    int status = Z_OK;
    while (status != Z_STREAM_END) {
      if (stream.avail_in == 0 && fed < compressed.size()) {
        stream.next_in = const_cast<Bytef*>(compressed.data() + fed);
        stream.avail_in = static_cast<uInt>(
            std::min<size_t>(compressed.size() - fed, std::numeric_limits<uInt>::max()));
        fed += stream.avail_in;
      }
      // Output in steps of at most 1 MiB, within the reserved capacity while it lasts: only a
      // step is zero-filled ahead of inflate, and the vector grows geometrically past the hint.
      constexpr size_t kStep = size_t{1} << 20;
      const size_t before = out.size();
      const size_t room = out.capacity() - before;
      const size_t step = room >= 65536 ? std::min(room, kStep) : kStep;
      out.resize(before + step);
      stream.next_out = out.data() + before;
      stream.avail_out = static_cast<uInt>(step);
      status = inflate(&stream, Z_NO_FLUSH);
      out.resize(before + (step - stream.avail_out));
      const bool input_left = stream.avail_in != 0 || fed < compressed.size();
      if (status == Z_BUF_ERROR || (status == Z_OK && !input_left && stream.avail_out != 0)) {
        throw file_error(path, "truncated gzip stream (the compressed data ends early)");
      }
      if (status != Z_OK && status != Z_STREAM_END) {
        const std::string message = stream.msg ? stream.msg : zError(status);
        throw file_error(path, "corrupt gzip data (" + message + ")");
      }
    }
    consumed = fed - stream.avail_in;
    // Padding zeros after the last member are allowed (some tools write them).
    bool only_zeros = true;
    for (size_t i = consumed; i < compressed.size() && only_zeros; ++i) {
      only_zeros = compressed[i] == 0;
    }
    if (only_zeros) break;
  }
  return out;
}

}  // namespace

std::runtime_error file_error(const std::string& path, const std::string& what) {
  return std::runtime_error(path + ": " + what);
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw file_error(path, "no such file");
  if (std::filesystem::is_directory(status)) throw file_error(path, "is a directory, not a file");
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw file_error(path, std::string("cannot open: ") + std::strerror(errno));
  const std::streamsize size = file.tellg();
  if (size < 0) throw file_error(path, "cannot determine the file size");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  file.seekg(0);
  if (size > 0 && !file.read(reinterpret_cast<char*>(bytes.data()), size)) {
    throw file_error(path, std::string("read error: ") + std::strerror(errno));
  }
  return is_gzip(bytes) ? gunzip(path, bytes) : bytes;
}

}  // namespace retort::data
