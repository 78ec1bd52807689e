// safetensors: bit-exact round trips for every dtype and strided views, the byte layout, metadata,
// every corrupt-file error, and atomic saves that leave nothing behind when they fail.
#include "engine/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace retort::test {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("retort_safetensors_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// The raw bytes of a tensor's elements in row-major order, for bit-exact comparison (NaN too).
template <typename T>
std::vector<char> bytes_of(const std::vector<T>& values) {
  std::vector<char> out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::vector<char> bytes_of(const Tensor& t) {
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_TRUE(t.is_contiguous());
  const auto* p = static_cast<const char*>(t.raw_data());
  return std::vector<char>(p, p + t.numel() * dtype_size(t.dtype()));
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes a file by hand: the 8-byte little-endian length, the header text, then `data`.
void write_raw(const std::string& path, const std::string& header, const std::string& data = "",
               int64_t declared_length = -1) {
  const uint64_t n = declared_length >= 0 ? static_cast<uint64_t>(declared_length) : header.size();
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

// Expects load_safetensors(path) to throw a std::runtime_error naming the file and `what`.
::testing::AssertionResult load_fails_with(const std::string& path, const std::string& what) {
  try {
    load_safetensors(path);
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    if (message.find(path) == std::string::npos) {
      return ::testing::AssertionFailure() << "message does not name the file: " << message;
    }
    if (message.find(what) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks '" << what << "': " << message;
    }
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no std::runtime_error for " << path;
}

TEST_F(Safetensors, RoundTripIsBitExactForEveryDtype) {
  const double nan_payload = std::bit_cast<double>(0x7ff8'0000'dead'beefULL);
  const std::vector<double> f64 = {0.1,
                                   -0.0,
                                   std::numeric_limits<double>::infinity(),
                                   nan_payload,
                                   std::numeric_limits<double>::denorm_min(),
                                   -1e308};
  const std::vector<float> f32 = {1.5f,
                                  -0.0f,
                                  std::numeric_limits<float>::quiet_NaN(),
                                  std::numeric_limits<float>::denorm_min(),
                                  3.4e38f,
                                  -7.25f};
  const std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), -1, 0, 1,
                                    std::numeric_limits<int64_t>::max(), 42};
  const std::vector<int32_t> i32 = {std::numeric_limits<int32_t>::min(), -5, 0, 7,
                                    std::numeric_limits<int32_t>::max(), 9};
  const std::vector<uint8_t> u8 = {0, 1, 127, 128, 254, 255};
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"layer1.0.conv1.weight", Tensor::from_vector(f32, {2, 3})},
      {"bn1.running_mean", Tensor::from_vector(f64, {3, 1, 2})},
      {"labels", Tensor::from_vector(i64, {6})},
      {"argmax", Tensor::from_vector(i32, {1, 6})},
      {"image", Tensor::from_vector(u8, {2, 3})},
      {"scalar", Tensor::from_vector<double>({2.5}, {})},
      {"empty", Tensor::empty({0, 3}, DType::f32)},
  };
  const std::string path = file("all.safetensors");
  save_safetensors(path, tensors);
  const SafetensorsFile loaded = load_safetensors(path);

  ASSERT_EQ(loaded.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, expected] = tensors[i];
    const auto& [loaded_name, actual] = loaded.tensors[i];
    EXPECT_EQ(loaded_name, name) << "header order is kept";
    EXPECT_EQ(actual.dtype(), expected.dtype()) << name;
    EXPECT_EQ(actual.shape(), expected.shape()) << name;
    EXPECT_TRUE(actual.device().is_cpu()) << name;
    EXPECT_EQ(bytes_of(actual), bytes_of(expected)) << name;
  }
  EXPECT_EQ(bytes_of(loaded.at("bn1.running_mean")), bytes_of(f64));
  EXPECT_TRUE(loaded.metadata.empty());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(Safetensors, NonContiguousViewsAreSavedInRowMajorOrder) {
  // (3, 4) f64 transposed: strides (1, 4).
  std::vector<double> f64(12);
  for (size_t i = 0; i < f64.size(); ++i) f64[i] = 0.5 * static_cast<double>(i) - 1.0 / 3.0;
  const Tensor f64_t = Tensor::from_vector(f64, {3, 4}).transpose(0, 1);
  std::vector<double> f64_expected;
  for (int c = 0; c < 4; ++c) {
    for (int r = 0; r < 3; ++r) f64_expected.push_back(f64[r * 4 + c]);
  }
  // (3, 4) i32 narrowed to columns 1..2: offset 1, inner stride 1, row stride 4.
  std::vector<int32_t> i32(12);
  for (size_t i = 0; i < i32.size(); ++i) i32[i] = static_cast<int32_t>(i * 1000003) - 5000;
  const Tensor i32_n = Tensor::from_vector(i32, {3, 4}).narrow(1, 1, 2);
  std::vector<int32_t> i32_expected;
  for (int r = 0; r < 3; ++r) {
    for (int c = 1; c < 3; ++c) i32_expected.push_back(i32[r * 4 + c]);
  }
  // (2, 3, 4) u8, dims 0 and 2 swapped then the middle narrowed: a 3-d gather with an offset.
  std::vector<uint8_t> u8(24);
  for (size_t i = 0; i < u8.size(); ++i) u8[i] = static_cast<uint8_t>(i * 11);
  const Tensor u8_v = Tensor::from_vector(u8, {2, 3, 4}).transpose(0, 2).narrow(1, 1, 2);
  std::vector<uint8_t> u8_expected;
  for (int a = 0; a < 4; ++a) {
    for (int b = 1; b < 3; ++b) {
      for (int c = 0; c < 2; ++c) u8_expected.push_back(u8[c * 12 + b * 4 + a]);
    }
  }
  // (2, 3) i64 transposed, then row 1 only: a 1-d view with stride 3 and offset 1.
  const std::vector<int64_t> i64 = {10, -20, 30, -40, 50, -60};
  const Tensor i64_v = Tensor::from_vector(i64, {2, 3}).transpose(0, 1).narrow(0, 1, 1);
  const std::vector<int64_t> i64_expected = {-20, 50};
  ASSERT_FALSE(f64_t.is_contiguous());
  ASSERT_FALSE(i32_n.is_contiguous());
  ASSERT_FALSE(u8_v.is_contiguous());
  ASSERT_FALSE(i64_v.is_contiguous());

  const std::string path = file("views.safetensors");
  save_safetensors(path, {{"f64", f64_t}, {"i32", i32_n}, {"u8", u8_v}, {"i64", i64_v}});
  const SafetensorsFile loaded = load_safetensors(path);
  EXPECT_EQ(loaded.at("f64").shape(), (Shape{4, 3}));
  EXPECT_EQ(bytes_of(loaded.at("f64")), bytes_of(f64_expected));
  EXPECT_EQ(loaded.at("i32").shape(), (Shape{3, 2}));
  EXPECT_EQ(bytes_of(loaded.at("i32")), bytes_of(i32_expected));
  EXPECT_EQ(loaded.at("u8").shape(), (Shape{4, 2, 2}));
  EXPECT_EQ(bytes_of(loaded.at("u8")), bytes_of(u8_expected));
  EXPECT_EQ(loaded.at("i64").shape(), (Shape{1, 2}));
  EXPECT_EQ(bytes_of(loaded.at("i64")), bytes_of(i64_expected));
}

TEST_F(Safetensors, CudaTensorsAreCopiedToTheHost) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device in this build or machine";
  std::vector<float> values(20);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.25f * static_cast<float>(i) - 2.0f;
  const Tensor gpu = Tensor::from_vector(values, {4, 5}).to(Device::cuda());
  const std::string path = file("cuda.safetensors");
  save_safetensors(path, {{"plain", gpu}, {"transposed", gpu.transpose(0, 1)}});
  const SafetensorsFile loaded = load_safetensors(path);
  EXPECT_EQ(bytes_of(loaded.at("plain")), bytes_of(values));
  std::vector<float> transposed;
  for (int c = 0; c < 5; ++c) {
    for (int r = 0; r < 4; ++r) transposed.push_back(values[r * 5 + c]);
  }
  EXPECT_EQ(bytes_of(loaded.at("transposed")), bytes_of(transposed));
}

TEST_F(Safetensors, WritesTheReferenceByteLayout) {
  const std::string path = file("layout.safetensors");
  save_safetensors(path, {{"w", Tensor::from_vector<float>({1.0f, -2.0f}, {2})}},
                   {{"format", "pt"}});
  // Header padded with spaces to a multiple of 8, as the reference writer does.
  std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string expected;
  for (int i = 0; i < 8; ++i)
    expected.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  expected += header;
  const float data[2] = {1.0f, -2.0f};
  expected.append(reinterpret_cast<const char*>(data), sizeof(data));
  EXPECT_EQ(read_file_bytes(path), expected);
}

TEST_F(Safetensors, MetadataRoundTrips) {
  const std::string path = file("meta.safetensors");
  const std::map<std::string, std::string> metadata = {
      {"epoch", "17"}, {"model", "resnet8x4"}, {"note", "quotes \" and unicode \u00e9"}};
  save_safetensors(path, {{"x", Tensor::ones({2}, DType::f64)}}, metadata);
  const SafetensorsFile loaded = load_safetensors(path);
  EXPECT_EQ(loaded.metadata, metadata);
  EXPECT_EQ(loaded.metadata_at("epoch"), "17");
  EXPECT_THROW(loaded.metadata_at("lr"), std::runtime_error);
}

TEST_F(Safetensors, LookupOfAMissingNameNamesTheKeyAndTheFile) {
  const std::string path = file("lookup.safetensors");
  save_safetensors(path, {{"present", Tensor::zeros({1})}});
  const SafetensorsFile loaded = load_safetensors(path);
  EXPECT_TRUE(loaded.contains("present"));
  EXPECT_FALSE(loaded.contains("absent"));
  try {
    loaded.at("absent");
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'absent'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST_F(Safetensors, SavingOverAnExistingFileReplacesIt) {
  const std::string path = file("ckpt.safetensors");
  save_safetensors(path, {{"a", Tensor::zeros({100})}});
  save_safetensors(path, {{"b", Tensor::ones({3}, DType::f64)}});
  const SafetensorsFile loaded = load_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), 1u);
  EXPECT_EQ(loaded.tensors[0].first, "b");
  EXPECT_EQ(loaded.at("b").to_vector<double>(), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(Safetensors, CorruptFilesGiveErrorsNamingTheFile) {
  const std::string f32x2 = R"("dtype":"F32","shape":[2])";
  const std::string eight(8, '\0');
  struct Case {
    const char* name;
    std::string header, data;
    int64_t declared_length;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"bad_json", R"({"w": {"dtype": )", eight, -1, "bad JSON"},
      {"not_object", "[1, 2]", "", -1, "expected an object"},
      {"entry_not_object", R"({"w": 3})", "", -1, "not a JSON object"},
      {"missing_field", R"({"w":{"dtype":"F32","shape":[2]}})", eight, -1, "missing"},
      {"unknown_dtype", R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", eight, -1,
       "unsupported dtype 'F16'"},
      {"bad_dtype_type", R"({"w":{"dtype":4,"shape":[4],"data_offsets":[0,8]}})", eight, -1,
       "dtype is not a string"},
      {"negative_dim", R"({"w":{"dtype":"U8","shape":[-8],"data_offsets":[0,8]}})", eight, -1,
       "non-negative"},
      {"fractional_dim", R"({"w":{"dtype":"U8","shape":[8.0],"data_offsets":[0,8]}})", eight, -1,
       "non-negative integer"},
      {"shape_overflow",
       R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight, -1,
       "overflows"},
      {"offsets_past_end", "{\"w\":{" + f32x2 + R"(,"data_offsets":[0,16]}})", eight, -1,
       "out of range"},
      {"offsets_reversed", "{\"w\":{" + f32x2 + R"(,"data_offsets":[8,0]}})", eight, -1,
       "out of range"},
      {"offsets_wrong_arity", "{\"w\":{" + f32x2 + R"(,"data_offsets":[0]}})", eight, -1,
       "data_offsets must be [begin, end]"},
      {"size_mismatch", R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", eight, -1,
       "needs 16"},
      {"overlap",
       "{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 +
           R"(,"data_offsets":[4,12]}})",
       std::string(12, '\0'), -1, "overlap"},
      {"duplicate_name",
       "{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]},"a":{)" + f32x2 +
           R"(,"data_offsets":[8,16]}})",
       std::string(16, '\0'), -1, "duplicate tensor name 'a'"},
      {"duplicate_field", "{\"a\":{" + f32x2 + R"(,"shape":[2],"data_offsets":[0,8]}})", eight, -1,
       "duplicate key 'shape'"},
      {"metadata_not_object", R"({"__metadata__":[1]})", "", -1, "__metadata__"},
      {"metadata_not_string", R"({"__metadata__":{"epoch":3}})", "", -1, "'epoch'"},
      {"truncated_data", "{\"w\":{" + f32x2 + R"(,"data_offsets":[0,8]}})", "abc", -1,
       "out of range"},
      {"length_past_end", "{}", "", 1000, "larger than the file"},
      {"huge_length", "{}", "", std::numeric_limits<int64_t>::max(), "larger than the file"},
  };
  for (const Case& c : cases) {
    const std::string path = file(std::string(c.name) + ".safetensors");
    write_raw(path, c.header, c.data, c.declared_length);
    EXPECT_TRUE(load_fails_with(path, c.message)) << c.name;
  }

  const std::string short_file = file("short.safetensors");
  std::ofstream(short_file, std::ios::binary).write("\x10\0\0", 3);
  EXPECT_TRUE(load_fails_with(short_file, "truncated header"));
  const std::string empty_file = file("empty.safetensors");
  std::ofstream(empty_file, std::ios::binary).flush();
  EXPECT_TRUE(load_fails_with(empty_file, "truncated header"));
  EXPECT_TRUE(load_fails_with(file("missing.safetensors"), "cannot open"));
  EXPECT_TRUE(load_fails_with(dir_.string(), "not a regular file"));
}

TEST_F(Safetensors, ValidFilesFromOtherWritersAreAccepted) {
  // Keys in any order, data in another order than the header, gaps, an empty tensor, padding.
  const std::string header = R"({"b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},)"
                             R"("z":{"dtype":"F32","shape":[0,4],"data_offsets":[4,4]},)"
                             R"("a":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}})"
                             "      ";
  const std::string data =
      std::string("\x01\x02\x03\x04", 4) + "pad!" + std::string("\x07\0\0\0", 4);
  const std::string path = file("other.safetensors");
  write_raw(path, header, data);
  const SafetensorsFile loaded = load_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), 3u);
  EXPECT_EQ(loaded.tensors[0].first, "b");
  EXPECT_EQ(loaded.tensors[1].first, "z");
  EXPECT_EQ(loaded.tensors[2].first, "a");
  EXPECT_EQ(loaded.at("b").to_vector<int32_t>(), (std::vector<int32_t>{7}));
  EXPECT_EQ(loaded.at("z").shape(), (Shape{0, 4}));
  EXPECT_EQ(loaded.at("a").to_vector<uint8_t>(), (std::vector<uint8_t>{1, 2, 3, 4}));
}

// A save that fails must leave neither the target nor the temporary file.
TEST_F(Safetensors, FailedSavesLeaveNothingBehind) {
  const std::vector<std::pair<std::string, Tensor>> tensors = {{"x", Tensor::ones({4})}};
  const fs::path missing_dir = dir_ / "no_such_dir";
  const std::string in_missing = (missing_dir / "ckpt.safetensors").string();
  try {
    save_safetensors(in_missing, tensors);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(in_missing), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(missing_dir));

  // The rename fails when the target is a non-empty directory: the written temp file must go.
  const fs::path blocking = dir_ / "blocking.safetensors";
  fs::create_directories(blocking / "inside");
  try {
    save_safetensors(blocking.string(), tensors);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(blocking.string()), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(blocking.string() + ".tmp"));
  EXPECT_TRUE(fs::is_directory(blocking));

  // Invalid input is rejected before any file is created.
  const std::string target = file("bad.safetensors");
  EXPECT_THROW(save_safetensors(target, {{"a", Tensor::ones({1})}, {"a", Tensor::ones({1})}}),
               std::runtime_error);
  EXPECT_THROW(save_safetensors(target, {{"a", Tensor()}}), std::runtime_error);
  EXPECT_THROW(save_safetensors(target, {{"", Tensor::ones({1})}}), std::runtime_error);
  EXPECT_THROW(save_safetensors(target, {{"__metadata__", Tensor::ones({1})}}), std::runtime_error);
  EXPECT_FALSE(fs::exists(target));
  EXPECT_FALSE(fs::exists(target + ".tmp"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

}  // namespace
}  // namespace retort::test
