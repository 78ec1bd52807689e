// The `retort` binary: help, flag errors, damaged data files, and the info command's counts.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;

struct Result {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

Result run(const std::string& args) {
  const std::string command = std::string(RETORT_BINARY) + " " + args + " 2>&1";
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) r.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("retort_cli_test_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// A data error must be one line naming the file, with a non-zero exit and no run directory.
void expect_data_error(const std::string& args, const std::string& file, const fs::path& run_dir) {
  const Result r = run(args + " --run-dir " + run_dir.string() + " --epochs 1");
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("retort: error: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(file), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_FALSE(fs::exists(run_dir)) << "partial output left in " << run_dir;
}

TEST(Cli, HelpListsTheSubcommands) {
  const Result r = run("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"train", "eval", "info"}) {
    EXPECT_NE(r.out.find(sub), std::string::npos) << r.out;
  }
  const Result train = run("train --help");
  EXPECT_EQ(train.exit_code, 0);
  EXPECT_NE(train.out.find("--epochs"), std::string::npos);
  EXPECT_NE(train.out.find("--resume"), std::string::npos);
}

TEST(Cli, BadFlagsNameTheFlag) {
  Result r = run("train --epochs 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--epochs"), std::string::npos) << r.out;
  r = run("train --device tpu");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--device"), std::string::npos) << r.out;
  r = run("train --dataset imagenet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--dataset"), std::string::npos) << r.out;
}

TEST(Cli, DamagedIdxFilesGiveOneLineErrors) {
  const fs::path dir = scratch("idx");
  const std::string labels = be32(0x801) + be32(2) + std::string("\x01\x02", 2);
  // Truncated: the header promises 2 images of 4x4, the file holds 10 pixel bytes.
  write_bytes(dir / "trunc/train-images-idx3-ubyte.gz",
              be32(0x803) + be32(2) + be32(4) + be32(4) + std::string(10, '\x07'));
  write_bytes(dir / "trunc/train-labels-idx1-ubyte.gz", labels);
  expect_data_error("train --dataset mnist --data-dir " + (dir / "trunc").string(),
                    "train-images-idx3-ubyte.gz", dir / "run1");
  // Wrong magic number.
  write_bytes(dir / "magic/train-images-idx3-ubyte.gz",
              be32(0x1234) + be32(2) + be32(4) + be32(4) + std::string(32, '\x07'));
  write_bytes(dir / "magic/train-labels-idx1-ubyte.gz", labels);
  expect_data_error("train --dataset mnist --data-dir " + (dir / "magic").string(),
                    "train-images-idx3-ubyte.gz", dir / "run2");
}

TEST(Cli, DamagedCifarAndFoldersGiveOneLineErrors) {
  const fs::path dir = scratch("cifar");
  write_bytes(dir / "c10/data_batch_1.bin", std::string(3073 + 100, '\x01'));
  expect_data_error("train --dataset cifar10 --data-dir " + (dir / "c10").string(),
                    "data_batch_1.bin", dir / "run1");

  fs::create_directories(dir / "empty/train/cat");
  fs::create_directories(dir / "empty/train/dog");
  write_bytes(dir / "empty/train/cat/a.pgm", "P5\n2 2\n255\n\x01\x02\x03\x04");
  expect_data_error("train --dataset folder --data-dir " + (dir / "empty").string(),
                    (dir / "empty/train/dog").string(), dir / "run2");

  write_bytes(dir / "notimg/train/cat/a.pgm", "P5\n2 2\n255\n\x01\x02\x03\x04");
  write_bytes(dir / "notimg/train/dog/b.png", "this is not an image");
  expect_data_error("train --dataset folder --data-dir " + (dir / "notimg").string(), "b.png",
                    dir / "run3");
}

TEST(Cli, InfoCountsMatchTheModelSpec) {
  const Result r = run("info --model resnet8x4");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("1,233,540"), std::string::npos) << r.out;  // models.md, 3x32x32, 100 classes
  const Result w = run("info --model wrn_40_2");
  EXPECT_NE(w.out.find("2,255,156"), std::string::npos) << w.out;
}

}  // namespace
