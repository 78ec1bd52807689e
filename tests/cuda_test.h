// For engine-level tests that need a CUDA GPU: the skip reason and a scoped math setting.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "engine/device.h"

namespace retort::test {

// Why no CUDA GPU can run a test here, or "" when one can.
inline std::string cuda_unavailable() {
  if (!cuda_compiled()) return "this retort was built without CUDA (RETORT_CUDA=OFF)";
  if (cuda_device_count() == 0) return "no CUDA GPU is present";
  return "";
}

// Sets the CUDA math options for its lifetime, then restores the previous ones.
class ScopedCudaMath {
 public:
  explicit ScopedCudaMath(const CudaMathOptions& options) : previous_(cuda_math()) {
    set_cuda_math(options);
  }
  ~ScopedCudaMath() { set_cuda_math(previous_); }
  ScopedCudaMath(const ScopedCudaMath&) = delete;
  ScopedCudaMath& operator=(const ScopedCudaMath&) = delete;

 private:
  CudaMathOptions previous_;
};

// A fixture that skips with the reason where no GPU can run the test, and otherwise runs it in
// strict fp32 with pinned cuDNN algorithms: the parity tolerances assume fp32, and the bit-for-bit
// tests need the same algorithm in both runs.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = cuda_unavailable(); !why.empty()) GTEST_SKIP() << why;
    math_.emplace(CudaMathOptions{.allow_tf32 = false, .deterministic = true});
  }
  void TearDown() override { math_.reset(); }

 private:
  std::optional<ScopedCudaMath> math_;
};

}  // namespace retort::test
