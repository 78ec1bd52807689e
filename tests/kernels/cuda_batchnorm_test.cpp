// CPU-vs-CUDA parity of batch norm (train/eval, forward/backward, stats, fused ReLU, determinism).
#include "kernels/batchnorm.h"

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <sstream>
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

using CudaBatchNormTest = CudaParityTest;

// Batch 1, BatchNorm1d (spatial 1), spatial sizes that do and do not allow float4, and one large
// enough (32 * 1024 values per channel) to split each channel's sum into chunks.
const BatchNormShape kShapes[] = {
    {4, 3, 25}, {1, 5, 49}, {8, 16, 1}, {2, 4, 64}, {3, 7, 9}, {32, 8, 1024}, {2, 1, 3},
};

std::string describe(const BatchNormShape& s) {
  std::ostringstream out;
  out << "(" << s.batch << ", " << s.channels << ", " << s.spatial << ")";
  return out.str();
}

struct BatchNormData {
  std::vector<float> x, grad_y, gamma, beta, running_mean, running_var;
};

BatchNormData make_data(const BatchNormShape& s, uint32_t seed) {
  const size_t n = static_cast<size_t>(s.batch * s.channels * s.spatial);
  const size_t c = static_cast<size_t>(s.channels);
  // x has a mean far from zero, which a naive E[x^2] - E[x]^2 would handle badly.
  return {random_vector<float>(n, seed, 2.0f, 6.0f),
          random_vector<float>(n, seed + 1),
          random_vector<float>(c, seed + 2, 0.5f, 1.5f),
          random_vector<float>(c, seed + 3),
          random_vector<float>(c, seed + 4),
          random_vector<float>(c, seed + 5, 0.5f, 2.0f)};
}

constexpr float kMomentum = 0.1f, kEps = 1e-5f;

void check_training(const CudaContext& gpu, const CpuContext& cpu, const BatchNormShape& s) {
  const BatchNormData d = make_data(s, 101);
  const size_t n = d.x.size(), c = d.gamma.size();
  std::vector<float> y(n), mean(c), invstd(c), grad_x(n), grad_gamma(c), grad_beta(c);
  std::vector<float> running_mean = d.running_mean, running_var = d.running_var;
  batchnorm_forward_train(cpu, s, d.x.data(), d.gamma.data(), d.beta.data(), kMomentum, kEps,
                          running_mean.data(), running_var.data(), y.data(), mean.data(),
                          invstd.data());
  batchnorm_backward_train(cpu, s, d.x.data(), d.grad_y.data(), d.gamma.data(), mean.data(),
                           invstd.data(), grad_x.data(), grad_gamma.data(), grad_beta.data());

  DeviceArray<float> d_x(d.x), d_grad_y(d.grad_y), d_gamma(d.gamma), d_beta(d.beta);
  DeviceArray<float> d_running_mean(d.running_mean), d_running_var(d.running_var);
  DeviceArray<float> d_y = poisoned_output(n), d_mean = poisoned_output(c);
  DeviceArray<float> d_invstd = poisoned_output(c), d_grad_x = poisoned_output(n);
  DeviceArray<float> d_grad_gamma = poisoned_output(c), d_grad_beta = poisoned_output(c);
  batchnorm_forward_train(gpu, s, d_x.data(), d_gamma.data(), d_beta.data(), kMomentum, kEps,
                          d_running_mean.data(), d_running_var.data(), d_y.data(), d_mean.data(),
                          d_invstd.data());
  batchnorm_backward_train(gpu, s, d_x.data(), d_grad_y.data(), d_gamma.data(), d_mean.data(),
                           d_invstd.data(), d_grad_x.data(), d_grad_gamma.data(),
                           d_grad_beta.data());
  EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs)) << "y";
  EXPECT_TRUE(all_close(d_mean.download(), mean, kParityF32Rel, kParityF32Abs)) << "save_mean";
  EXPECT_TRUE(all_close(d_invstd.download(), invstd, kParityF32Rel, kParityF32Abs))
      << "save_invstd";
  EXPECT_TRUE(all_close(d_running_mean.download(), running_mean, kParityF32Rel, kParityF32Abs))
      << "running_mean";
  EXPECT_TRUE(all_close(d_running_var.download(), running_var, kParityF32Rel, kParityF32Abs))
      << "running_var";
  EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs)) << "grad_x";
  EXPECT_TRUE(all_close(d_grad_gamma.download(), grad_gamma, kParityF32Rel, kParityF32Abs))
      << "grad_gamma";
  EXPECT_TRUE(all_close(d_grad_beta.download(), grad_beta, kParityF32Rel, kParityF32Abs))
      << "grad_beta";
}

TEST_F(CudaBatchNormTest, TrainingForwardAndBackwardMatchCpu) {
  for (const BatchNormShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    check_training(gpu(), cpu, s);
  }
}

TEST_F(CudaBatchNormTest, TrainingWithoutWorkspaceMatchesCpu) {
  mutable_gpu().workspace = nullptr;  // one block per channel, no chunk partials
  for (const BatchNormShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    check_training(gpu(), cpu, s);
  }
}

TEST_F(CudaBatchNormTest, EvaluationForwardAndBackwardMatchCpu) {
  for (const BatchNormShape& s : kShapes) {
    SCOPED_TRACE(describe(s));
    const BatchNormData d = make_data(s, 111);
    const size_t n = d.x.size(), c = d.gamma.size();
    std::vector<float> y(n), grad_x(n), grad_gamma(c), grad_beta(c);
    batchnorm_forward_eval(cpu, s, d.x.data(), d.gamma.data(), d.beta.data(), d.running_mean.data(),
                           d.running_var.data(), kEps, y.data());
    batchnorm_backward_eval(cpu, s, d.x.data(), d.grad_y.data(), d.gamma.data(),
                            d.running_mean.data(), d.running_var.data(), kEps, grad_x.data(),
                            grad_gamma.data(), grad_beta.data());

    DeviceArray<float> d_x(d.x), d_grad_y(d.grad_y), d_gamma(d.gamma), d_beta(d.beta);
    DeviceArray<float> d_running_mean(d.running_mean), d_running_var(d.running_var);
    DeviceArray<float> d_y = poisoned_output(n), d_grad_x = poisoned_output(n);
    DeviceArray<float> d_grad_gamma = poisoned_output(c), d_grad_beta = poisoned_output(c);
    batchnorm_forward_eval(gpu(), s, d_x.data(), d_gamma.data(), d_beta.data(),
                           d_running_mean.data(), d_running_var.data(), kEps, d_y.data());
    batchnorm_backward_eval(gpu(), s, d_x.data(), d_grad_y.data(), d_gamma.data(),
                            d_running_mean.data(), d_running_var.data(), kEps, d_grad_x.data(),
                            d_grad_gamma.data(), d_grad_beta.data());
    EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs)) << "y";
    EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs)) << "grad_x";
    EXPECT_TRUE(all_close(d_grad_gamma.download(), grad_gamma, kParityF32Rel, kParityF32Abs))
        << "grad_gamma";
    EXPECT_TRUE(all_close(d_grad_beta.download(), grad_beta, kParityF32Rel, kParityF32Abs))
        << "grad_beta";
  }
}

// The fused ReLU, train and eval. Both backwards take the CPU's output as the ReLU mask: an
// output within rounding of 0 could take the other sign on the device, and a mask that differs
// there is a correct result that no tolerance would accept.
void check_fused_relu(const CudaContext& gpu, const CpuContext& cpu, const BatchNormShape& s,
                      bool training) {
  const BatchNormData d = make_data(s, 131);
  const size_t n = d.x.size(), c = d.gamma.size();
  std::vector<float> y(n), mean(c), invstd(c), grad_x(n), grad_gamma(c), grad_beta(c);
  std::vector<float> running_mean = d.running_mean, running_var = d.running_var;
  DeviceArray<float> d_x(d.x), d_grad_y(d.grad_y), d_gamma(d.gamma), d_beta(d.beta);
  DeviceArray<float> d_running_mean(d.running_mean), d_running_var(d.running_var);
  DeviceArray<float> d_y = poisoned_output(n), d_mean = poisoned_output(c);
  DeviceArray<float> d_invstd = poisoned_output(c), d_grad_x = poisoned_output(n);
  DeviceArray<float> d_grad_gamma = poisoned_output(c), d_grad_beta = poisoned_output(c);
  if (training) {
    batchnorm_forward_train(cpu, s, d.x.data(), d.gamma.data(), d.beta.data(), kMomentum, kEps,
                            running_mean.data(), running_var.data(), y.data(), mean.data(),
                            invstd.data(), true);
    batchnorm_backward_train(cpu, s, d.x.data(), d.grad_y.data(), d.gamma.data(), mean.data(),
                             invstd.data(), grad_x.data(), grad_gamma.data(), grad_beta.data(),
                             y.data());
    batchnorm_forward_train(gpu, s, d_x.data(), d_gamma.data(), d_beta.data(), kMomentum, kEps,
                            d_running_mean.data(), d_running_var.data(), d_y.data(), d_mean.data(),
                            d_invstd.data(), true);
  } else {
    batchnorm_forward_eval(cpu, s, d.x.data(), d.gamma.data(), d.beta.data(), d.running_mean.data(),
                           d.running_var.data(), kEps, y.data(), true);
    batchnorm_backward_eval(cpu, s, d.x.data(), d.grad_y.data(), d.gamma.data(),
                            d.running_mean.data(), d.running_var.data(), kEps, grad_x.data(),
                            grad_gamma.data(), grad_beta.data(), y.data());
    batchnorm_forward_eval(gpu, s, d_x.data(), d_gamma.data(), d_beta.data(), d_running_mean.data(),
                           d_running_var.data(), kEps, d_y.data(), true);
  }
  EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs)) << "y";
  DeviceArray<float> d_mask(y);
  if (training) {
    // The CPU's statistics too, so the backward is compared on equal inputs.
    DeviceArray<float> d_cpu_mean(mean), d_cpu_invstd(invstd);
    batchnorm_backward_train(gpu, s, d_x.data(), d_grad_y.data(), d_gamma.data(), d_cpu_mean.data(),
                             d_cpu_invstd.data(), d_grad_x.data(), d_grad_gamma.data(),
                             d_grad_beta.data(), d_mask.data());
    EXPECT_TRUE(all_close(d_running_var.download(), running_var, kParityF32Rel, kParityF32Abs))
        << "running_var";
  } else {
    batchnorm_backward_eval(gpu, s, d_x.data(), d_grad_y.data(), d_gamma.data(),
                            d_running_mean.data(), d_running_var.data(), kEps, d_grad_x.data(),
                            d_grad_gamma.data(), d_grad_beta.data(), d_mask.data());
  }
  EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs)) << "grad_x";
  EXPECT_TRUE(all_close(d_grad_gamma.download(), grad_gamma, kParityF32Rel, kParityF32Abs))
      << "grad_gamma";
  EXPECT_TRUE(all_close(d_grad_beta.download(), grad_beta, kParityF32Rel, kParityF32Abs))
      << "grad_beta";
}

TEST_F(CudaBatchNormTest, FusedReluMatchesCpu) {
  for (const BatchNormShape& s : kShapes) {
    for (bool training : {true, false}) {
      SCOPED_TRACE(describe(s) + (training ? " train" : " eval"));
      check_fused_relu(gpu(), cpu, s, training);
    }
  }
}

TEST_F(CudaBatchNormTest, RepeatedTrainingStepsAreBitwiseEqual) {
  const BatchNormShape s = kShapes[5];
  const BatchNormData d = make_data(s, 121);
  const size_t n = d.x.size(), c = d.gamma.size();
  DeviceArray<float> d_x(d.x), d_grad_y(d.grad_y), d_gamma(d.gamma), d_beta(d.beta);
  std::vector<float> results[2];
  for (std::vector<float>& result : results) {
    DeviceArray<float> d_running_mean(d.running_mean), d_running_var(d.running_var);
    DeviceArray<float> d_y(n), d_mean(c), d_invstd(c), d_grad_x(n), d_grad_gamma(c), d_grad_beta(c);
    batchnorm_forward_train(gpu(), s, d_x.data(), d_gamma.data(), d_beta.data(), kMomentum, kEps,
                            d_running_mean.data(), d_running_var.data(), d_y.data(), d_mean.data(),
                            d_invstd.data());
    batchnorm_backward_train(gpu(), s, d_x.data(), d_grad_y.data(), d_gamma.data(), d_mean.data(),
                             d_invstd.data(), d_grad_x.data(), d_grad_gamma.data(),
                             d_grad_beta.data());
    for (const DeviceArray<float>* part :
         {&d_y, &d_running_var, &d_grad_x, &d_grad_gamma, &d_grad_beta}) {
      const std::vector<float> values = part->download();
      result.insert(result.end(), values.begin(), values.end());
    }
  }
  EXPECT_TRUE(bitwise_equal(results[0], results[1]));
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaBatchNormTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
