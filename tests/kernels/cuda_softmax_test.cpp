// CPU-vs-CUDA parity of (log-)softmax with temperature, fwd and bwd, warp and block rows.
#include "kernels/softmax.h"

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
using test::poisoned_output;
using test::random_vector;

using CudaSoftmaxTest = CudaParityTest;

struct RowsCols {
  int64_t rows, cols;
};
// CIFAR-10/100 logits, single columns, row counts that do not fill a block, and rows on both
// sides of the warp/block switch (1024 columns).
const RowsCols kShapes[] = {{1, 1},    {3, 7},    {64, 10},  {64, 100},  {5, 1000},
                            {9, 1024}, {3, 1025}, {2, 5000}, {1000, 33}, {1, 100}};

TEST_F(CudaSoftmaxTest, ForwardAndBackwardMatchCpu) {
  for (const RowsCols& shape : kShapes) {
    for (float temperature : {1.0f, 4.0f}) {
      for (bool log : {false, true}) {
        SCOPED_TRACE(std::to_string(shape.rows) + "x" + std::to_string(shape.cols) + " T " +
                     std::to_string(temperature) + (log ? " log_softmax" : " softmax"));
        const size_t n = static_cast<size_t>(shape.rows * shape.cols);
        const std::vector<float> x = random_vector<float>(n, 161, -10.0f, 10.0f);
        const std::vector<float> grad_y = random_vector<float>(n, 162);
        std::vector<float> y(n), grad_x(n);
        softmax_forward(cpu, shape.rows, shape.cols, temperature, log, x.data(), y.data());
        softmax_backward(cpu, shape.rows, shape.cols, temperature, log, y.data(), grad_y.data(),
                         grad_x.data());

        DeviceArray<float> d_x(x), d_grad_y(grad_y);
        DeviceArray<float> d_y = poisoned_output(n), d_grad_x = poisoned_output(n);
        softmax_forward(gpu(), shape.rows, shape.cols, temperature, log, d_x.data(), d_y.data());
        // Backward from the CPU's forward output, so the two backwards see the same input.
        DeviceArray<float> d_y_cpu(y);
        softmax_backward(gpu(), shape.rows, shape.cols, temperature, log, d_y_cpu.data(),
                         d_grad_y.data(), d_grad_x.data());
        EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs)) << "y";
        EXPECT_TRUE(all_close(d_grad_x.download(), grad_x, kParityF32Rel, kParityF32Abs))
            << "grad_x";
      }
    }
  }
}

TEST_F(CudaSoftmaxTest, ExtremeLogitsStayFinite) {
  const std::vector<float> x = {1000.0f, -1000.0f, 0.0f, 88.0f, -88.0f, 1000.0f};
  std::vector<float> y(x.size());
  softmax_forward(cpu, 2, 3, 1.0f, true, x.data(), y.data());
  DeviceArray<float> d_x(x), d_y = poisoned_output(x.size());
  softmax_forward(gpu(), 2, 3, 1.0f, true, d_x.data(), d_y.data());
  EXPECT_TRUE(all_close(d_y.download(), y, kParityF32Rel, kParityF32Abs));
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaSoftmaxTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
