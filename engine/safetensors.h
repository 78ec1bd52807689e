// Reading and writing the safetensors file format (checkpoints PyTorch users can load).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace retort {

// The format: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the raw little-endian bytes of every tensor, offsets relative to the end of the header.
// retort reads and writes the dtypes it has: F32, F64, I64, I32, U8.

// The contents of one file, tensors in the order of its header, all on the CPU.
struct SafetensorsFile {
  std::string path;
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> metadata;

  bool contains(const std::string& name) const;
  // The tensor called `name`; throws std::runtime_error naming the key and the file when absent.
  const Tensor& at(const std::string& name) const;
  // The metadata value under `key`; throws std::runtime_error naming the key and the file.
  const std::string& metadata_at(const std::string& key) const;
};

// Writes `tensors` (any device, any strides; copied to host contiguous) and `metadata` to `path`
// atomically: the bytes go to `path + ".tmp"` in the same directory, are fsync'ed, and the file
// is renamed over `path`. On any failure the temporary file is removed and `path` is untouched.
// Names must be unique, non-empty and not "__metadata__". Throws std::runtime_error naming the
// file and the problem.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads a whole file into CPU tensors. Every defect (cannot open, truncated header, header length
// past the end of the file, bad JSON, unsupported dtype, offsets out of range, overlapping or not
// matching shape * dtype size, duplicate names, malformed metadata) is a std::runtime_error whose
// message names the file and what is wrong.
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace retort
