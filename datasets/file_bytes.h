// Whole-file reads for the readers: plain or gzip (detected by content), errors naming the file.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace retort::data {

// The reader error: std::runtime_error whose one-line message is "<path>: <what>".
std::runtime_error file_error(const std::string& path, const std::string& what);

// The file's bytes; when they start with the gzip magic (1f 8b) the decompressed bytes instead,
// whatever the file's name. Throws file_error for a missing or unreadable path, a directory, and a
// truncated or corrupt gzip stream.
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace retort::data
