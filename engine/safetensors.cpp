// safetensors reader and atomic writer: header validation, host staging of strided tensors, fsync.
#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>

namespace retort {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; a big-endian host would need byte swaps");

// ordered_json keeps the header's order, which becomes the order of SafetensorsFile::tensors.
using Json = nlohmann::ordered_json;

constexpr const char* kMetadataKey = "__metadata__";

[[noreturn]] void fail(const char* who, const std::string& path, const std::string& what) {
  throw std::runtime_error(std::string(who) + ": '" + path + "': " + what);
}

std::string errno_text() {
  return std::strerror(errno);
}

std::string safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "F32";
    case DType::f64:
      return "F64";
    case DType::i64:
      return "I64";
    case DType::i32:
      return "I32";
    case DType::u8:
      return "U8";
  }
  return "?";
}

std::optional<DType> parse_dtype(const std::string& name) {
  for (DType d : {DType::f32, DType::f64, DType::i64, DType::i32, DType::u8}) {
    if (safetensors_dtype_name(d) == name) return d;
  }
  return std::nullopt;
}

// Owns a file descriptor; closes it on destruction (errors ignored: only for the failure path).
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  // Closes now and reports the result (a failed close can mean lost writes).
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// --- writing -------------------------------------------------------------------------------------

// The elements of `t` in row-major order as host bytes, whatever its device and strides. Staging
// is done on bytes so every dtype works, including those without a strided-copy kernel.
std::vector<char> host_bytes(const Tensor& t) {
  const size_t elem = dtype_size(t.dtype());
  const int64_t n = t.numel();
  std::vector<char> out(static_cast<size_t>(n) * elem);
  if (n == 0) return out;
  const char* base = static_cast<const char*>(t.storage()->data());
  const Device device = t.device();
  if (t.is_contiguous()) {
    copy_bytes(out.data(), Device::cpu(), base + t.offset() * elem, device, out.size());
    return out;
  }
  const Shape& shape = t.shape();
  const Shape& strides = t.strides();
  const int ndim = static_cast<int>(shape.size());
  // Copy the span of storage the view touches, then gather on the host.
  int64_t lo = t.offset(), hi = t.offset();
  for (int d = 0; d < ndim; ++d) {
    const int64_t extent = (shape[d] - 1) * strides[d];
    (extent < 0 ? lo : hi) += extent;
  }
  std::vector<char> span(static_cast<size_t>(hi - lo + 1) * elem);
  copy_bytes(span.data(), Device::cpu(), base + lo * elem, device, span.size());
  const char* origin = span.data() + (t.offset() - lo) * static_cast<int64_t>(elem);

  const int64_t inner = shape[ndim - 1];
  const int64_t inner_stride = strides[ndim - 1];
  const int64_t rows = n / inner;
  std::vector<int64_t> index(static_cast<size_t>(ndim), 0);
  int64_t pos = 0;  // element offset of the current row's first element from `origin`
  char* dst = out.data();
  for (int64_t r = 0; r < rows; ++r) {
    if (inner_stride == 1) {
      std::memcpy(dst, origin + pos * static_cast<int64_t>(elem), inner * elem);
      dst += inner * elem;
    } else {
      for (int64_t j = 0; j < inner; ++j, dst += elem) {
        std::memcpy(dst, origin + (pos + j * inner_stride) * static_cast<int64_t>(elem), elem);
      }
    }
    for (int d = ndim - 2; d >= 0; --d) {
      pos += strides[d];
      if (++index[d] < shape[d]) break;
      pos -= shape[d] * strides[d];
      index[d] = 0;
    }
  }
  return out;
}

void write_all(int fd, const char* data, size_t bytes, const std::string& path,
               const std::string& tmp_path) {
  while (bytes > 0) {
    const ssize_t written = ::write(fd, data, bytes);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail("save_safetensors", path, "cannot write " + tmp_path + ": " + errno_text());
    }
    data += written;
    bytes -= static_cast<size_t>(written);
  }
}

// Removes the temporary file unless the save got as far as renaming it.
struct TempFileGuard {
  std::string path;
  bool committed = false;
  ~TempFileGuard() {
    if (!committed) ::unlink(path.c_str());
  }
};

std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// --- reading -------------------------------------------------------------------------------------

void read_at(int fd, char* dst, size_t bytes, uint64_t offset, const std::string& path,
             const std::string& what) {
  while (bytes > 0) {
    const ssize_t got = ::pread(fd, dst, bytes, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      fail("load_safetensors", path, "cannot read " + what + ": " + errno_text());
    }
    if (got == 0) fail("load_safetensors", path, "file ended while reading " + what);
    dst += got;
    bytes -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

// Parses the header, rejecting duplicate keys in any object (nlohmann would keep the last one).
Json parse_header(const std::string& text, const std::string& path) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool duplicate_is_tensor = false;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open_objects.empty() && duplicate.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second) {
          duplicate = parsed.get<std::string>();
          duplicate_is_tensor = open_objects.size() == 1;
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, callback);
  } catch (const Json::exception& e) {
    fail("load_safetensors", path, std::string("bad JSON header: ") + e.what());
  }
  if (!duplicate.empty()) {
    fail("load_safetensors", path,
         duplicate_is_tensor ? "duplicate tensor name '" + duplicate + "' in the header"
                             : "duplicate key '" + duplicate + "' in the header");
  }
  if (!header.is_object()) {
    fail("load_safetensors", path,
         std::string("bad JSON header: expected an object, got ") + header.type_name());
  }
  return header;
}

// A JSON value that must be a non-negative integer (shape entries and offsets).
uint64_t read_unsigned(const Json& value, const std::string& path, const std::string& where) {
  if (!value.is_number_unsigned()) {
    fail("load_safetensors", path, where + " must be a non-negative integer, got " + value.dump());
  }
  return value.get<uint64_t>();
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& name, const Json& info, uint64_t data_bytes,
                  const std::string& path) {
  const std::string where = "tensor '" + name + "'";
  if (!info.is_object()) fail("load_safetensors", path, where + ": entry is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!info.contains(field)) {
      fail("load_safetensors", path, where + ": missing \"" + field + "\"");
    }
  }
  Entry e;
  e.name = name;
  const Json& dtype = info.at("dtype");
  if (!dtype.is_string()) fail("load_safetensors", path, where + ": dtype is not a string");
  const auto parsed = parse_dtype(dtype.get<std::string>());
  if (!parsed) {
    fail("load_safetensors", path,
         where + ": unknown or unsupported dtype '" + dtype.get<std::string>() +
             "' (retort reads F32, F64, I64, I32, U8)");
  }
  e.dtype = *parsed;

  const Json& shape = info.at("shape");
  if (!shape.is_array()) fail("load_safetensors", path, where + ": shape is not an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const Json& dim : shape) {
    const uint64_t d = read_unsigned(dim, path, where + ": shape entry");
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
    overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
    e.shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t expected_bytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(e.dtype), &expected_bytes);
  if (overflow) fail("load_safetensors", path, where + ": shape " + shape.dump() + " overflows");

  const Json& offsets = info.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    fail("load_safetensors", path, where + ": data_offsets must be [begin, end]");
  }
  e.begin = read_unsigned(offsets[0], path, where + ": data_offsets");
  e.end = read_unsigned(offsets[1], path, where + ": data_offsets");
  if (e.begin > e.end || e.end > data_bytes) {
    fail("load_safetensors", path,
         where + ": data_offsets " + offsets.dump() + " out of range (the data section holds " +
             std::to_string(data_bytes) + " bytes)");
  }
  if (e.end - e.begin != expected_bytes) {
    fail("load_safetensors", path,
         where + ": data_offsets " + offsets.dump() + " span " + std::to_string(e.end - e.begin) +
             " bytes but shape " + shape.dump() + " of " + dtype.get<std::string>() + " needs " +
             std::to_string(expected_bytes));
  }
  return e;
}

std::map<std::string, std::string> parse_metadata(const Json& value, const std::string& path) {
  if (!value.is_object()) {
    fail("load_safetensors", path, "__metadata__ must be an object of strings");
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      fail("load_safetensors", path,
           "__metadata__ value of '" + key + "' is not a string: " + item.dump());
    }
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

}  // namespace

bool SafetensorsFile::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(),
                     [&](const auto& entry) { return entry.first == name; });
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  for (const auto& [key, tensor] : tensors) {
    if (key == name) return tensor;
  }
  throw std::runtime_error("safetensors: '" + path + "' has no tensor named '" + name + "' (" +
                           std::to_string(tensors.size()) + " tensors)");
}

const std::string& SafetensorsFile::metadata_at(const std::string& key) const {
  const auto it = metadata.find(key);
  if (it == metadata.end()) {
    throw std::runtime_error("safetensors: '" + path + "' has no metadata key '" + key + "'");
  }
  return it->second;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  constexpr const char* kWho = "save_safetensors";
  // Validate and lay out everything before touching the file system.
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = meta;
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty()) fail(kWho, path, "a tensor has an empty name");
    if (name == kMetadataKey) fail(kWho, path, "a tensor may not be called __metadata__");
    if (!names.insert(name).second) fail(kWho, path, "duplicate tensor name '" + name + "'");
    if (!tensor.defined()) fail(kWho, path, "tensor '" + name + "' is undefined");
    const uint64_t bytes = static_cast<uint64_t>(tensor.numel()) * dtype_size(tensor.dtype());
    Json info = Json::object();
    info["dtype"] = safetensors_dtype_name(tensor.dtype());
    info["shape"] = tensor.shape();
    info["data_offsets"] = {offset, offset + bytes};
    header[name] = info;
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {
    fail(kWho, path, std::string("cannot encode the header (names must be UTF-8): ") + e.what());
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);

  const std::string tmp_path = path + ".tmp";
  FileDescriptor fd(::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) fail(kWho, path, "cannot create " + tmp_path + ": " + errno_text());
  TempFileGuard guard{tmp_path};
  write_all(fd.get(), length, sizeof(length), path, tmp_path);
  write_all(fd.get(), text.data(), text.size(), path, tmp_path);
  for (const auto& entry : tensors) {
    const std::vector<char> bytes = host_bytes(entry.second);
    write_all(fd.get(), bytes.data(), bytes.size(), path, tmp_path);
  }
  if (::fsync(fd.get()) != 0) fail(kWho, path, "cannot fsync " + tmp_path + ": " + errno_text());
  if (fd.close() != 0) fail(kWho, path, "cannot close " + tmp_path + ": " + errno_text());
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    fail(kWho, path, "cannot rename " + tmp_path + " over it: " + errno_text());
  }
  guard.committed = true;
  // Make the rename itself durable; the data is already safe, so a failure here is not an error.
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  constexpr const char* kWho = "load_safetensors";
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail(kWho, path, "cannot open: " + errno_text());
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) fail(kWho, path, "cannot stat: " + errno_text());
  if (!S_ISREG(info.st_mode)) fail(kWho, path, "cannot open: not a regular file");
  const uint64_t file_bytes = static_cast<uint64_t>(info.st_size);
  if (file_bytes < 8) {
    fail(kWho, path,
         "truncated header: " + std::to_string(file_bytes) +
             " bytes, too short for the 8-byte header length");
  }
  unsigned char length_bytes[8];
  read_at(fd.get(), reinterpret_cast<char*>(length_bytes), 8, 0, path, "the header length");
  uint64_t header_bytes = 0;
  for (int i = 0; i < 8; ++i) header_bytes |= static_cast<uint64_t>(length_bytes[i]) << (8 * i);
  if (header_bytes > file_bytes - 8) {
    fail(kWho, path,
         "header length " + std::to_string(header_bytes) + " is larger than the file (" +
             std::to_string(file_bytes) + " bytes)");
  }
  std::string text(header_bytes, '\0');
  read_at(fd.get(), text.data(), text.size(), 8, path, "the header");
  const Json header = parse_header(text, path);
  const uint64_t data_start = 8 + header_bytes;
  const uint64_t data_bytes = file_bytes - data_start;

  SafetensorsFile file;
  file.path = path;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      file.metadata = parse_metadata(value, path);
    } else {
      entries.push_back(parse_entry(name, value, data_bytes, path));
    }
  }
  // Non-empty byte ranges may not share a byte.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) {
    if (e.end > e.begin) by_offset.push_back(&e);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& prev = *by_offset[i - 1];
    const Entry& next = *by_offset[i];
    if (next.begin < prev.end) {
      fail(kWho, path,
           "data of tensors '" + prev.name + "' [" + std::to_string(prev.begin) + ", " +
               std::to_string(prev.end) + ") and '" + next.name + "' [" +
               std::to_string(next.begin) + ", " + std::to_string(next.end) + ") overlap");
    }
  }
  file.tensors.reserve(entries.size());
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, Device::cpu());
    read_at(fd.get(), static_cast<char*>(t.raw_data()), e.end - e.begin, data_start + e.begin, path,
            "the data of tensor '" + e.name + "'");
    file.tensors.emplace_back(e.name, std::move(t));
  }
  return file;
}

}  // namespace retort
