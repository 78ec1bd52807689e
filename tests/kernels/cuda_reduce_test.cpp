// CPU-vs-CUDA parity of reduce_sum over dimension sets, and run-to-run bitwise reproducibility.
#include "kernels/reduce.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <string>
#include <vector>

#include "tests/kernels/cuda_test_util.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::kernels {
namespace {

using test::all_close;
using test::bitwise_equal;
using test::CudaParityTest;
using test::DeviceArray;
using test::kParityF32Abs;
using test::kParityF32Rel;
using test::poisoned_output;
using test::random_vector;

using CudaReduceTest = CudaParityTest;

struct ReduceCase {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<bool> reduce;
};

ReduceShape make_shape(const ReduceCase& c) {
  ReduceShape s;
  s.ndim = static_cast<int>(c.shape.size());
  for (int d = 0; d < s.ndim; ++d) s.shape[d] = c.shape[d], s.reduce[d] = c.reduce[d];
  return s;
}

int64_t count(const ReduceShape& s, bool reduced) {
  int64_t n = 1;
  for (int d = 0; d < s.ndim; ++d) {
    if (s.reduce[d] == reduced) n *= s.shape[d];
  }
  return n;
}

// Covers both kernel shapes (innermost dimension summed or kept), several reduced runs, size-1
// dimensions, and sizes large enough to split the sum into chunks (two passes).
const ReduceCase kCases[] = {
    {"all of a vector", {7}, {true}},
    {"rows", {3, 5}, {false, true}},
    {"columns", {3, 5}, {true, false}},
    {"batch-norm axes (N, H, W)", {2, 3, 4, 5}, {true, false, true, true}},
    {"channels only", {2, 3, 4, 5}, {false, true, false, false}},
    {"outer and inner", {2, 3, 4, 5}, {true, false, false, true}},
    {"nothing reduced", {2, 3}, {false, false}},
    {"size-1 dims", {1, 6, 1, 4}, {true, false, true, true}},
    {"long rows", {64, 3000}, {false, true}},
    {"long vector (chunked)", {100003}, {true}},
    {"long columns (chunked)", {50001, 3}, {true, false}},
    {"long rows, few of them (chunked)", {3, 50001}, {false, true}},
    {"bias gradient (N, C)", {128, 100}, {true, false}},
    {"global pool grad (N, C, H*W)", {16, 32, 64}, {false, false, true}},
    {"alternating", {3, 4, 5, 6, 7}, {true, false, true, false, true}},
};

TEST_F(CudaReduceTest, ReduceSumMatchesCpu) {
  for (const ReduceCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const ReduceShape s = make_shape(c);
    const size_t in = static_cast<size_t>(count(s, true) * count(s, false));
    const size_t out = static_cast<size_t>(count(s, false));
    const std::vector<float> x = random_vector<float>(in, 41);
    std::vector<float> y(out);
    reduce_sum(cpu, s, 0.5f, x.data(), y.data());
    DeviceArray<float> d_x(x);
    DeviceArray<float> d_y = poisoned_output(out);
    reduce_sum(gpu(), s, 0.5f, d_x.data(), d_y.data());
    EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs));
  }
}

TEST_F(CudaReduceTest, WithoutWorkspaceStillMatches) {
  mutable_gpu().workspace = nullptr;  // single-pass path only
  for (const ReduceCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const ReduceShape s = make_shape(c);
    const size_t in = static_cast<size_t>(count(s, true) * count(s, false));
    const size_t out = static_cast<size_t>(count(s, false));
    const std::vector<float> x = random_vector<float>(in, 43);
    std::vector<float> y(out);
    reduce_sum(cpu, s, 1.0f, x.data(), y.data());
    DeviceArray<float> d_x(x);
    DeviceArray<float> d_y = poisoned_output(out);
    reduce_sum(gpu(), s, 1.0f, d_x.data(), d_y.data());
    EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs));
  }
}

TEST_F(CudaReduceTest, RepeatedRunsAreBitwiseEqual) {
  for (const ReduceCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const ReduceShape s = make_shape(c);
    const size_t in = static_cast<size_t>(count(s, true) * count(s, false));
    const size_t out = static_cast<size_t>(count(s, false));
    DeviceArray<float> d_x(random_vector<float>(in, 47));
    DeviceArray<float> first = poisoned_output(out), second = poisoned_output(out);
    reduce_sum(gpu(), s, 1.0f, d_x.data(), first.data());
    reduce_sum(gpu(), s, 1.0f, d_x.data(), second.data());
    EXPECT_TRUE(bitwise_equal(first.download(), second.download()));
  }
}

TEST_F(CudaReduceTest, EmptyReductionGivesZero) {
  ReduceShape s;
  s.ndim = 2;
  s.shape[0] = 0, s.shape[1] = 3;
  s.reduce[0] = true;
  DeviceArray<float> d_x(std::vector<float>(1, 1.0f));
  DeviceArray<float> d_y = poisoned_output(3);
  reduce_sum(gpu(), s, 1.0f, d_x.data(), d_y.data());
  EXPECT_TRUE(all_close(d_y.download(), std::vector<float>(3, 0.0f), 0.0, 0.0));
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaReduceTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
