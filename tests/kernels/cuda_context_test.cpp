// CUDA plumbing: check macros (run without a GPU), RAII owners, context, workspace, launches.
#include <gtest/gtest.h>

#if RETORT_WITH_CUDA

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/conv_algo_cache.h"
#include "kernels/cuda/handles.h"
#include "kernels/elementwise.h"
#include "tests/kernels/cuda_test_util.h"

namespace retort::kernels {
namespace {

using test::CudaParityTest;
using test::DeviceArray;

// Returns the message of the std::runtime_error that `f` throws ("" if none).
template <typename F>
std::string thrown_message(F f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

cudaError_t failing_runtime_call() {
  return cudaErrorInvalidValue;
}

TEST(CudaCheckTest, CudaErrorNamesExpressionErrorAndLocation) {
  const std::string message = thrown_message([] { RETORT_CUDA_CHECK(failing_runtime_call()); });
  EXPECT_NE(message.find("failing_runtime_call()"), std::string::npos) << message;
  EXPECT_NE(message.find("cudaErrorInvalidValue"), std::string::npos) << message;
  EXPECT_NE(message.find("cuda_context_test.cpp:"), std::string::npos) << message;
}

TEST(CudaCheckTest, SuccessDoesNotThrow) {
  EXPECT_NO_THROW(RETORT_CUDA_CHECK(cudaSuccess));
  EXPECT_NO_THROW(RETORT_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
  EXPECT_NO_THROW(RETORT_CUDNN_CHECK(CUDNN_STATUS_SUCCESS));
}

TEST(CudaCheckTest, CublasErrorNamesStatus) {
  const std::string message =
      thrown_message([] { RETORT_CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE); });
  EXPECT_NE(message.find("cuBLAS"), std::string::npos) << message;
  EXPECT_NE(message.find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << message;
  EXPECT_NE(message.find("cuda_context_test.cpp:"), std::string::npos) << message;
}

TEST(CudaCheckTest, CudnnErrorNamesStatusAndExpression) {
  const std::string message = thrown_message([] { RETORT_CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM); });
  EXPECT_NE(message.find("cuDNN"), std::string::npos) << message;
  EXPECT_NE(message.find("CUDNN_STATUS_BAD_PARAM"), std::string::npos) << message;
  EXPECT_NE(message.find("cuda_context_test.cpp:"), std::string::npos) << message;
}

TEST(CudaCheckTest, SyncSwitchCanBeFlipped) {
  bool& sync = cuda_check::cuda_sync_after_launch();
  const bool before = sync;
  sync = !before;
  EXPECT_EQ(cuda_check::cuda_sync_after_launch(), !before);
  sync = before;
}

TEST(CudaDeviceTest, AvailabilityComesWithAReason) {
  std::string reason = "unset";
  const bool available = cuda_device_available(&reason);
  if (available) {
    EXPECT_TRUE(reason.empty());
  } else {
    EXPECT_FALSE(reason.empty());
  }
}

using CudaContextTest = CudaParityTest;

TEST_F(CudaContextTest, OwnerBindsHandlesToItsStream) {
  const CudaContext& ctx = gpu();
  ASSERT_NE(ctx.stream, nullptr);
  cudaStream_t cublas_stream = nullptr, cudnn_stream = nullptr;
  RETORT_CUBLAS_CHECK(cublasGetStream(ctx.cublas, &cublas_stream));
  RETORT_CUDNN_CHECK(cudnnGetStream(ctx.cudnn, &cudnn_stream));
  EXPECT_EQ(cublas_stream, ctx.stream);
  EXPECT_EQ(cudnn_stream, ctx.stream);
  EXPECT_NE(ctx.workspace, nullptr);
  EXPECT_NE(ctx.conv_algos, nullptr);
}

TEST_F(CudaContextTest, MovedOwnerKeepsItsContextValid) {
  CudaContextOwner first;
  const cudaStream_t stream = first.context().stream;
  CudaContextOwner second(std::move(first));
  EXPECT_EQ(second.context().stream, stream);
  EXPECT_EQ(first.context().stream, nullptr);
  DeviceArray<float> d(std::vector<float>(5, 0.0f));
  fill_value(second.context(), 5, 2.0f, d.data());
  EXPECT_EQ(d.download(), std::vector<float>(5, 2.0f));
}

TEST_F(CudaContextTest, WorkspaceGrowsAndKeepsItsBuffer) {
  CudaWorkspace& workspace = *gpu().workspace;
  void* small = workspace.get(16);
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(workspace.get(8), small);
  void* large = workspace.get(size_t{8} << 20);
  ASSERT_NE(large, nullptr);
  RETORT_CUDA_CHECK(cudaMemsetAsync(large, 0, size_t{8} << 20, gpu().stream));
  owner().synchronize();
}

TEST_F(CudaContextTest, DeviceBufferRoundTrip) {
  const std::vector<float> values = {1.0f, -2.0f, 3.5f};
  const DeviceBuffer buffer = DeviceBuffer::from_host(values);
  EXPECT_EQ(buffer.bytes(), values.size() * sizeof(float));
  EXPECT_EQ(buffer.to_host<float>(), values);
  DeviceBuffer moved = DeviceBuffer(16);
  moved = DeviceBuffer::from_host(values);
  EXPECT_EQ(moved.to_host<float>(), values);
}

TEST_F(CudaContextTest, EventsTimeTheStream) {
  CudaEvent start, stop;
  start.record(gpu().stream);
  DeviceArray<float> d(1 << 20);
  fill_value(gpu(), 1 << 20, 1.0f, d.data());
  stop.record(gpu().stream);
  stop.synchronize();
  EXPECT_GE(stop.elapsed_ms_since(start), 0.0f);
}

TEST_F(CudaContextTest, DescriptorsAreCreatedAndSet) {
  TensorDescriptor x;
  FilterDescriptor w;
  ConvolutionDescriptor conv;
  x.set_nchw(2, 3, 8, 8);
  w.set_kcrs(4, 3, 3, 3);
  conv.set_2d(1, 1, 1, 1, 1, CUDNN_FMA_MATH);
  int dims[4] = {};
  RETORT_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(conv.get(), x.get(), w.get(), 4, dims));
  EXPECT_EQ(dims[0], 2);
  EXPECT_EQ(dims[1], 4);
  EXPECT_EQ(dims[2], 8);
  EXPECT_EQ(dims[3], 8);
  EXPECT_THROW(x.set_nchw(-1, 3, 8, 8), std::runtime_error);
}

TEST_F(CudaContextTest, LaunchCheckReportsAPendingError) {
  // A failed runtime call leaves its error for cudaGetLastError, as a failed launch would.
  void* ptr = nullptr;
  ASSERT_NE(cudaMalloc(&ptr, ~size_t{0} >> 2), cudaSuccess);
  EXPECT_THROW(RETORT_CUDA_CHECK_LAUNCH(gpu().stream), std::runtime_error);
  EXPECT_NO_THROW(RETORT_CUDA_CHECK_LAUNCH(gpu().stream));  // the error was consumed
}

TEST_F(CudaContextTest, SyncAfterLaunchModeStillRuns) {
  bool& sync = cuda_check::cuda_sync_after_launch();
  const bool before = sync;
  sync = true;
  DeviceArray<float> d(1000);
  EXPECT_NO_THROW(fill_value(gpu(), 1000, 3.0f, d.data()));
  EXPECT_NO_THROW(RETORT_CUDA_CHECK_LAUNCH());
  sync = before;
  EXPECT_EQ(d.download(), std::vector<float>(1000, 3.0f));
}

}  // namespace
}  // namespace retort::kernels

#else  // RETORT_WITH_CUDA

TEST(CudaContextTest, NotBuilt) {
  GTEST_SKIP() << "CUDA was not built (RETORT_WITH_CUDA=0)";
}

#endif  // RETORT_WITH_CUDA
