// Helpers of the engine-level CPU-vs-CUDA parity test (cuda_ops_test.cpp): seeded inputs, the
// comparison with the parity tolerances, and running one op forward and backward on both devices.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "tests/test_util.h"
#include "tests/tolerances.h"

namespace retort::test {

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline const Device kGpu = Device::cuda(0);
inline constexpr uint64_t kUpstreamSeed = 1234;

// --- inputs and comparisons ------------------------------------------------------------------

// Joins the pieces of a sub-case's name. (Streams rather than string +: GCC 12 gives false
// -Wrestrict warnings on "literal" + std::string at -O2.)
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

// A seeded f32 CPU leaf, uniform in (low, high].
inline Tensor uniform(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0,
               bool requires_grad = true) {
  Generator gen(seed);
  Tensor t = Tensor::rand(shape, gen, low, high);
  t.set_requires_grad(requires_grad);
  return t;
}

// The same, never requiring grad (running statistics, teacher logits, optimiser state).
inline Tensor constant(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0) {
  return uniform(shape, seed, low, high, false);
}

inline Tensor labels_for(int64_t rows, int64_t classes) {
  std::vector<int64_t> labels(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) labels[static_cast<size_t>(i)] = (i * 7 + 3) % classes;
  return Tensor::from_vector(labels, {rows});
}

// `gpu` is an f32 tensor on cuda:0 equal to the f32 CPU tensor `cpu` within the parity tolerance.
inline ::testing::AssertionResult matches_cpu(const Tensor& gpu, const Tensor& cpu) {
  if (!gpu.defined() || !cpu.defined()) {
    return ::testing::AssertionFailure()
           << "undefined tensor: cuda " << gpu.str() << ", cpu " << cpu.str();
  }
  if (gpu.device() != kGpu || gpu.dtype() != DType::f32 || gpu.shape() != cpu.shape()) {
    return ::testing::AssertionFailure()
           << "cuda result " << gpu.str() << " for cpu result " << cpu.str();
  }
  return all_close(gpu.to_vector<float>(), cpu.to_vector<float>(), kParityF32Rel, kParityF32Abs);
}

// Element-wise identity of the bits (copies, fills, integer results, promised bit-exact kernels).
template <typename T>
::testing::AssertionResult identical(const std::vector<T>& actual, const std::vector<T>& expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected size " << expected.size();
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::memcmp(&actual[i], &expected[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure() << "[" << i << "] " << +actual[i] << " vs expected "
                                           << +expected[i] << " (bits differ)";
    }
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
::testing::AssertionResult identical_to_cpu(const Tensor& gpu, const Tensor& cpu) {
  if (gpu.device() != kGpu || gpu.dtype() != cpu.dtype() || gpu.shape() != cpu.shape()) {
    return ::testing::AssertionFailure()
           << "cuda result " << gpu.str() << " for cpu result " << cpu.str();
  }
  return identical(gpu.to_vector<T>(), cpu.to_vector<T>());
}

// Runs `body`, turning an exception into a failure that names the sub-case, so one throwing
// sub-case does not hide the others of its op.
inline void guarded(const std::string& what, const std::function<void()>& body) {
  SCOPED_TRACE(what);
  try {
    body();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " threw: " << e.what();
  }
}

// Builds a tensor once on cuda:0 and once on the CPU and expects the same bits (copies, fills).
template <typename T>
void expect_identical(const std::string& what, const std::function<Tensor(Device)>& make) {
  guarded(what, [&] {
    const Tensor gpu = make(kGpu);
    EXPECT_TRUE(identical_to_cpu<T>(gpu, make(Device::cpu())));
  });
}

// The CPU inputs of one parity run and their copies on cuda:0, after the run.
struct ParityRun {
  std::vector<Tensor> cpu, gpu;
};

// Runs f on the CPU inputs and on copies of them on cuda:0 (made before either run, so inputs
// an op updates in place start equal) and compares the outputs. When the output needs grad, it
// backpropagates sum(out * g) for one random g, the same on both devices, and compares the
// gradient of every input that requires grad. Returns both input lists for in-place checks.
inline ParityRun expect_parity(const std::string& what, const TensorFn& f,
                        const std::vector<Tensor>& cpu_inputs) {
  ParityRun run{cpu_inputs, {}};
  guarded(what, [&] {
    for (const Tensor& t : run.cpu) {
      if (t.requires_grad()) t.set_grad(Tensor());
      Tensor copy = t.to(kGpu);
      if (t.requires_grad()) copy.set_requires_grad(true);
      run.gpu.push_back(copy);
    }
    const Tensor out_cpu = f(run.cpu);
    const Tensor out_gpu = f(run.gpu);
    EXPECT_TRUE(matches_cpu(out_gpu, out_cpu)) << "forward";
    if (!out_cpu.requires_grad()) return;
    ASSERT_TRUE(out_gpu.requires_grad()) << "the CUDA output recorded no backward";
    Generator gen(kUpstreamSeed);
    const Tensor g_cpu = Tensor::rand(out_cpu.shape(), gen, -1.0, 1.0);
    sum(mul(out_cpu, g_cpu)).backward();
    sum(mul(out_gpu, g_cpu.to(kGpu))).backward();
    for (size_t k = 0; k < run.cpu.size(); ++k) {
      if (!run.cpu[k].requires_grad()) continue;
      EXPECT_TRUE(matches_cpu(run.gpu[k].grad(), run.cpu[k].grad())) << "gradient of input " << k;
    }
  });
  return run;
}

}  // namespace retort::test
