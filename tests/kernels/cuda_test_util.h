// Fixture and helpers for the CPU-vs-CUDA parity tests: device detection, uploads, downloads.
#pragma once

#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/handles.h"

namespace retort::test {

// A device array with an optional leading gap of `offset` elements, so that a test can hand a
// kernel a pointer that is not 16-byte aligned (offset 1) and exercise its scalar path.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t count, size_t offset = 0)
      : buffer_((count + offset) * sizeof(T)), count_(count), offset_(offset) {}
  // Uploads `values` (offset elements of padding first).
  explicit DeviceArray(const std::vector<T>& values, size_t offset = 0)
      : DeviceArray(values.size(), offset) {
    upload(values);
  }
  void upload(const std::vector<T>& values) {
    std::vector<T> padded(offset_, T{});
    padded.insert(padded.end(), values.begin(), values.end());
    if (!padded.empty()) {
      RETORT_CUDA_CHECK(
          cudaMemcpy(buffer_.data(), padded.data(), padded.size() * sizeof(T), cudaMemcpyDefault));
      // A pageable-memory copy may return before it lands, and the contexts' streams do not
      // wait for the legacy stream: finish it before a kernel reads the array.
      RETORT_CUDA_CHECK(cudaDeviceSynchronize());
    }
  }
  // Synchronises the device, then copies the `count` elements back.
  std::vector<T> download() const {
    const std::vector<T> all = buffer_.to_host<T>(count_ + offset_);
    return std::vector<T>(all.begin() + static_cast<std::ptrdiff_t>(offset_), all.end());
  }
  T* data() const { return buffer_.as<T>() + offset_; }
  size_t size() const { return count_; }

 private:
  kernels::DeviceBuffer buffer_;
  size_t count_, offset_;
};

// An output array pre-filled with NaN, so an element a kernel forgets to write fails the check.
inline DeviceArray<float> poisoned_output(size_t count, size_t offset = 0) {
  return DeviceArray<float>(std::vector<float>(count, std::numeric_limits<float>::quiet_NaN()),
                            offset);
}

// CUDA tests run against a fresh stream + handles + workspace + algorithm cache, TF32 off (the
// parity tolerances assume full fp32), and skip with the runtime's reason when no device exists.
class CudaParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    if (!kernels::cuda_device_available(&reason)) {
      GTEST_SKIP() << "no CUDA device: " << reason;
    }
    owner_ = std::make_unique<kernels::CudaContextOwner>();
    owner_->mutable_context().allow_tf32 = false;
  }

  const kernels::CudaContext& gpu() const { return owner_->context(); }
  kernels::CudaContext& mutable_gpu() { return owner_->mutable_context(); }
  kernels::CudaContextOwner& owner() { return *owner_; }
  const kernels::CpuContext cpu{};

 private:
  std::unique_ptr<kernels::CudaContextOwner> owner_;
};

// Bitwise equality (NaN payloads included), for determinism checks.
inline ::testing::AssertionResult bitwise_equal(const std::vector<float>& a,
                                                const std::vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < a.size(); ++i) {
    uint32_t x, y;
    std::memcpy(&x, &a[i], sizeof(x));
    std::memcpy(&y, &b[i], sizeof(y));
    if (x != y) {
      return ::testing::AssertionFailure()
             << "[" << i << "] " << a[i] << " vs " << b[i] << " (bits differ)";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace retort::test

#endif  // RETORT_WITH_CUDA
