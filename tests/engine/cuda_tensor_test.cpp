// Tensor copies and conversions on a CUDA device against the CPU: integer strided views moved as
// 32-bit words, and i64/u8 -> f32 conversion done on the device. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "tests/cuda_test.h"

namespace retort {
namespace {

using CudaTensor = test::CudaTest;

template <typename T>
std::vector<T> iota_values(size_t n, T start) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<T>(start + static_cast<T>(i * 7));
  return v;
}

TEST_F(CudaTensor, StridedIntegerViewsCopyBitForBit) {
  const Tensor i64 = Tensor::from_vector(iota_values<int64_t>(60, int64_t{1} << 40), {3, 4, 5});
  const Tensor i32 = Tensor::from_vector(iota_values<int32_t>(60, -100), {3, 4, 5});
  for (const Tensor& host : {i64, i32}) {
    const Tensor device = host.to(Device::cuda());
    const Tensor view_h = host.transpose(0, 2).narrow(1, 1, 2);
    const Tensor view_d = device.transpose(0, 2).narrow(1, 1, 2);
    const Tensor back = view_d.contiguous().to(Device::cpu());
    if (host.dtype() == DType::i64) {
      EXPECT_EQ(back.to_vector<int64_t>(), view_h.contiguous().to_vector<int64_t>());
    } else {
      EXPECT_EQ(back.to_vector<int32_t>(), view_h.contiguous().to_vector<int32_t>());
    }
    // Writing into a strided view on the device.
    Tensor target_d = Tensor::zeros({3, 4, 5}, host.dtype(), Device::cuda());
    Tensor target_h = Tensor::zeros({3, 4, 5}, host.dtype());
    Tensor slot_d = target_d.narrow(2, 1, 3), slot_h = target_h.narrow(2, 1, 3);
    slot_d.copy_(host.narrow(2, 0, 3));
    slot_h.copy_(host.narrow(2, 0, 3));
    if (host.dtype() == DType::i64) {
      EXPECT_EQ(target_d.to_vector<int64_t>(), target_h.to_vector<int64_t>());
    } else {
      EXPECT_EQ(target_d.to_vector<int32_t>(), target_h.to_vector<int32_t>());
    }
  }
}

TEST_F(CudaTensor, IntegerToFloatConversionOnTheDeviceMatchesTheCpu) {
  std::vector<int64_t> labels = {0, 1, 9, -3, (int64_t{1} << 24) + 1, int64_t{1} << 40};
  std::vector<uint8_t> pixels = {0, 1, 127, 128, 254, 255};
  const Tensor l = Tensor::from_vector(labels, {6}), p = Tensor::from_vector(pixels, {2, 3});
  EXPECT_EQ(l.to(Device::cuda()).to(DType::f32).to_vector<float>(),
            l.to(DType::f32).to_vector<float>());
  EXPECT_EQ(p.to(Device::cuda()).to(DType::f32).to_vector<float>(),
            p.to(DType::f32).to_vector<float>());
}

}  // namespace
}  // namespace retort
