// CPU-vs-CUDA parity of the fused SGD step over its options and buffer alignments.
#include "kernels/optim.h"

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
using test::CudaParityTest;
using test::DeviceArray;
using test::kParityF32Abs;
using test::kParityF32Rel;
using test::random_vector;

using CudaOptimTest = CudaParityTest;

struct SgdCase {
  std::string name;
  float lr, momentum, dampening, weight_decay;
  bool nesterov, first_step;
};

const SgdCase kCases[] = {
    {"plain", 0.1f, 0.0f, 0.0f, 0.0f, false, false},
    {"weight decay, no momentum", 0.05f, 0.0f, 0.0f, 5e-4f, false, false},
    {"momentum, first step", 0.1f, 0.9f, 0.0f, 5e-4f, false, true},
    {"momentum", 0.1f, 0.9f, 0.0f, 5e-4f, false, false},
    {"momentum with dampening", 0.1f, 0.9f, 0.1f, 0.0f, false, false},
    {"nesterov", 0.1f, 0.9f, 0.0f, 5e-4f, true, false},
    {"nesterov, first step", 0.2f, 0.9f, 0.0f, 1e-4f, true, true},
};

TEST_F(CudaOptimTest, SgdStepMatchesCpu) {
  for (const SgdCase& c : kCases) {
    for (int64_t n : {1, 7, 1027, 4096}) {
      for (size_t offset : {0, 1}) {
        SCOPED_TRACE(c.name + " n " + std::to_string(n) + " offset " + std::to_string(offset));
        const size_t size = static_cast<size_t>(n);
        const std::vector<float> param0 = random_vector<float>(size, 201);
        const std::vector<float> grad = random_vector<float>(size, 202);
        const std::vector<float> buf0 = random_vector<float>(size, 203);
        const bool use_buf = c.momentum != 0.0f;

        std::vector<float> param = param0, buf = buf0;
        sgd_step(cpu, n, param.data(), grad.data(), use_buf ? buf.data() : nullptr, c.lr,
                 c.momentum, c.dampening, c.weight_decay, c.nesterov, c.first_step);
        DeviceArray<float> d_param(param0, offset), d_grad(grad, offset), d_buf(buf0, offset);
        sgd_step(gpu(), n, d_param.data(), d_grad.data(), use_buf ? d_buf.data() : nullptr, c.lr,
                 c.momentum, c.dampening, c.weight_decay, c.nesterov, c.first_step);
        EXPECT_TRUE(all_close(d_param.download(), param, kParityF32Rel, kParityF32Abs)) << "param";
        EXPECT_TRUE(all_close(d_buf.download(), buf, kParityF32Rel, kParityF32Abs))
            << "momentum_buf";
      }
    }
  }
}

// The learning rate read from device memory (a graph-captured step's schedule) gives the bits of
// the same rate passed by value.
TEST_F(CudaOptimTest, LearningRateFromDeviceMemoryEqualsByValue) {
  const int64_t n = 1027;
  const std::vector<float> param0 = random_vector<float>(n, 211), grad = random_vector<float>(n, 212);
  const std::vector<float> buf0 = random_vector<float>(n, 213);
  for (const SgdCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const bool use_buf = c.momentum != 0.0f;
    DeviceArray<float> by_value(param0), by_value_buf(buf0), read(param0), read_buf(buf0), g(grad);
    DeviceArray<float> lr(std::vector<float>{c.lr});
    sgd_step(gpu(), n, by_value.data(), g.data(), use_buf ? by_value_buf.data() : nullptr, c.lr,
             c.momentum, c.dampening, c.weight_decay, c.nesterov, c.first_step);
    // The value argument is ignored when the scalar is given.
    sgd_step(gpu(), n, read.data(), g.data(), use_buf ? read_buf.data() : nullptr, 123.0f,
             c.momentum, c.dampening, c.weight_decay, c.nesterov, c.first_step, lr.data());
    EXPECT_EQ(read.download(), by_value.download());
    EXPECT_EQ(read_buf.download(), by_value_buf.download());
  }
}

// Many tensors per launch against one launch per tensor on the device (the same bits): more
// slots than one launch takes, empty ones, and tensors spanning many blocks; against the CPU's
// many-tensor step within the parity tolerance.
TEST_F(CudaOptimTest, ManyTensorsEqualOneLaunchEach) {
  std::vector<int64_t> sizes;
  for (int i = 0; i < 97; ++i) sizes.push_back(i % 7 == 0 ? 0 : (i * 37) % 300 + 1);
  sizes[5] = 100000;  // many blocks
  sizes[50] = 4096 + 3;
  for (const SgdCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const bool use_buf = c.momentum != 0.0f;
    std::vector<std::vector<float>> param0, grad, buf0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const auto n = static_cast<size_t>(sizes[i]);
      param0.push_back(random_vector<float>(n, 300 + static_cast<uint32_t>(i)));
      grad.push_back(random_vector<float>(n, 500 + static_cast<uint32_t>(i)));
      buf0.push_back(random_vector<float>(n, 700 + static_cast<uint32_t>(i)));
    }
    std::vector<DeviceArray<float>> single_p, single_b, many_p, many_b, d_grad;
    for (size_t i = 0; i < sizes.size(); ++i) {
      single_p.emplace_back(param0[i]);
      single_b.emplace_back(buf0[i]);
      many_p.emplace_back(param0[i]);
      many_b.emplace_back(buf0[i]);
      d_grad.emplace_back(grad[i]);
    }
    std::vector<SgdSlot<float>> slots(sizes.size()), cpu_slots(sizes.size());
    std::vector<std::vector<float>> cpu_p = param0, cpu_b = buf0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const bool first = c.first_step || i % 2 == 0;
      sgd_step(gpu(), sizes[i], single_p[i].data(), d_grad[i].data(),
               use_buf ? single_b[i].data() : nullptr, c.lr, c.momentum, c.dampening,
               c.weight_decay, c.nesterov, first);
      slots[i] = {sizes[i], many_p[i].data(), d_grad[i].data(),
                  use_buf ? many_b[i].data() : nullptr, first};
      cpu_slots[i] = {sizes[i], cpu_p[i].data(), grad[i].data(),
                      use_buf ? cpu_b[i].data() : nullptr, first};
    }
    sgd_step_many(gpu(), slots.data(), static_cast<int64_t>(slots.size()), c.lr, c.momentum,
                  c.dampening, c.weight_decay, c.nesterov);
    sgd_step_many(cpu, cpu_slots.data(), static_cast<int64_t>(cpu_slots.size()), c.lr, c.momentum,
                  c.dampening, c.weight_decay, c.nesterov);
    for (size_t i = 0; i < sizes.size(); ++i) {
      SCOPED_TRACE("slot " + std::to_string(i));
      EXPECT_EQ(many_p[i].download(), single_p[i].download());
      EXPECT_EQ(many_b[i].download(), single_b[i].download());
      EXPECT_TRUE(all_close(many_p[i].download(), cpu_p[i], kParityF32Rel, kParityF32Abs));
    }
  }
}

TEST_F(CudaOptimTest, MomentumWithoutBufferThrows) {
  DeviceArray<float> d(std::vector<float>(4, 1.0f));
  EXPECT_THROW(
      sgd_step(gpu(), 4, d.data(), d.data(), nullptr, 0.1f, 0.9f, 0.0f, 0.0f, false, false),
      std::invalid_argument);
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaOptimTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
